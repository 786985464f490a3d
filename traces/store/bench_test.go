package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/tracestest"
)

func fmtAny(v any) string { return fmt.Sprintf(" %+v", v) }

// benchSpans returns n spans of n/5 traces shaped like an Istio mesh's:
// a resource of 8 attributes shared per service, 10 span attributes.
func benchSpans(n int) []traces.Span {
	res := make([][]traces.Attr, 10)
	for i := range res {
		res[i] = []traces.Attr{
			traces.String("service.name", fmt.Sprintf("svc-%d", i)), traces.String("k8s.namespace.name", "shop"),
			traces.String("k8s.pod.name", fmt.Sprintf("svc-%d-7d9f8c6b5-x2x4z", i)), traces.String("service.version", "v1"),
			traces.String("istio.mesh_id", "mesh1"), traces.String("istio.cluster_id", "east"),
			traces.String("host.name", "node-17"), traces.String("telemetry.sdk.name", "envoy"),
		}
	}
	spans := make([]traces.Span, n)
	for i := range spans {
		svc := i % len(res)
		start := uint64(tracestest.T0.UnixNano()) + uint64(i)*1000
		spans[i] = traces.Span{
			TraceID:       traces.TraceID{1, byte(i / 5), byte(i / 5 >> 8), byte(i / 5 >> 16), 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, byte(i / 5)},
			SpanID:        traces.SpanID{2, byte(i), byte(i >> 8), byte(i >> 16), 3, 3, 3, 3},
			ParentSpanID:  traces.SpanID{2, byte(i - 1), 0, 0, 3, 3, 3, 3},
			Name:          "GET /api/v1/cart/items",
			Kind:          traces.KindServer,
			StartUnixNano: start, EndUnixNano: start + 1_500_000,
			Service: fmt.Sprintf("svc-%d", svc), Resource: res[svc],
			ScopeName: "envoy",
			Attrs: []traces.Attr{
				traces.String("http.method", "GET"), traces.String("http.url", "http://cart.shop.svc.cluster.local/api/v1/cart/items"),
				traces.Int("http.status_code", 200), traces.String("upstream_cluster", "outbound|80||cart.shop.svc.cluster.local"),
				traces.String("node_id", "sidecar~10.1.2.3~cart-7d9f8c6b5-x2x4z.shop~shop.svc.cluster.local"),
				traces.String("zone", "us-east-1a"), traces.String("guid:x-request-id", "4b1c2f6e-8e2a-9c1d-b7f3-5a6e7d8c9b0a"),
				traces.String("response_flags", "-"), traces.String("component", "proxy"), traces.Int("request_size", 512),
			},
		}
	}
	return spans
}

// BenchmarkAppend appends batches of 100 spans from 8 goroutines with the
// WAL fsynced before each Append returns (group commit).
func BenchmarkAppend(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), MaxBlockSpans: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batches := make([][]traces.Span, 64)
	for i := range batches {
		batches[i] = benchSpans(100)
		for j := range batches[i] {
			batches[i][j].TraceID[0] = byte(i)
		}
	}
	var n atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			batch := batches[i%int64(len(batches))]
			if err := s.Append(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(n.Load()*100)/time.Since(start).Seconds(), "spans/s")
}

// BenchmarkTraceFromHead reads a trace of 5 spans from a head of 100,000
// spans.
func BenchmarkTraceFromHead(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), MaxBlockSpans: 1 << 30, Now: func() time.Time { return tracestest.T0 }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	spans := benchSpans(100_000)
	for i := 0; i < len(spans); i += 1000 {
		if err := s.Append(context.Background(), spans[i:i+1000]); err != nil {
			b.Fatal(err)
		}
	}
	id := spans[500].TraceID
	b.ReportAllocs()
	for b.Loop() {
		got, err := s.Trace(context.Background(), id, traces.TimeRange{})
		if err != nil || len(got) != 5 {
			b.Fatal(len(got), err)
		}
	}
}
