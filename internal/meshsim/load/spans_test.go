package load

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// spanReceiver decodes Zipkin v2 JSON or OTLP protobuf and records trace
// ids and timestamps; every fail-th request is answered 503.
type spanReceiver struct {
	mu       sync.Mutex
	n, fail  int
	spans    int
	traces   map[string]bool
	perReq   int // sum over requests of the distinct trace ids in each
	min, max int64
	bad      string
}

func (rc *spanReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.n++
	if rc.fail > 0 && rc.n%rc.fail == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	ids := map[string]bool{}
	see := func(trace string, startUS int64) {
		ids[trace] = true
		rc.spans++
		rc.min, rc.max = min(rc.min, startUS), max(rc.max, startUS)
	}
	if r.Header.Get("Content-Type") == "application/x-protobuf" {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil {
			rc.bad = err.Error()
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rss := req.Traces().ResourceSpans()
		for i := range rss.Len() {
			ss := rss.At(i).ScopeSpans().At(0).Spans()
			for j := range ss.Len() {
				see(ss.At(j).TraceID().String(), int64(ss.At(j).StartTimestamp())/1000)
			}
		}
		w.WriteHeader(http.StatusOK)
	} else {
		var spans []struct {
			TraceID   string `json:"traceId"`
			ID        string `json:"id"`
			Timestamp int64  `json:"timestamp"`
		}
		if err := json.Unmarshal(body, &spans); err != nil {
			rc.bad = err.Error()
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, s := range spans {
			if len(s.TraceID) != 32 || len(s.ID) != 16 {
				rc.bad = "bad ids " + s.TraceID + " " + s.ID
			}
			see(s.TraceID, s.Timestamp)
		}
		w.WriteHeader(http.StatusAccepted)
	}
	for id := range ids {
		rc.traces[id] = true
	}
	rc.perReq += len(ids)
}

func TestRunSpans(t *testing.T) {
	for _, tc := range []struct {
		format SpanFormat
		fail   int
	}{{FormatZipkin, 0}, {FormatOTLP, 0}, {FormatZipkin, 4}} {
		t.Run(string(tc.format), func(t *testing.T) {
			d, err := BuildSpanDataset(SpanDatasetOptions{Seed: 1, Services: 10, Format: tc.format, SpansPerRequest: 200, Bodies: 8})
			if err != nil {
				t.Fatal(err)
			}
			if len(d.bodies) != 8 || d.Traces == 0 {
				t.Fatalf("%d bodies, %d traces", len(d.bodies), d.Traces)
			}
			rc := &spanReceiver{fail: tc.fail, traces: map[string]bool{}, min: 1 << 62}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			t0 := time.Now()
			// Three rounds over the eight bodies; with two workers their
			// shares of the 24 requests may differ.
			conc := 1
			if tc.fail > 0 {
				conc = 2
			}
			sum, err := RunSpans(context.Background(), SpanOptions{URL: srv.URL, Concurrency: conc, Requests: 24, Progress: -1}, d)
			if err != nil {
				t.Fatal(err)
			}
			if rc.bad != "" {
				t.Fatal(rc.bad)
			}
			if sum.Requests != 24 || (conc == 1 && sum.SpansSent != 3*int64(d.Spans)) {
				t.Fatalf("%d requests, %d spans sent; dataset %d spans", sum.Requests, sum.SpansSent, d.Spans)
			}
			if sum.SpansAccepted != int64(rc.spans) {
				t.Fatalf("accepted %d, receiver decoded %d", sum.SpansAccepted, rc.spans)
			}
			// Every round sends new trace ids.
			if len(rc.traces) != rc.perReq {
				t.Fatalf("%d distinct trace ids in %d request-traces", len(rc.traces), rc.perReq)
			}
			if tc.fail > 0 {
				if sum.StatusCodes["503"] != 6 || sum.RequestsFailed != 6 {
					t.Fatalf("codes %v, failed %d", sum.StatusCodes, sum.RequestsFailed)
				}
			}
			// Spans are recent: the last of each request ends at the send.
			if lo, hi := time.UnixMicro(rc.min), time.UnixMicro(rc.max); lo.Before(t0.Add(-30*time.Minute)) || hi.After(time.Now()) {
				t.Fatalf("span starts from %s to %s, sent at %s", lo, hi, t0)
			}
			if sum.LatencyP50MS <= 0 || sum.LatencyP99MS < sum.LatencyP50MS {
				t.Fatalf("latency p50 %v p99 %v", sum.LatencyP50MS, sum.LatencyP99MS)
			}
		})
	}
}

// BenchmarkSpanPatch measures what one core spends to prepare a request
// of about 1000 spans.
func BenchmarkSpanPatch(b *testing.B) {
	for _, f := range []SpanFormat{FormatZipkin, FormatOTLP} {
		b.Run(string(f), func(b *testing.B) {
			d, err := BuildSpanDataset(SpanDatasetOptions{Seed: 1, Format: f, Bodies: 4})
			if err != nil {
				b.Fatal(err)
			}
			var buf []byte
			spans := 0
			for i := 0; b.Loop(); i++ {
				body := &d.bodies[i%len(d.bodies)]
				buf = body.patch(buf, f, uint64(i), 1000)
				spans += body.spans
			}
			b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}
