package rw

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
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
				dec := decodeV1
				if p == V2 {
					dec = decodeV2
				}
				got, err := dec(b)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 20 {
					t.Fatalf("got %d series, want 20", len(got))
				}
				for i, s := range got {
					want := fmtLabels(pairsOf(lsets[10+i]))
					if s.Labels != want {
						t.Fatalf("series %d: labels %s, want %s", i, s.Labels, want)
					}
					if len(s.V) != 1 || s.V[0] != vals[i] || s.T[0] != 1000+int64(round) {
						t.Fatalf("series %d: samples %v@%v", i, s.V, s.T)
					}
					if p == V2 && s.Type != uint64(TypeCounter) {
						t.Fatalf("series %d: type %d", i, s.Type)
					}
				}
			}
		})
	}
}

func pairsOf(ls labels.Labels) [][2]string {
	var p [][2]string
	ls.Range(func(l labels.Label) { p = append(p, [2]string{l.Name, l.Value}) })
	return p
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
