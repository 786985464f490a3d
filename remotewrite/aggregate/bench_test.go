package aggregate

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// istioSeries returns n label sets shaped like Istio's per-pod request
// series (32 labels), four pods per output.
func istioSeries(n int) []labels.Labels {
	out := make([]labels.Labels, n)
	for i := range out {
		edge, pod := i/4, i%4
		out[i] = labels.FromStrings(
			"__name__", "istio_requests_total", "cluster", "east", "connection_security_policy", "mutual_tls",
			"destination_app", fmt.Sprint("svc-", edge%997), "destination_canonical_revision", "v1",
			"destination_canonical_service", fmt.Sprint("svc-", edge%997), "destination_cluster", "east",
			"destination_principal", fmt.Sprint("spiffe://cluster.local/ns/team/sa/svc-", edge%997),
			"destination_service", fmt.Sprint("svc-", edge%997, ".team.svc.cluster.local"),
			"destination_service_name", fmt.Sprint("svc-", edge%997), "destination_service_namespace", "team",
			"destination_version", "v1", "destination_workload", fmt.Sprint("svc-", edge%997, "-v1"),
			"destination_workload_namespace", "team", "grpc_response_status", "", "instance", fmt.Sprintf("10.%d.%d.%d:15020", pod, edge/256%256, edge%256),
			"job", "envoy-stats", "namespace", "team", "pod", fmt.Sprintf("svc-%d-v1-5d9c7b-%d", edge, pod), "reporter", "destination",
			"request_protocol", "http", "response_code", fmt.Sprint(200+edge%3), "response_flags", "-",
			"source_app", fmt.Sprint("caller-", edge/997), "source_canonical_revision", "v1", "source_canonical_service", fmt.Sprint("caller-", edge/997),
			"source_cluster", "east", "source_principal", fmt.Sprint("spiffe://cluster.local/ns/team/sa/caller-", edge/997),
			"source_version", "v1", "source_workload", fmt.Sprint("caller-", edge/997, "-v1"), "source_workload_namespace", "team")
	}
	return out
}

type discard struct{}

func (discard) AppenderV2(context.Context) storage.AppenderV2 { return discardApp{} }

type discardApp struct{ storage.ExemplarAppenderV2 }

func (discardApp) Append(storage.SeriesRef, labels.Labels, int64, int64, float64, *histogram.Histogram, *histogram.FloatHistogram, storage.AOptions) (storage.SeriesRef, error) {
	return 1, nil
}
func (discardApp) Commit() error   { return nil }
func (discardApp) Rollback() error { return nil }

// BenchmarkAppend measures the ingest cost of a sample of an aggregated,
// dropped input: splitting its labels, finding its input and output, adding
// the increase. Reports bytes of state per input series.
func BenchmarkAppend(b *testing.B) {
	const inputs = 200000
	lsets := istioSeries(inputs)
	a, err := New(discard{}, Options{Rules: []Rule{istioRule(true, true)}, Now: func() time.Time { return time.UnixMilli(1 << 50) }})
	if err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	round := func(r int) {
		for lo := 0; lo < inputs; lo += 2000 {
			app := a.AppenderV2(context.Background())
			for i := lo; i < lo+2000; i++ {
				_, _ = app.Append(0, lsets[i], 0, int64(r)*15000, float64(r*i), nil, nil, storage.AOptions{})
			}
			_ = app.Commit()
		}
		a.Flush(context.Background(), false)
	}
	round(0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ResetTimer()
	r := 1
	for n := 0; n < b.N; n += inputs {
		round(r)
		r++
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max((r-1)*inputs, 1)), "ns/sample")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/inputs, "state-bytes/input")
	b.ReportMetric(float64(a.Outputs()), "outputs")
}
