package exemplars

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	promtsdb "github.com/prometheus/prometheus/tsdb"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/store"
)

const ms = uint64(time.Millisecond)

// checkoutTrace is frontend → checkout → payments, scaled by f (ms):
//
//	frontend  server GET /checkout  [0, 100]  self 10
//	frontend  client POST checkout  [5, 95]   self 4
//	checkout  server POST checkout  [7, 93]   self 6
//	checkout  client POST payments  [10, 90]  self 4
//	payments  server charge         [12, 88]  self 76 (error when failed)
//
// Self time by edge: "" → frontend 10, frontend → checkout 10,
// checkout → payments 80.
func checkoutTrace(id traces.TraceID, start time.Time, f uint64, failed bool) []traces.Span {
	t0 := uint64(start.UnixNano())
	span := func(n byte, parent byte, svc, name string, kind traces.Kind, a, b uint64) traces.Span {
		s := traces.Span{TraceID: id, Service: svc, Name: name, Kind: kind,
			StartUnixNano: t0 + a*f*ms, EndUnixNano: t0 + b*f*ms,
			Resource: []traces.Attr{traces.String(traces.ServiceNameKey, svc)}}
		s.SpanID[7] = n
		if parent != 0 {
			s.ParentSpanID[7] = parent
		}
		return s
	}
	spans := []traces.Span{
		span(1, 0, "frontend", "GET /checkout", traces.KindServer, 0, 100),
		span(2, 1, "frontend", "POST checkout", traces.KindClient, 5, 95),
		span(3, 2, "checkout", "POST checkout", traces.KindServer, 7, 93),
		span(4, 3, "checkout", "POST payments", traces.KindClient, 10, 90),
		span(5, 4, "payments", "charge", traces.KindServer, 12, 88),
	}
	if failed {
		spans[4].StatusCode = traces.StatusError
		spans[3].StatusCode = traces.StatusError
	}
	return spans
}

func traceID(n int) traces.TraceID {
	var id traces.TraceID
	binary.BigEndian.PutUint64(id[:8], 0xabc0000000000000+uint64(n))
	binary.BigEndian.PutUint64(id[8:], 0x1234000000000000+uint64(n))
	return id
}

// fixture is a TSDB with exemplars and a span store.
type fixture struct {
	db     *promtsdb.DB
	spans  *store.Store
	now    time.Time
	series map[string]labels.Labels
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	opts := promtsdb.DefaultOptions()
	opts.EnableExemplarStorage = true
	opts.MaxExemplars = 10000
	db, err := promtsdb.Open(t.TempDir(), nil, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	bucket := func(reporter, le string) labels.Labels {
		return labels.FromStrings("__name__", "istio_request_duration_milliseconds_bucket",
			"reporter", reporter, "destination_service", "checkout", "le", le)
	}
	return &fixture{db: db, spans: st, now: time.Now().Truncate(time.Second),
		series: map[string]labels.Labels{
			"dst-500":  bucket("destination", "500"),
			"dst-5000": bucket("destination", "5000"),
			"src-5000": bucket("source", "5000"),
			"other":    labels.FromStrings("__name__", "other_bucket", "le", "+Inf"),
		}}
}

// exemplar appends a sample of the series at t with an exemplar carrying ls.
func (f *fixture) exemplar(t *testing.T, series string, at time.Time, v float64, ls ...string) {
	t.Helper()
	app := f.db.Appender(context.Background())
	sl := f.series[series]
	ref, err := app.Append(0, sl, at.UnixMilli(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.AppendExemplar(ref, sl, exemplar.Exemplar{Labels: labels.FromStrings(ls...), Value: v, Ts: at.UnixMilli(), HasTs: true}); err != nil {
		t.Fatalf("exemplar %s at %v: %v", series, at, err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

// get serves one request and decodes the envelope.
func get(t *testing.T, h http.Handler, method string, q url.Values) (int, envelope) {
	t.Helper()
	var req *http.Request
	if method == http.MethodPost {
		req = httptest.NewRequest(method, "/api/v1/drilldown", strings.NewReader(q.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, "/api/v1/drilldown?"+q.Encode(), nil)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var env envelope
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
		t.Fatalf("%s: %v %s", q.Encode(), err, rec.Body)
	}
	return rec.Code, env
}

type envelope struct {
	Status    string   `json:"status"`
	ErrorType string   `json:"errorType"`
	Error     string   `json:"error"`
	Data      Response `json:"data"`
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestDrilldown(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	base := f.now.Add(-30 * time.Minute)

	// Traces 1..6 take 100·n ms; trace 6 failed; traces 7 and 8 are not
	// stored. Trace 3's exemplar names it with a 64-bit id.
	short := traces.TraceID{}
	binary.BigEndian.PutUint64(short[8:], 0x463ac35c9f6413ad)
	ids := map[int]traces.TraceID{}
	for n := 1; n <= 8; n++ {
		ids[n] = traceID(n)
	}
	ids[3] = short
	for n := 1; n <= 6; n++ {
		at := base.Add(time.Duration(n) * time.Minute)
		if err := f.spans.Append(ctx, checkoutTrace(ids[n], at, uint64(n), n == 6)); err != nil {
			t.Fatal(err)
		}
	}
	for n := 1; n <= 8; n++ {
		at := base.Add(time.Duration(n)*time.Minute + time.Second)
		series, label, id := "dst-500", "trace_id", ids[n].String()
		switch {
		case n >= 5:
			series = "dst-5000"
		case n == 3:
			id = "463ac35c9f6413ad"
		case n == 2:
			label = "traceId"
		}
		f.exemplar(t, series, at, float64(100*n), label, id, "span_id", "0000000000000005")
	}
	// Trace 4 seen again by the source reporter, slower; a trace with an
	// invalid id; one without; one on another metric.
	f.exemplar(t, "src-5000", base.Add(4*time.Minute+2*time.Second), 450, "trace_id", ids[4].String())
	f.exemplar(t, "src-5000", base.Add(10*time.Minute), 10000, "trace_id", "not-hex")
	f.exemplar(t, "src-5000", base.Add(11*time.Minute), 20000)
	f.exemplar(t, "other", base.Add(12*time.Minute), 30000, "trace_id", ids[1].String())

	h := NewDrilldownHandler(f.db, f.spans, DrilldownOptions{})
	q := url.Values{
		"query": {`histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{destination_service="checkout"}[5m])))`},
		"start": {fmt.Sprint(base.Unix())},
		"end":   {f.now.Format(time.RFC3339)},
		"limit": {"4"},
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			code, env := get(t, h, method, q)
			if code != http.StatusOK || env.Status != "success" {
				t.Fatalf("%d %+v", code, env)
			}
			d := env.Data
			// Top 4 by value, one per trace: 8 (800, missing), 7 (700,
			// missing), 6 (600), 5 (500); trace 4's 450 is fifth.
			var got []string
			for _, e := range d.Exemplars {
				got = append(got, fmt.Sprintf("%s=%g/%v", e.TraceID, e.Value, e.TraceFound))
			}
			want := []string{
				ids[8].String() + "=800/false", ids[7].String() + "=700/false",
				ids[6].String() + "=600/true", ids[5].String() + "=500/true",
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("exemplars\n got %v\nwant %v", got, want)
			}
			if e := d.Exemplars[0]; e.Trace != nil || e.Series["le"] != "5000" || e.Series["reporter"] != "destination" ||
				e.Labels["span_id"] != "0000000000000005" || !near(e.Timestamp, float64(base.Add(8*time.Minute+time.Second).Unix())) {
				t.Errorf("missing trace's exemplar: %+v", e)
			}
			six := d.Exemplars[2].Trace
			if six == nil {
				t.Fatal("trace 6 has no summary")
			}
			if six.RootService != "frontend" || six.RootOperation != "GET /checkout" || !near(six.DurationMS, 600) ||
				six.SpanCount != 5 || six.ErrorSpans != 2 || fmt.Sprint(six.Services) != "[frontend checkout payments]" ||
				!near(six.StartTime, float64(base.Add(6*time.Minute).Unix())) {
				t.Errorf("trace 6 summary: %+v", six)
			}
			hop := six.CriticalHop
			if hop == nil || hop.Service != "payments" || hop.Operation != "charge" || hop.Kind != "server" ||
				hop.SpanID != "0000000000000005" || !near(hop.SelfMS, 456) || !near(hop.Share, 0.76) {
				t.Errorf("trace 6 critical hop: %+v", hop)
			}

			cp := d.CriticalPath
			// Traces 6 and 5: 1100 ms, of which checkout → payments 880.
			if cp.Traces != 2 || !near(cp.SelfMS, 1100) || cp.Top == nil ||
				cp.Top.Caller != "checkout" || cp.Top.Callee != "payments" || !near(cp.Top.SelfMS, 880) || !near(cp.Top.Share, 0.8) {
				t.Errorf("critical path: %+v top %+v", cp, cp.Top)
			}
			var edges []string
			for _, e := range cp.Edges {
				edges = append(edges, fmt.Sprintf("%s>%s=%g", e.Caller, e.Callee, e.SelfMS))
			}
			if fmt.Sprint(edges) != "[checkout>payments=880 >frontend=110 frontend>checkout=110]" || cp.EdgesTotal != 3 {
				t.Errorf("edges %v (%d)", edges, cp.EdgesTotal)
			}

			// 11 exemplars of the selected series; 9 with a valid id (trace
			// 4 twice); of them 7 stored (traces 1-6, 4 twice).
			want2 := Coverage{Exemplars: 11, WithTraceID: 9, Checked: 9, Found: 7, Ratio: 7.0 / 9, Traces: 8, TracesChecked: 8, MaxTraces: 10000}
			if d.Coverage != want2 {
				t.Errorf("coverage\n got %+v\nwant %+v", d.Coverage, want2)
			}
		})
	}

	t.Run("limit", func(t *testing.T) {
		q := url.Values{"query": {"istio_request_duration_milliseconds_bucket"}, "start": q["start"], "end": q["end"], "limit": {"1000"}}
		_, env := get(t, h, http.MethodGet, q)
		if n := len(env.Data.Exemplars); n != 8 {
			t.Errorf("%d exemplars, want one per trace (8)", n)
		}
		// Trace 4's slower exemplar, from the source reporter, stands for it.
		for _, e := range env.Data.Exemplars {
			if e.TraceID == ids[4].String() && (e.Value != 450 || e.Series["reporter"] != "source") {
				t.Errorf("trace 4: %+v", e)
			}
			if e.TraceID == ids[3].String() && (!e.TraceFound || e.Labels["trace_id"] != "463ac35c9f6413ad") {
				t.Errorf("trace 3 (64-bit id): %+v", e)
			}
			if e.TraceID == ids[2].String() && !e.TraceFound {
				t.Errorf("trace 2 (traceId label): %+v", e)
			}
		}
		_, env = get(t, h, http.MethodGet, url.Values{"query": {"istio_request_duration_milliseconds_bucket"}, "start": q["start"], "end": q["end"]})
		if n := len(env.Data.Exemplars); n != 8 {
			t.Errorf("default limit: %d exemplars, want 8", n)
		}
	})

	t.Run("default range", func(t *testing.T) {
		// Without start and end: the last hour.
		_, env := get(t, h, http.MethodGet, url.Values{"query": {"istio_request_duration_milliseconds_bucket"}})
		if env.Status != "success" || env.Data.Coverage.Exemplars != 11 {
			t.Errorf("%+v", env)
		}
		// An end before the exemplars: none, and empty lists, not null.
		_, env = get(t, h, http.MethodGet, url.Values{"query": {"istio_request_duration_milliseconds_bucket"}, "end": {fmt.Sprint(base.Unix())}})
		if env.Status != "success" || env.Data.Exemplars == nil || env.Data.CriticalPath.Edges == nil || env.Data.CriticalPath.Top != nil || env.Data.Coverage.Exemplars != 0 {
			t.Errorf("%+v", env)
		}
	})

	t.Run("coverage bound", func(t *testing.T) {
		h := NewDrilldownHandler(f.db, f.spans, DrilldownOptions{MaxCoverageTraces: 3, TraceIDLabels: []string{"trace_id"}})
		q := url.Values{"query": {"istio_request_duration_milliseconds_bucket"}, "start": q["start"], "end": q["end"], "limit": {"2"}}
		_, env := get(t, h, http.MethodGet, q)
		c := env.Data.Coverage
		// trace 2's traceId label is not looked at: 8 exemplars, 7 traces.
		if !c.Truncated || c.MaxTraces != 3 || c.TracesChecked != 3 || c.Traces != 7 || c.WithTraceID != 8 || c.Checked < 3 || c.Checked > 4 {
			t.Errorf("coverage %+v", c)
		}
		if len(env.Data.Exemplars) != 2 {
			t.Errorf("%d exemplars", len(env.Data.Exemplars))
		}
	})
}

func TestDrilldownBadData(t *testing.T) {
	f := newFixture(t)
	h := NewDrilldownHandler(f.db, f.spans, DrilldownOptions{})
	sel := "istio_request_duration_milliseconds_bucket"
	for _, tc := range []struct {
		name string
		q    url.Values
		want string
	}{
		{"no query", url.Values{}, `"query"`},
		{"bad query", url.Values{"query": {"sum("}}, `"query"`},
		{"no selector", url.Values{"query": {"1 + 1"}}, `no series selector`},
		{"limit zero", url.Values{"query": {sel}, "limit": {"0"}}, `"limit"`},
		{"limit too large", url.Values{"query": {sel}, "limit": {"1001"}}, `"limit"`},
		{"limit not a number", url.Values{"query": {sel}, "limit": {"ten"}}, `"limit"`},
		{"bad start", url.Values{"query": {sel}, "start": {"yesterday"}}, `"start"`},
		{"bad end", url.Values{"query": {sel}, "end": {"NaN"}}, `"end"`},
		{"start after end", url.Values{"query": {sel}, "start": {"2000"}, "end": {"1000"}}, `"start": after end`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, env := get(t, h, http.MethodGet, tc.q)
			if code != http.StatusBadRequest || env.Status != "error" || env.ErrorType != "bad_data" || !strings.Contains(env.Error, tc.want) {
				t.Errorf("%d %+v, want 400 bad_data naming %s", code, env, tc.want)
			}
		})
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodDelete, "/api/v1/drilldown?query="+sel, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d", rec.Code)
	}
}
