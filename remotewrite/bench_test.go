package remotewrite

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

var benchLimits = WriteOptions{Limits: Limits{MaxBodyBytes: 32 << 20, MaxDecodedBytes: 32 << 20}, MaxInflight: 4}

// istioSeries returns n Istio-shaped label sets (21 labels each, values as
// long as a real mesh's), sorted by name as senders send them.
func istioSeries(n int) []labels.Labels {
	out := make([]labels.Labels, n)
	for i := range out {
		svc, src := i%997, (i/997)%37
		out[i] = labels.FromStrings(
			"__name__", "istio_requests_total",
			"cluster", fmt.Sprintf("cluster-%d", i%3),
			"connection_security_policy", "mutual_tls",
			"destination_app", fmt.Sprintf("svc-%d", svc),
			"destination_canonical_revision", "v1",
			"destination_canonical_service", fmt.Sprintf("svc-%d", svc),
			"destination_principal", fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/svc-%d", svc%20, svc),
			"destination_service", fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", svc, svc%20),
			"destination_service_name", fmt.Sprintf("svc-%d", svc),
			"destination_service_namespace", fmt.Sprintf("ns-%d", svc%20),
			"destination_workload", fmt.Sprintf("svc-%d-v1", svc),
			"destination_workload_namespace", fmt.Sprintf("ns-%d", svc%20),
			"instance", fmt.Sprintf("10.%d.%d.%d:15090", i%250, (i/250)%250, src),
			"job", "kubernetes-pods",
			"reporter", "destination",
			"request_protocol", "http",
			"response_code", []string{"200", "404", "503"}[i/(997*37)%3],
			"response_flags", "-",
			"source_app", fmt.Sprintf("client-%d", src),
			"source_principal", fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/client-%d", src%20, src),
			"source_workload", fmt.Sprintf("client-%d-v1", src),
		)
	}
	return out
}

// requestsV1 encodes rounds of one sample per series, perReq series per
// request, timestamps advancing by 15s per round.
func requestsV1(b testing.TB, series []labels.Labels, perReq, rounds int) [][]byte {
	var out [][]byte
	for r := 0; r < rounds; r++ {
		for i := 0; i < len(series); i += perReq {
			req := &prompb.WriteRequest{}
			for _, ls := range series[i:min(i+perReq, len(series))] {
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:  prompb.FromLabels(ls, nil),
					Samples: []prompb.Sample{{Timestamp: int64(r) * 15000, Value: float64(r)}},
				})
			}
			raw, err := req.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, snappy.Encode(nil, raw))
		}
	}
	return out
}

func requestsV2(b testing.TB, series []labels.Labels, perReq, rounds int) [][]byte {
	var out [][]byte
	for r := 0; r < rounds; r++ {
		for i := 0; i < len(series); i += perReq {
			st := writev2.NewSymbolTable()
			req := &writev2.Request{}
			for _, ls := range series[i:min(i+perReq, len(series))] {
				req.Timeseries = append(req.Timeseries, writev2.TimeSeries{
					LabelsRefs: st.SymbolizeLabels(ls, nil),
					Samples:    []writev2.Sample{{Timestamp: int64(r) * 15000, Value: float64(r)}},
				})
			}
			req.Symbols = st.Symbols()
			raw, err := req.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, snappy.Encode(nil, raw))
		}
	}
	return out
}

// BenchmarkDecode measures reading, decompressing and unmarshalling a
// 2,000-series request as the write handler does, per sample.
// BenchmarkUnmarshalV1 compares the 1.0 path with the generated decoder.
func BenchmarkDecode(b *testing.B) {
	series := istioSeries(2000)
	b.Run("1.0", func(b *testing.B) {
		body := requestsV1(b, series, 2000, 1)[0]
		var v1 v1Request
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if err := DecodeV1(bytes.NewReader(body), benchLimits.Limits, &v1.req, &v1.body, &v1.compressed); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2000), "ns/sample")
	})
	b.Run("2.0", func(b *testing.B) {
		body := requestsV2(b, series, 2000, 1)[0]
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if err := Decode(bytes.NewReader(body), benchLimits.Limits, &writev2.Request{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2000), "ns/sample")
	})
}

// BenchmarkIngest measures the whole handler (decode, validate, append,
// commit to the WAL) per sample into a real TSDB whose head already holds
// the series, as in steady state: 100K active series, 2,000 per request.
// Run it with -benchtime 900x or less (20 prepared rounds).
func BenchmarkIngest(b *testing.B) {
	const nSeries, perReq = 100000, 2000
	series := istioSeries(nSeries)
	for _, p := range []struct {
		name, ct string
		enc      func(testing.TB, []labels.Labels, int, int) [][]byte
	}{{"1.0", ctV1, requestsV1}, {"2.0", ctV2, requestsV2}} {
		b.Run(p.name, func(b *testing.B) {
			const rounds = 20
			reqs := p.enc(b, series, perReq, rounds)
			db := openDB(b)
			h := NewWriteHandler(slog.New(slog.DiscardHandler), db, NewMetadataStore(), benchLimits)
			perRound := nSeries / perReq
			for _, body := range reqs[:perRound] { // create the series
				if w := post(h, p.ct, "", body); w.Code != http.StatusNoContent {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			b.ReportAllocs()
			i := perRound
			for b.Loop() {
				if i == len(reqs) {
					b.Fatalf("ran past the %d prepared rounds; use -benchtime %dx or less", rounds, len(reqs)-perRound)
				}
				r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(reqs[i]))
				r.Header.Set("Content-Type", p.ct)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusNoContent {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perReq), "ns/sample")
		})
	}
}
