package exemplars

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/meshlens/meshlens/traces"
)

// requestBucket is a bucket series of Istio's request-duration histogram
// for the edge src → dst (a name in namespace shop of cluster east).
func requestBucket(reporter, src, dst string) labels.Labels {
	return labels.FromStrings("__name__", "istio_request_duration_milliseconds_bucket", "cluster", "east",
		"reporter", reporter, "source_workload", src, "source_workload_namespace", "shop",
		"destination_service_name", dst, "destination_service_namespace", "shop", "destination_service", dst+".shop.svc.cluster.local",
		"le", "500")
}

// addExemplar appends a sample of series at at with an exemplar carrying
// ls; successive calls on one series must go forward in time.
func (f *fixture) addExemplar(t *testing.T, series labels.Labels, at time.Time, ls ...string) {
	t.Helper()
	app := f.db.Appender(context.Background())
	ref, err := app.Append(0, series, at.UnixMilli(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.AppendExemplar(ref, series, exemplar.Exemplar{Labels: labels.FromStrings(ls...), Value: 100, Ts: at.UnixMilli(), HasTs: true}); err != nil {
		t.Fatalf("exemplar %s at %v: %v", series, at, err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

// coverageAt returns the coverage series of the TSDB with a sample at ts,
// by their labels without the name, by name.
func coverageAt(t *testing.T, f *fixture, ts time.Time) map[string]map[string]float64 {
	t.Helper()
	q, err := f.db.Querier(ts.UnixMilli(), ts.UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string]map[string]float64{}
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", "meshlens_exemplar_.*"))
	for ss.Next() {
		s := ss.At()
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			_, v := it.At()
			name := s.Labels().Get("__name__")
			if out[name] == nil {
				out[name] = map[string]float64{}
			}
			out[name][labels.NewBuilder(s.Labels()).Del("__name__").Labels().String()] = v
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

const (
	svcA   = `{cluster="east", destination_service_name="a", destination_service_namespace="shop"}`
	svcB   = `{cluster="east", destination_service_name="b", destination_service_namespace="shop"}`
	edgeFA = `{cluster="east", destination_service_name="a", destination_service_namespace="shop", source_workload="frontend", source_workload_namespace="shop"}`
	edgeCA = `{cluster="east", destination_service_name="a", destination_service_namespace="shop", source_workload="cart", source_workload_namespace="shop"}`
	edgeFB = `{cluster="east", destination_service_name="b", destination_service_namespace="shop", source_workload="frontend", source_workload_namespace="shop"}`
)

func TestTraceCoverage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := f.now
	// The first run at now covers [now-2m, now-1m).
	w := now.Add(-2 * time.Minute)
	id := func(n int) []string { return []string{"trace_id", traceID(n).String()} }
	for _, n := range []int{1, 2, 3, 5, 7} {
		if err := f.spans.Append(ctx, checkoutTrace(traceID(n), w, 1, false)); err != nil {
			t.Fatal(err)
		}
	}
	// Service a: traces 1-4, 1-3 stored. frontend → a: 1 and 2 (1 from
	// both reporters and in two exemplars of the destination's); cart → a:
	// 3 and 4.
	fa, fad, ca := requestBucket("source", "frontend", "a"), requestBucket("destination", "frontend", "a"), requestBucket("source", "cart", "a")
	f.addExemplar(t, fa, w.Add(1*time.Second), id(1)...)
	f.addExemplar(t, fad, w.Add(2*time.Second), id(1)...)
	f.addExemplar(t, fad, w.Add(3*time.Second), id(1)...)
	f.addExemplar(t, fa, w.Add(4*time.Second), "traceId", traceID(2).String())
	f.addExemplar(t, ca, w.Add(5*time.Second), id(3)...)
	f.addExemplar(t, ca, w.Add(6*time.Second), id(4)...)
	// Service b: traces 6 and 8, neither stored. Trace 7 (stored) and 9
	// come at now-1m and now-30s: in the next window.
	fb := requestBucket("source", "frontend", "b")
	f.addExemplar(t, fb, w.Add(10*time.Second), id(6)...)
	f.addExemplar(t, fb, w.Add(11*time.Second), id(8)...)
	f.addExemplar(t, fb, now.Add(-time.Minute), id(7)...)
	f.addExemplar(t, fb, now.Add(-30*time.Second), id(9)...)
	// Service c: exemplars without a (valid) trace id in the window, one
	// with a stored trace before it: no series.
	fc := requestBucket("source", "frontend", "c")
	f.addExemplar(t, fc, w.Add(-time.Second), id(5)...)
	f.addExemplar(t, fc, w.Add(20*time.Second), "span_id", "0000000000000005")
	f.addExemplar(t, fc, w.Add(21*time.Second), "trace_id", "not-hex")
	// Another metric and a series without destination_service_name.
	f.addExemplar(t, labels.FromStrings("__name__", "other_bucket", "destination_service_name", "a", "le", "1"), w.Add(30*time.Second), id(4)...)
	f.addExemplar(t, labels.FromStrings("__name__", "istio_request_duration_milliseconds_bucket", "le", "1"), w.Add(31*time.Second), id(4)...)

	set := metrics.NewSet()
	c := NewTraceCoverage(f.db, f.spans, f.db, TraceCoverageOptions{Metrics: set})
	if _, err := c.collect(ctx, now); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]float64{
		CoverageRatioMetric:     {svcA: 0.75, svcB: 0},
		TracesCheckedMetric:     {svcA: 4, svcB: 2},
		TracesFoundMetric:       {svcA: 3, svcB: 0},
		EdgeCoverageRatioMetric: {edgeFA: 1, edgeCA: 0.5, edgeFB: 0},
		EdgeTracesCheckedMetric: {edgeFA: 2, edgeCA: 2, edgeFB: 2},
		EdgeTracesFoundMetric:   {edgeFA: 2, edgeCA: 1, edgeFB: 0},
	}
	checkSeries(t, coverageAt(t, f, now), want)
	if got := set.GetOrCreateCounter("meshlens_exemplar_coverage_trace_lookups_total").Get(); got != 6 {
		t.Errorf("lookups %d, want 6 (traces 1-4, 6, 8)", got)
	}

	// The next run covers [now-1m, now): b's traces 7 (stored) and 9; a
	// has no exemplars and its series go stale.
	next := now.Add(time.Minute)
	if _, err := c.collect(ctx, next); err != nil {
		t.Fatal(err)
	}
	got := coverageAt(t, f, next)
	checkSeries(t, got, map[string]map[string]float64{
		CoverageRatioMetric:     {svcA: stale, svcB: 0.5},
		TracesCheckedMetric:     {svcA: stale, svcB: 2},
		TracesFoundMetric:       {svcA: stale, svcB: 1},
		EdgeCoverageRatioMetric: {edgeFA: stale, edgeCA: stale, edgeFB: 0.5},
		EdgeTracesCheckedMetric: {edgeFA: stale, edgeCA: stale, edgeFB: 2},
		EdgeTracesFoundMetric:   {edgeFA: stale, edgeCA: stale, edgeFB: 1},
	})
	if got := set.GetOrCreateCounter("meshlens_exemplar_coverage_runs_total").Get(); got != 2 {
		t.Errorf("runs %d, want 2", got)
	}
}

// stale stands for a staleness marker in checkSeries.
var stale = math.Float64frombits(value.StaleNaN)

func checkSeries(t *testing.T, got, want map[string]map[string]float64) {
	t.Helper()
	for name, ws := range want {
		for ls, w := range ws {
			g, ok := got[name][ls]
			switch {
			case !ok:
				t.Errorf("%s%s: no sample, want %g", name, ls, w)
			case value.IsStaleNaN(w) != value.IsStaleNaN(g) || !value.IsStaleNaN(w) && !near(g, w):
				t.Errorf("%s%s = %g, want %g", name, ls, g, w)
			}
		}
		for ls, g := range got[name] {
			if _, ok := ws[ls]; !ok {
				t.Errorf("unexpected %s%s = %g", name, ls, g)
			}
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected series %s: %v", name, got[name])
		}
	}
}

// TestTraceCoverageSample bounds the lookups of a run: of 10 traces of one
// service, 4 chosen by the hash of their id are checked.
func TestTraceCoverageSample(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	w := f.now.Add(-2 * time.Minute)
	fa := requestBucket("source", "frontend", "a")
	var stored int
	for n := 1; n <= 10; n++ {
		if n%2 == 0 {
			stored++
			if err := f.spans.Append(ctx, checkoutTrace(traceID(n), w, 1, false)); err != nil {
				t.Fatal(err)
			}
		}
		f.addExemplar(t, fa, w.Add(time.Duration(n)*time.Second), "trace_id", traceID(n).String())
	}
	set := metrics.NewSet()
	c := NewTraceCoverage(f.db, f.spans, f.db, TraceCoverageOptions{MaxTraces: 4, Metrics: set})
	res, err := c.collect(ctx, f.now)
	if err != nil {
		t.Fatal(err)
	}
	g := res.services[serviceKey{"east", "shop", "a"}]
	if g == nil || g.checked != 4 || g.found > 4 {
		t.Fatalf("service a: %+v, want 4 checked", g)
	}
	if n := set.GetOrCreateCounter("meshlens_exemplar_coverage_traces_skipped_total").Get(); n != 6 {
		t.Errorf("skipped %d, want 6", n)
	}
	if n := set.GetOrCreateCounter("meshlens_exemplar_coverage_trace_lookups_total").Get(); n != 4 {
		t.Errorf("lookups %d, want 4", n)
	}
	// The same sample every time: the found count is that of the chosen
	// ids.
	var checks []*traceCheck
	for n := 1; n <= 10; n++ {
		checks = append(checks, &traceCheck{id: traceID(n)})
	}
	found := 0
	for _, ch := range sampleTraces(checks, 4) {
		for n := 2; n <= 10; n += 2 {
			if ch.id == traceID(n) {
				found++
			}
		}
	}
	if g.found != found {
		t.Errorf("found %d of the sample, want %d", g.found, found)
	}
}

// failingReader fails every lookup.
type failingReader struct{}

func (failingReader) Trace(context.Context, traces.TraceID, traces.TimeRange) ([]traces.Span, error) {
	return nil, errors.New("bucket unreachable")
}

// TestTraceCoverageFailure: a failed lookup fails the run, writes nothing,
// is counted, and the next run covers the failed run's window too.
func TestTraceCoverageFailure(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	w := f.now.Add(-2 * time.Minute)
	f.addExemplar(t, requestBucket("source", "frontend", "a"), w.Add(time.Second), "trace_id", traceID(1).String())
	set := metrics.NewSet()
	c := NewTraceCoverage(f.db, failingReader{}, f.db, TraceCoverageOptions{Metrics: set})
	if _, err := c.collect(ctx, f.now); err == nil || !strings.Contains(err.Error(), "bucket unreachable") {
		t.Fatalf("run error %v, want the lookup's", err)
	}
	if n := set.GetOrCreateCounter("meshlens_exemplar_coverage_run_failures_total").Get(); n != 1 {
		t.Errorf("failures %d, want 1", n)
	}
	if got := coverageAt(t, f, f.now); len(got) != 0 {
		t.Errorf("series written by a failed run: %v", got)
	}
	// The span store answers again; the next run's window starts where
	// the last successful one ended: the first one's start.
	c.traces = f.spans
	res, err := c.collect(ctx, f.now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res.start != w.UnixMilli() || res.end != f.now.UnixMilli() {
		t.Errorf("window [%d, %d), want [%d, %d)", res.start, res.end, w.UnixMilli(), f.now.UnixMilli())
	}
	if g := res.services[serviceKey{"east", "shop", "a"}]; g == nil || g.checked != 1 || g.found != 0 {
		t.Errorf("service a: %+v, want 1 checked, 0 found", g)
	}
}
