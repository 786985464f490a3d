package rw

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

func testSeries(n int) []labels.Labels {
	out := make([]labels.Labels, n)
	for i := range out {
		out[i] = labels.FromStrings("__name__", "istio_requests_total", "cluster", "east",
			"destination_service_name", fmt.Sprintf("svc-%d", i%7), "pod", fmt.Sprintf("pod-%d", i), "reporter", "source")
	}
	return out
}

func TestSeriesSetRoundTrip(t *testing.T) {
	lsets := testSeries(50)
	types := make([]uint8, len(lsets))
	for i := range types {
		types[i] = TypeCounter
	}
	vals := make([]float64, 20)
	for i := range vals {
		vals[i] = float64(i) * 1.5
	}
	for _, c := range []struct {
		name string
		set  *SeriesSet
		p    Protocol
	}{
		{"encoded once", NewSeriesSet(lsets, types), V1},
		{"encoded once", NewSeriesSet(lsets, types), V2},
		{"lazy", NewLazySeriesSet(lsets, types), V1},
		{"lazy", NewLazySeriesSet(lsets, types), V2},
	} {
		set, p := c.set, c.p
		sc := set.NewScratch()
		t.Run(c.name+"/"+string(p), func(t *testing.T) {
			for round := range 3 { // scratch reuse must not leak symbols between requests
				var b []byte
				if p == V1 {
					b = set.AppendV1(nil, 10, 30, 1000+int64(round), vals)
				} else {
					b = set.AppendV2(nil, sc, 10, 30, 1000+int64(round), vals)
				}
				got, err := decode(b, p)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 20 {
					t.Fatalf("got %d series, want 20", len(got))
				}
				for i, s := range got {
					if !labels.Equal(s.labels, lsets[10+i]) {
						t.Fatalf("series %d: labels %s, want %s", i, s.labels, lsets[10+i])
					}
					if len(s.v) != 1 || s.v[0] != vals[i] || s.t[0] != 1000+int64(round) {
						t.Fatalf("series %d: samples %v@%v", i, s.v, s.t)
					}
					if p == V2 && s.typ != writev2.Metadata_MetricType(TypeCounter) {
						t.Fatalf("series %d: type %v", i, s.typ)
					}
				}
			}
		})
	}
}

// decodedSeries is a series of a request as Prometheus's own decoders
// read it.
type decodedSeries struct {
	labels labels.Labels
	t      []int64
	v      []float64
	typ    writev2.Metadata_MetricType // V2 only
}

// decode reads an uncompressed request of protocol p with prompb (1.0)
// or writev2 (2.0), the messages Prometheus itself receives.
func decode(b []byte, p Protocol) ([]decodedSeries, error) {
	var out []decodedSeries
	var sb labels.ScratchBuilder
	if p == V2 {
		var req writev2.Request
		if err := req.Unmarshal(b); err != nil {
			return nil, err
		}
		if len(req.Symbols) == 0 || req.Symbols[0] != "" {
			return nil, fmt.Errorf("symbol table must start with the empty string")
		}
		for _, ts := range req.Timeseries {
			ls, err := ts.ToLabels(&sb, req.Symbols)
			if err != nil {
				return nil, err
			}
			s := decodedSeries{labels: ls, typ: ts.Metadata.Type}
			for _, smp := range ts.Samples {
				s.t = append(s.t, smp.Timestamp)
				s.v = append(s.v, smp.Value)
			}
			out = append(out, s)
		}
		return out, nil
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(b); err != nil {
		return nil, err
	}
	for _, ts := range req.Timeseries {
		s := decodedSeries{labels: ts.ToLabels(&sb, nil)}
		for _, smp := range ts.Samples {
			s.t = append(s.t, smp.Timestamp)
			s.v = append(s.v, smp.Value)
		}
		out = append(out, s)
	}
	return out, nil
}

func BenchmarkSeriesSet(b *testing.B) {
	lsets := make([]labels.Labels, 2000)
	for i := range lsets {
		lsets[i] = labels.FromStrings("__name__", "istio_request_duration_milliseconds_bucket", "cluster", "east",
			"connection_security_policy", "unknown", "destination_app", "reviews", "destination_canonical_revision", "v1",
			"destination_canonical_service", "reviews", "destination_cluster", "east", "destination_principal", "spiffe://cluster.local/ns/shop/sa/reviews",
			"destination_service", "reviews.shop.svc.cluster.local", "destination_service_name", "reviews", "destination_service_namespace", "shop",
			"destination_version", "v1", "destination_workload", "reviews-v1", "destination_workload_namespace", "shop",
			"instance", "10.16.1.2:15020", "job", "kubernetes-pods", "le", fmt.Sprint(i%20), "namespace", "shop", "pod", fmt.Sprintf("productpage-v1-%d", i/20),
			"reporter", "source", "request_protocol", "http", "response_code", "200", "response_flags", "-",
			"source_app", "productpage", "source_canonical_revision", "v1", "source_canonical_service", "productpage", "source_cluster", "east",
			"source_principal", "spiffe://cluster.local/ns/shop/sa/productpage", "source_version", "v1", "source_workload", "productpage-v1", "source_workload_namespace", "shop")
	}
	set := NewSeriesSet(lsets, nil)
	vals := make([]float64, len(lsets))
	for _, p := range []Protocol{V1, V2} {
		b.Run(string(p), func(b *testing.B) {
			sc := set.NewScratch()
			var buf []byte
			for i := 0; b.Loop(); i++ {
				if p == V1 {
					buf = set.AppendV1(buf[:0], 0, len(lsets), int64(i), vals)
				} else {
					buf = set.AppendV2(buf[:0], sc, 0, len(lsets), int64(i), vals)
				}
			}
			b.ReportMetric(float64(len(lsets))*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(len(buf)), "bytes/req")
		})
	}
}
