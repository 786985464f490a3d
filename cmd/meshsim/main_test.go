package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

func runMain(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errOut}
	err := m.Run(context.Background(), args)
	return out.String(), errOut.String(), err
}

// receiver decodes remote-write 1.0 and 2.0 requests with Prometheus's
// generated protobuf code and checks that every series' timestamps
// increase. answers, if set, gives the status of the first requests.
type receiver struct {
	mu        sync.Mutex
	answers   []int
	calls     int
	retried   int // requests with a Retry-Attempt header
	bodies    map[string]int
	statuses  map[string]int // first status answered per body
	samples   int
	exemplars int
	metadata  int
	last      map[string]int64
	minT      int64
	maxT      int64
	replicas  map[string]int
	series    map[string]bool
	names     map[string]bool
	traceIDs  map[string]bool // of exemplars
	bad       string
}

func newReceiver(answers ...int) *receiver {
	return &receiver{answers: answers, last: map[string]int64{}, bodies: map[string]int{}, statuses: map[string]int{},
		replicas: map[string]int{}, series: map[string]bool{}, names: map[string]bool{}, traceIDs: map[string]bool{}, minT: 1 << 62}
}

func (rc *receiver) fail(format string) {
	if rc.bad == "" {
		rc.bad = format
	}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls++
	if r.Header.Get("Retry-Attempt") != "" {
		rc.retried++
	}
	key := string(body)
	rc.bodies[key]++
	if len(rc.answers) > 0 {
		code := rc.answers[0]
		rc.answers = rc.answers[1:]
		if code/100 != 2 {
			rc.statuses[key] = code
			if code == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "0")
			}
			w.WriteHeader(code)
			return
		}
	}
	if r.Header.Get("Content-Encoding") != "snappy" {
		rc.fail("no snappy Content-Encoding")
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		rc.fail(err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var sb labels.ScratchBuilder
	var n, nex int
	add := func(ls labels.Labels, ts []int64, ex int) {
		k := ls.String()
		if ls.Get("cluster") == "" {
			rc.fail("series without cluster: " + k)
		}
		rc.series[k] = true
		rc.names[ls.Get("__name__")] = true
		rc.replicas[ls.Get("__replica__")]++
		for _, t := range ts {
			if prev, ok := rc.last[k]; ok && t <= prev {
				rc.fail("out of order: " + k)
			}
			rc.last[k] = t
			rc.minT, rc.maxT = min(rc.minT, t), max(rc.maxT, t)
			n++
		}
		nex += ex
	}
	if strings.Contains(r.Header.Get("Content-Type"), "io.prometheus.write.v2.Request") {
		if r.Header.Get("X-Prometheus-Remote-Write-Version") != "2.0.0" {
			rc.fail("2.0 request with version " + r.Header.Get("X-Prometheus-Remote-Write-Version"))
		}
		var req writev2.Request
		if err := req.Unmarshal(raw); err != nil {
			rc.fail(err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, ts := range req.Timeseries {
			ls, err := ts.ToLabels(&sb, req.Symbols)
			if err != nil {
				rc.fail(err.Error())
			}
			var times []int64
			for _, s := range ts.Samples {
				times = append(times, s.Timestamp)
			}
			for _, e := range ts.Exemplars {
				el, _ := e.ToExemplar(&sb, req.Symbols)
				if el.Labels.Get("trace_id") == "" {
					rc.fail("exemplar without trace_id")
				}
				rc.traceIDs[el.Labels.Get("trace_id")] = true
			}
			if ts.Metadata.Type != writev2.Metadata_METRIC_TYPE_UNSPECIFIED {
				rc.metadata++
			}
			add(ls, times, len(ts.Exemplars))
		}
		rc.samples += n
		rc.exemplars += nex
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(n))
		w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", "0")
		w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", strconv.Itoa(nex))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		rc.fail(err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	for _, ts := range req.Timeseries {
		var times []int64
		for _, s := range ts.Samples {
			times = append(times, s.Timestamp)
		}
		for _, e := range ts.Exemplars {
			id := labels.New(prompbLabels(e.Labels)...).Get("trace_id")
			if id == "" {
				rc.fail("exemplar without trace_id")
			}
			rc.traceIDs[id] = true
		}
		add(ts.ToLabels(&sb, nil), times, len(ts.Exemplars))
	}
	rc.samples += n
	rc.exemplars += nex
	w.WriteHeader(http.StatusNoContent)
}

func prompbLabels(ls []prompb.Label) []labels.Label {
	out := make([]labels.Label, len(ls))
	for i, l := range ls {
		out[i] = labels.Label{Name: l.Name, Value: l.Value}
	}
	return out
}

// fast are queue flags that keep the tests short.
var fast = []string{"--progress", "0", "--batch-send-deadline", "50ms", "--flush-deadline", "10s", "--log-level", "error"}

func TestBackfill(t *testing.T) {
	for _, proto := range []string{"1.0", "2.0"} {
		t.Run(proto, func(t *testing.T) {
			rc := newReceiver()
			srv := httptest.NewServer(rc)
			defer srv.Close()
			end := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
			_, _, err := runMain(t, append([]string{"backfill", "--url", srv.URL + "/api/v1/write", "--protocol", proto, "--hours", "0.05",
				"--end", end.Format(time.RFC3339), "--services", "10", "--trace-sampling", "0.05"}, fast...)...)
			if err != nil {
				t.Fatal(err)
			}
			if rc.bad != "" {
				t.Fatal(rc.bad)
			}
			if rc.samples < 10000 || rc.exemplars == 0 {
				t.Fatalf("%d samples, %d exemplars", rc.samples, rc.exemplars)
			}
			// The relay restored the simulated timestamps.
			if lo, hi := time.UnixMilli(rc.minT), time.UnixMilli(rc.maxT); lo.Before(end.Add(-4*time.Minute)) || hi.After(end) {
				t.Fatalf("timestamps from %s to %s, want within the 3 minutes before %s", lo, hi, end)
			}
			if proto == "2.0" && rc.metadata == 0 {
				t.Fatal("2.0 series without metadata")
			}
		})
	}
}

// TestQueueRetries sends through Prometheus's queue to a receiver whose
// first answer is an error: 5xx and 429 are retried with the same
// request, 400 is not and its samples are reported as failed.
func TestQueueRetries(t *testing.T) {
	for _, tc := range []struct {
		code  int
		retry bool
	}{{http.StatusInternalServerError, true}, {http.StatusTooManyRequests, true}, {http.StatusBadRequest, false}} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			rc := newReceiver(tc.code)
			srv := httptest.NewServer(rc)
			defer srv.Close()
			_, _, err := runMain(t, append([]string{"backfill", "--url", srv.URL, "--hours", "0.01", "--services", "5", "--clusters", "1",
				"--shards", "1", "--max-shards", "1"}, fast...)...)
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if rc.bad != "" {
				t.Fatal(rc.bad)
			}
			var first string
			for b, code := range rc.statuses {
				if code == tc.code {
					first = b
				}
			}
			if first == "" {
				t.Fatal("the error was never answered")
			}
			if tc.retry {
				if err != nil {
					t.Fatal(err)
				}
				if rc.bodies[first] != 2 || rc.retried != 1 {
					t.Fatalf("rejected request sent %d times, %d retries; want 2 and 1", rc.bodies[first], rc.retried)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "samples failed") {
				t.Fatalf("err %v, want samples failed", err)
			}
			if rc.bodies[first] != 1 || rc.retried != 0 {
				t.Fatalf("rejected request sent %d times, %d retries; want 1 and 0", rc.bodies[first], rc.retried)
			}
		})
	}
}

// TestRun runs the simulation in real time for two one-second steps,
// remote writing through Prometheus's queue and sending OTLP spans: every
// exemplar names a trace that was sent.
func TestRun(t *testing.T) {
	rc := newReceiver()
	var mu sync.Mutex
	traces := map[string]bool{}
	spans := 0
	mux := http.NewServeMux()
	mux.Handle("/api/v1/write", rc)
	mux.HandleFunc("/v1/traces", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil {
			t.Error(err)
		}
		mu.Lock()
		defer mu.Unlock()
		rss := req.Traces().ResourceSpans()
		for i := range rss.Len() {
			ss := rss.At(i).ScopeSpans().At(0).Spans()
			for j := range ss.Len() {
				traces[ss.At(j).TraceID().String()] = true
				spans++
			}
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	began := time.Now()
	_, _, err := runMain(t, append([]string{"run", "--url", srv.URL + "/api/v1/write", "--protocol", "2.0",
		"--traces-url", srv.URL + "/v1/traces", "--traces-format", "otlp", "--trace-sampling", "0.2",
		"--services", "8", "--interval", "1s", "--duration", "2s"}, fast...)...)
	if err != nil {
		t.Fatal(err)
	}
	if rc.bad != "" {
		t.Fatal(rc.bad)
	}
	if rc.samples == 0 || spans == 0 || len(rc.traceIDs) == 0 {
		t.Fatalf("%d samples, %d spans, %d exemplar trace ids", rc.samples, spans, len(rc.traceIDs))
	}
	for id := range rc.traceIDs {
		if !traces[id] {
			t.Fatalf("exemplar trace id %s not among the %d traces sent", id, len(traces))
		}
	}
	// Scrapes are stamped after the queues started, in real time.
	if lo := time.UnixMilli(rc.minT); lo.Before(began) || time.UnixMilli(rc.maxT).After(time.Now()) {
		t.Fatalf("samples from %s to %s, run began %s", lo, time.UnixMilli(rc.maxT), began)
	}
}

func TestHAPairs(t *testing.T) {
	rc := newReceiver()
	srv := httptest.NewServer(rc)
	defer srv.Close()
	_, _, err := runMain(t, append([]string{"backfill", "--url", srv.URL, "--hours", "0.01", "--services", "5", "--ha",
		"--protocol", "2.0"}, fast...)...)
	if err != nil {
		t.Fatal(err)
	}
	if rc.bad != "" {
		t.Fatal(rc.bad)
	}
	if rc.replicas["a"] == 0 || rc.replicas["a"] != rc.replicas["b"] || rc.replicas[""] != 0 {
		t.Fatalf("series per __replica__: %v", rc.replicas)
	}
	// Each series of replica a has its twin in b, scraped a little earlier.
	for k := range rc.series {
		if !strings.Contains(k, `__replica__="a"`) {
			continue
		}
		twin := strings.Replace(k, `__replica__="a"`, `__replica__="b"`, 1)
		ta, tb := rc.last[k], rc.last[twin]
		if tb == 0 || tb >= ta || ta-tb > 1000 {
			t.Fatalf("replica timestamps a %d, b %d of %s", ta, tb, k)
		}
	}
}

func TestRunLinkerd(t *testing.T) {
	rc := newReceiver()
	srv := httptest.NewServer(rc)
	defer srv.Close()
	_, _, err := runMain(t, append([]string{"backfill", "--url", srv.URL, "--hours", "0.02", "--services", "8", "--mesh", "linkerd"}, fast...)...)
	if err != nil {
		t.Fatal(err)
	}
	if rc.bad != "" {
		t.Fatal(rc.bad)
	}
	for n := range rc.names {
		if strings.HasPrefix(n, "istio_") || strings.HasPrefix(n, "envoy_") || strings.HasPrefix(n, "pilot_") {
			t.Fatalf("Istio series in a Linkerd mesh: %s", n)
		}
	}
	for _, n := range []string{"request_total", "response_total", "response_latency_ms_bucket", "identity_cert_expiration_timestamp_seconds"} {
		if !rc.names[n] {
			t.Errorf("no %s series", n)
		}
	}
}

func TestTopologyJSON(t *testing.T) {
	out, _, err := runMain(t, "topology", "--json", "--services", "12", "--seed", "5")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Services []struct{ Name string }  `json:"services"`
		Edges    []struct{ From, To int } `json:"edges"`
		Series   []struct {
			Total int `json:"total_series"`
		} `json:"series_per_cluster"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Services) != 13 || len(v.Edges) == 0 || len(v.Series) != 2 || v.Series[0].Total == 0 {
		t.Fatalf("%+v", v)
	}
	text, _, err := runMain(t, "topology", "--services", "12", "--seed", "5")
	if err != nil || !strings.Contains(text, "longest call chain") {
		t.Fatalf("%v\n%s", err, text)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"load"}, "--url"},
		{[]string{"load", "--url", "http://x", "--protocol", "3"}, "unknown remote-write protocol"},
		{[]string{"load", "--traces-url", "http://x", "--traces-format", "jaeger"}, "unknown --traces-format"},
		{[]string{"load", "--url", "http://x", "--traces-url", "http://y"}, "not both"},
		{[]string{"backfill", "--url", "http://x"}, "--hours must be positive"},
		{[]string{"backfill", "--url", "http://x", "--hours", "1", "--mesh", "consul"}, "unknown mesh"},
		{[]string{"backfill", "--url", "http://x", "--hours", "1", "--traces-format", "jaeger"}, "unknown --traces-format"},
		{[]string{"backfill", "--url", "http://x", "--hours", "1", "--shards", "3", "--max-shards", "2"}, "min_shards must not be greater"},
		{[]string{"topology", "--services", "20000"}, "services 20000 out of range"},
		{[]string{"run"}, "give --url, --listen or --traces-url"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"scenario", "testdata/nosuch.yaml"}, "no such file"},
		{[]string{"backfill", "--url", "http://x", "--hours", "1", "--scenario", "../../testdata/scenarios/latency.yaml", "--services", "5"}, "conflict with --scenario"},
	} {
		_, _, err := runMain(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestScenarioLibraryValid(t *testing.T) {
	out, _, err := runMain(t, "scenario", "../../testdata/scenarios/healthy-baseline.yaml", "../../testdata/scenarios/istiod-down.yaml")
	if err != nil || strings.Count(out, ": ok") != 2 {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestSink: a 2.0 sender accepts the sink's answers (it reports the
// written counts) and spans are acknowledged in each format.
func TestSink(t *testing.T) {
	s := &sink{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	_, _, err := runMain(t, append([]string{"backfill", "--url", srv.URL + "/api/v1/write", "--protocol", "2.0", "--hours", "0.01",
		"--services", "5", "--traces-url", srv.URL + "/v1/traces", "--traces-format", "otlp"}, fast...)...)
	if err != nil {
		t.Fatal(err)
	}
	if s.requests.Load() == 0 {
		t.Fatal("no requests")
	}
}
