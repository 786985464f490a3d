package load

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/meshlens/meshlens/internal/meshsim/rw"
)

// fakeReceiver checks each request decodes and that every series'
// timestamps increase.
type fakeReceiver struct {
	mu      sync.Mutex
	samples int
	last    map[string]int64
	bad     string
	fail    int // answer 503 to every fail-th request
	n       int
}

func (f *fakeReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	raw, err := snappy.Decode(nil, body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.fail > 0 && f.n%f.fail == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		f.bad = err.Error()
		w.WriteHeader(400)
		return
	}
	series, err := decode(raw, r.Header.Get("Content-Type"))
	if err != nil {
		f.bad = err.Error()
		w.WriteHeader(400)
		return
	}
	for _, s := range series {
		if s.labels.IsEmpty() || len(s.t) != 1 {
			f.bad = "bad series"
			break
		}
		key := s.labels.String()
		if prev, ok := f.last[key]; ok && s.t[0] <= prev {
			f.bad = "out of order: " + key
		}
		f.last[key] = s.t[0]
		f.samples++
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodedSeries is a series of a request: its labels and the timestamps
// of its samples.
type decodedSeries struct {
	labels labels.Labels
	t      []int64
}

// decode reads an uncompressed request of the protocol named by the
// Content-Type with Prometheus's own messages: prompb.WriteRequest (1.0)
// or writev2.Request (2.0).
func decode(raw []byte, contentType string) ([]decodedSeries, error) {
	var out []decodedSeries
	var sb labels.ScratchBuilder
	if strings.Contains(contentType, "io.prometheus.write.v2.Request") {
		var req writev2.Request
		if err := req.Unmarshal(raw); err != nil {
			return nil, err
		}
		for _, ts := range req.Timeseries {
			ls, err := ts.ToLabels(&sb, req.Symbols)
			if err != nil {
				return nil, err
			}
			s := decodedSeries{labels: ls}
			for _, smp := range ts.Samples {
				s.t = append(s.t, smp.Timestamp)
			}
			out = append(out, s)
		}
		return out, nil
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return nil, err
	}
	for _, ts := range req.Timeseries {
		s := decodedSeries{labels: ts.ToLabels(&sb, nil)}
		for _, smp := range ts.Samples {
			s.t = append(s.t, smp.Timestamp)
		}
		out = append(out, s)
	}
	return out, nil
}

func TestRun(t *testing.T) {
	d, err := BuildDataset(DatasetOptions{Seed: 1, Series: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if d.Set.Len() != 5000 {
		t.Fatalf("dataset has %d series", d.Set.Len())
	}
	for _, ls := range d.Labels[:100] {
		if ls.Len() < 25 {
			t.Fatalf("series with %d labels: %s", ls.Len(), ls)
		}
	}
	for _, tc := range []struct {
		proto rw.Protocol
		step  time.Duration
		fail  int
	}{{rw.V1, 0, 0}, {rw.V2, 0, 0}, {rw.V1, 15 * time.Second, 7}} {
		t.Run(string(tc.proto), func(t *testing.T) {
			f := &fakeReceiver{last: map[string]int64{}, fail: tc.fail}
			srv := httptest.NewServer(f)
			defer srv.Close()
			sum, err := Run(context.Background(), Options{URL: srv.URL, Protocol: tc.proto, SamplesPerRequest: 500,
				Concurrency: 3, Requests: 40, Step: tc.step, Progress: -1}, d)
			if err != nil {
				t.Fatal(err)
			}
			if f.bad != "" {
				t.Fatal(f.bad)
			}
			if sum.Requests != 40 || sum.SamplesSent != 40*500 {
				t.Fatalf("requests %d samples %d", sum.Requests, sum.SamplesSent)
			}
			wantFailed := int64(0)
			if tc.fail > 0 {
				wantFailed = 40 / int64(tc.fail)
			}
			if sum.RequestsFailed != wantFailed || sum.StatusCodes["503"] != wantFailed {
				t.Fatalf("failed %d, codes %v", sum.RequestsFailed, sum.StatusCodes)
			}
			if sum.SamplesAccepted != int64(f.samples) {
				t.Fatalf("accepted %d, receiver got %d", sum.SamplesAccepted, f.samples)
			}
			if sum.LatencyP99MS < sum.LatencyP50MS || sum.LatencyP50MS <= 0 {
				t.Fatalf("latency p50 %v p99 %v", sum.LatencyP50MS, sum.LatencyP99MS)
			}
		})
	}
}

// BenchmarkEncode measures what one core spends to build a request of
// 2000 Istio series: values, protobuf encoding and snappy compression.
func BenchmarkEncode(b *testing.B) {
	d, err := BuildDataset(DatasetOptions{Seed: 1, Series: 20000})
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []rw.Protocol{rw.V1, rw.V2} {
		b.Run(string(p), func(b *testing.B) {
			w := worker{d: d, scratch: d.Set.NewScratch()}
			const spr = 2000
			var comp []byte
			var r int64
			for b.Loop() {
				k := int(r) % (d.Set.Len() / spr)
				lo, hi := k*spr, (k+1)*spr
				w.vals = w.vals[:0]
				for i := lo; i < hi; i++ {
					w.vals = append(w.vals, d.Start[i]+float64(r)*d.Inc[i])
				}
				if p == rw.V2 {
					w.raw = d.Set.AppendV2(w.raw[:0], w.scratch, lo, hi, r, w.vals)
				} else {
					w.raw = d.Set.AppendV1(w.raw[:0], lo, hi, r, w.vals)
				}
				comp = snappy.Encode(comp[:cap(comp)], w.raw)
				r++
			}
			b.ReportMetric(float64(spr)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(len(comp)), "compressed_bytes/req")
		})
	}
}
