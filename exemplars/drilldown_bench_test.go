package exemplars_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/exemplars"
	exstore "github.com/meshlens/meshlens/exemplars/store"
	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/store"
)

// benchMesh is a 30-service mesh's history in the exemplar and span
// stores: rate traced requests per second, each one entry service calling
// another (three spans), each with an exemplar on the callee's latency
// bucket. The stores cut blocks as the clock passes, as they do running.
type benchMesh struct {
	ex     *exstore.Store
	spans  *store.Store
	end    time.Time
	closer func()
}

func newBenchMesh(b *testing.B, history time.Duration, rate int) *benchMesh {
	b.Helper()
	dir := b.TempDir()
	end := time.Now().Truncate(time.Hour)
	now := end.Add(-history)
	clock := func() time.Time { return now }
	ex, err := exstore.Open(exstore.Options{Dir: dir + "/exemplars", Retention: history + 24*time.Hour, Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	spans, err := store.Open(store.Options{Dir: dir + "/traces", Retention: history + 24*time.Hour, Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	les := []float64{5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000}
	var batch []traces.Span
	var exs []exstore.Exemplar
	n := 0
	lastCut := now
	for ; now.Before(end); now = now.Add(time.Second) {
		for range rate {
			n++
			var id traces.TraceID
			binary.BigEndian.PutUint64(id[:8], r.Uint64())
			binary.BigEndian.PutUint64(id[8:], uint64(n))
			caller, callee := r.IntN(30), r.IntN(30)
			ms := 5 + r.ExpFloat64()*40
			start := now.Add(-time.Duration(ms * float64(time.Millisecond)))
			batch = append(batch, benchTrace(id, fmt.Sprintf("svc-%d", caller), fmt.Sprintf("svc-%d", callee), start, ms)...)
			le := "+Inf"
			for _, b := range les {
				if ms <= b {
					le = strconv.FormatFloat(b, 'f', -1, 64)
					break
				}
			}
			exs = append(exs, exstore.Exemplar{
				Series:   labels.FromStrings("__name__", "istio_request_duration_milliseconds_bucket", "destination_service_name", fmt.Sprintf("svc-%d", callee), "le", le, "reporter", "destination"),
				Exemplar: exemplar.Exemplar{Labels: labels.FromStrings("trace_id", id.String()), Value: ms, Ts: now.UnixMilli(), HasTs: true},
			})
		}
		if len(batch) >= 3000 {
			if err := spans.Append(ctx, batch); err != nil {
				b.Fatal(err)
			}
			if _, err := ex.Append(exs); err != nil {
				b.Fatal(err)
			}
			batch, exs = batch[:0], exs[:0]
		}
		if now.Sub(lastCut) >= 10*time.Minute {
			lastCut = now
			if err := spans.CutBlock(ctx); err != nil {
				b.Fatal(err)
			}
			if err := ex.Maintain(ctx, false); err != nil {
				b.Fatal(err)
			}
		}
	}
	spans.Append(ctx, batch)
	ex.Append(exs)
	now = end.Add(time.Minute)
	if err := spans.CutBlock(ctx); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d traced requests over %s", n, history)
	return &benchMesh{ex: ex, spans: spans, end: end, closer: func() { spans.Close(); ex.Close() }}
}

func benchTrace(id traces.TraceID, caller, callee string, start time.Time, ms float64) []traces.Span {
	at := uint64(start.UnixNano())
	d := uint64(ms * float64(time.Millisecond))
	sid := func(k byte) traces.SpanID {
		return traces.SpanID{id[15], id[14], id[13], id[12], id[11], id[10], id[9], k}
	}
	return []traces.Span{
		{TraceID: id, SpanID: sid(1), Name: "GET /", Kind: traces.KindServer, Service: caller, StartUnixNano: at, EndUnixNano: at + d + 2e6},
		{TraceID: id, SpanID: sid(2), ParentSpanID: sid(1), Name: "GET /" + callee, Kind: traces.KindClient, Service: caller, StartUnixNano: at + 1e6, EndUnixNano: at + 1e6 + d},
		{TraceID: id, SpanID: sid(3), ParentSpanID: sid(2), Name: "GET /" + callee, Kind: traces.KindServer, Service: callee, StartUnixNano: at + 1e6, EndUnixNano: at + 1e6 + d},
	}
}

// BenchmarkDrilldown measures one drill-down call (the 10 slowest requests
// of one service, their traces, the coverage of every exemplar in range
// and the critical path) over the last hour and over 7 days of a
// 30-service mesh with 2 traced requests per second (one exemplar each),
// stored in blocks as a running node keeps them:
//
//	go test -run XXX -bench BenchmarkDrilldown -benchtime 20x ./exemplars
func BenchmarkDrilldown(b *testing.B) {
	m := newBenchMesh(b, 7*24*time.Hour, 2)
	defer m.closer()
	h := exemplars.NewDrilldownHandler(m.ex, m.spans, exemplars.DrilldownOptions{})
	for _, c := range []struct {
		name  string
		rng   time.Duration
		query string
	}{
		{"service/1h", time.Hour, `histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{destination_service_name="svc-3"}[5m])))`},
		{"service/7d", 7 * 24 * time.Hour, `histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{destination_service_name="svc-3"}[5m])))`},
		{"mesh/1h", time.Hour, `histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket[5m])))`},
		{"mesh/7d", 7 * 24 * time.Hour, `histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket[5m])))`},
	} {
		b.Run(c.name, func(b *testing.B) {
			q := url.Values{"query": {c.query}, "start": {strconv.FormatInt(m.end.Add(-c.rng).Unix(), 10)}, "end": {strconv.FormatInt(m.end.Unix(), 10)}}
			for i := 0; i < b.N; i++ {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/drilldown?"+q.Encode(), nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
