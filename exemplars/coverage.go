package exemplars

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"

	exstore "github.com/meshlens/meshlens/exemplars/store"
	"github.com/meshlens/meshlens/traces"
)

// The series the coverage writes. Per destination service they carry
// cluster, destination_service_namespace and destination_service_name (the
// labels the golden pack groups by); per edge also source_workload and
// source_workload_namespace. The counts are of distinct traces, so that
// sum(found)/sum(checked) aggregates the ratio.
const (
	CoverageRatioMetric     = "meshlens_exemplar_trace_coverage_ratio"
	TracesCheckedMetric     = "meshlens_exemplar_traces_checked"
	TracesFoundMetric       = "meshlens_exemplar_traces_found"
	EdgeCoverageRatioMetric = "meshlens_exemplar_edge_trace_coverage_ratio"
	EdgeTracesCheckedMetric = "meshlens_exemplar_edge_traces_checked"
	EdgeTracesFoundMetric   = "meshlens_exemplar_edge_traces_found"
)

// coverageLabels are the labels of the service series, then the two more
// of the edge series, in the order they are read from an exemplar's
// series.
var coverageLabels = [edgeKeyLen]string{
	"cluster", "destination_service_namespace", "destination_service_name",
	"source_workload", "source_workload_namespace",
}

// serviceKey and edgeKey are the values of the first 3 and of all 5
// coverageLabels.
type (
	serviceKey [3]string
	edgeKey    [edgeKeyLen]string
)

const edgeKeyLen = 5

// DefaultCoverageSelectors choose Istio's request-duration histograms, the
// classic buckets and the native histogram, in milliseconds or seconds:
// Envoy attaches the request's trace id to them as an exemplar.
var DefaultCoverageSelectors = [][]*labels.Matcher{{
	labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, "istio_request_duration_(milliseconds|seconds)(_bucket)?"),
}}

// TraceCoverageOptions configure a TraceCoverage. Every zero value stands for the
// default its comment names.
type TraceCoverageOptions struct {
	// Interval is the time between runs; zero means 1m.
	Interval time.Duration
	// Lag is how far behind now a run's window ends: spans arrive after
	// the request whose exemplar names them ends, batched by the proxies.
	// A run covers the exemplars from where the previous run's window
	// ended (the first run: Interval before) to now-Lag. Zero means 1m.
	Lag time.Duration
	// Selectors choose the request exemplars; nil means
	// DefaultCoverageSelectors. Their series must carry the labels of the
	// coverage series; an exemplar of a series without
	// destination_service_name is not counted.
	Selectors [][]*labels.Matcher
	// TraceIDLabels are the exemplar labels that may hold the trace id, in
	// order of preference; nil means exstore.DefaultTraceIDLabels.
	TraceIDLabels []string
	// MaxTraces bounds the distinct traces looked up per run; beyond it a
	// sample chosen by a hash of the trace id is checked (as in the
	// drill-down). Zero means 10,000.
	MaxTraces int
	// TraceWindow is how far before and after an exemplar's time the spans
	// of its trace are looked for; zero means 10m.
	TraceWindow time.Duration
	// Concurrency is how many traces are looked up at once; zero means 4.
	Concurrency int
	// Logger receives a warning for each failed run; nil discards.
	Logger *slog.Logger
	// Metrics receives the self-metrics (meshlens_exemplar_coverage_*);
	// nil means a set of its own.
	Metrics *metrics.Set
}

func (o *TraceCoverageOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.Lag <= 0 {
		o.Lag = time.Minute
	}
	if o.Selectors == nil {
		o.Selectors = DefaultCoverageSelectors
	}
	if o.TraceIDLabels == nil {
		o.TraceIDLabels = exstore.DefaultTraceIDLabels
	}
	if o.MaxTraces <= 0 {
		o.MaxTraces = 10000
	}
	if o.TraceWindow <= 0 {
		o.TraceWindow = 10 * time.Minute
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
}

// TraceCoverage measures, per destination service and per edge, the share
// of the traces named by request exemplars that the span store holds, and
// writes it as series. A group without exemplars in a run's window gets no sample (and
// a staleness marker after one), since no exemplars is not 0% coverage.
type TraceCoverage struct {
	ex     storage.ExemplarQueryable
	traces TraceReader
	app    storage.AppendableV2
	o      TraceCoverageOptions

	runs, failures, lookups, skipped *metrics.Counter
	duration                         *metrics.Histogram

	// Owned by the run loop.
	next    int64                    // ms; where the next window starts, 0 before the first run
	written map[uint64]labels.Labels // series written by the last run, by hash
}

// NewTraceCoverage returns a TraceCoverage of the exemplars of ex by the
// traces of tr, writing to app.
func NewTraceCoverage(ex storage.ExemplarQueryable, tr TraceReader, app storage.AppendableV2, o TraceCoverageOptions) *TraceCoverage {
	o.defaults()
	s := o.Metrics
	return &TraceCoverage{
		ex: ex, traces: tr, app: app, o: o,
		runs:     s.GetOrCreateCounter("meshlens_exemplar_coverage_runs_total"),
		failures: s.GetOrCreateCounter("meshlens_exemplar_coverage_run_failures_total"),
		lookups:  s.GetOrCreateCounter("meshlens_exemplar_coverage_trace_lookups_total"),
		skipped:  s.GetOrCreateCounter("meshlens_exemplar_coverage_traces_skipped_total"),
		duration: s.GetOrCreateHistogram("meshlens_exemplar_coverage_run_duration_seconds"),
		written:  map[uint64]labels.Labels{},
	}
}

// Run measures every Interval until ctx is done. A failed run is logged
// and counted; the next one covers its window too (up to 10 intervals).
func (c *TraceCoverage) Run(ctx context.Context) error {
	tick := time.NewTicker(c.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			if _, err := c.collect(ctx, now); err != nil && ctx.Err() == nil {
				c.o.Logger.Warn("exemplar trace coverage run failed", "err", err)
			}
		}
	}
}

// coverageCounts are the distinct traces of a group's exemplars that were
// looked up and found.
type coverageCounts struct {
	checked, found int
}

// coverageResult is what one run measured, by group.
type coverageResult struct {
	start, end int64 // ms, the window [start, end)
	services   map[serviceKey]*coverageCounts
	edges      map[edgeKey]*coverageCounts
}

// coverageTrace is one trace of the window and the groups of its
// exemplars.
type coverageTrace struct {
	check    traceCheck
	services []*coverageCounts
	edges    []*coverageCounts
}

// collect runs once at now: it measures the window ending at now-Lag and
// writes the series at now.
func (c *TraceCoverage) collect(ctx context.Context, now time.Time) (*coverageResult, error) {
	c.runs.Inc()
	defer c.duration.UpdateDuration(time.Now())
	end := timestamp.FromTime(now.Add(-c.o.Lag))
	start := c.next
	if start == 0 || start >= end {
		start = end - c.o.Interval.Milliseconds()
	}
	start = max(start, end-maxWindowIntervals*c.o.Interval.Milliseconds())
	res, err := c.measure(ctx, start, end)
	if err == nil {
		err = c.write(ctx, timestamp.FromTime(now), res)
	}
	if err != nil {
		if ctx.Err() == nil { // not a shutdown
			c.failures.Inc()
		}
		c.next = start
		return nil, err
	}
	c.next = end
	return res, nil
}

// maxWindowIntervals bounds, in intervals, the window of a run after
// failed runs.
const maxWindowIntervals = 10

// measure reads the exemplars of [start, end) and looks up their traces.
func (c *TraceCoverage) measure(ctx context.Context, start, end int64) (*coverageResult, error) {
	res := &coverageResult{
		start: start, end: end,
		services: map[serviceKey]*coverageCounts{},
		edges:    map[edgeKey]*coverageCounts{},
	}
	eq, err := c.ex.ExemplarQuerier(ctx)
	if err != nil {
		return nil, fmt.Errorf("exemplar querier: %w", err)
	}
	// Select's range is closed.
	sel, err := eq.Select(start, end-1, c.o.Selectors...)
	if err != nil {
		return nil, fmt.Errorf("select exemplars: %w", err)
	}
	byID := map[traces.TraceID]*coverageTrace{}
	for _, qr := range sel {
		var key edgeKey
		for i, name := range coverageLabels {
			key[i] = qr.SeriesLabels.Get(name)
		}
		if key[2] == "" { // destination_service_name
			continue
		}
		for _, e := range qr.Exemplars {
			id, ok := traceIDOf(e.Labels, c.o.TraceIDLabels)
			if !ok {
				continue
			}
			t := byID[id]
			if t == nil {
				t = &coverageTrace{check: traceCheck{id: id, ts: e.Ts}}
				byID[id] = t
			}
			svc := res.services[serviceKey(key[:])]
			if svc == nil {
				svc = &coverageCounts{}
				res.services[serviceKey(key[:])] = svc
			}
			edge := res.edges[key]
			if edge == nil {
				edge = &coverageCounts{}
				res.edges[key] = edge
			}
			// A trace counts once per group, however many of its
			// exemplars (both reporters, several buckets) the group has.
			if !slices.Contains(t.services, svc) {
				t.services = append(t.services, svc)
			}
			if !slices.Contains(t.edges, edge) {
				t.edges = append(t.edges, edge)
			}
		}
	}

	todo := make([]*traceCheck, 0, len(byID))
	for _, t := range byID {
		todo = append(todo, &t.check)
	}
	if len(todo) > c.o.MaxTraces {
		c.skipped.Add(len(todo) - c.o.MaxTraces)
		todo = sampleTraces(todo, c.o.MaxTraces)
	}
	c.lookups.Add(len(todo))
	if err := lookupTraces(ctx, c.traces, todo, c.o.TraceWindow, c.o.Concurrency); err != nil {
		return nil, err
	}
	for _, ch := range todo {
		t := byID[ch.id]
		for _, g := range slices.Concat(t.services, t.edges) {
			g.checked++
			if ch.found {
				g.found++
			}
		}
	}
	// A group whose traces were all left out of the sample was not
	// measured.
	for k, g := range res.services {
		if g.checked == 0 {
			delete(res.services, k)
		}
	}
	for k, g := range res.edges {
		if g.checked == 0 {
			delete(res.edges, k)
		}
	}
	return res, nil
}

// write appends the series of res at ts, and staleness markers for the
// series the previous run wrote and this one does not.
func (c *TraceCoverage) write(ctx context.Context, ts int64, res *coverageResult) error {
	app := c.app.AppenderV2(ctx)
	written := make(map[uint64]labels.Labels, 3*(len(res.services)+len(res.edges)))
	b := labels.NewScratchBuilder(len(coverageLabels) + 1)
	add := func(name string, values []string, v float64) error {
		b.Reset()
		b.Add(labels.MetricName, name)
		for i, val := range values {
			if val != "" {
				b.Add(coverageLabels[i], val)
			}
		}
		b.Sort()
		ls := b.Labels()
		if _, err := app.Append(0, ls, 0, ts, v, nil, nil, storage.AOptions{}); err != nil {
			return fmt.Errorf("append %s: %w", ls, err)
		}
		written[ls.Hash()] = ls
		return nil
	}
	group := func(values []string, g *coverageCounts, ratio, checked, found string) error {
		if err := add(ratio, values, float64(g.found)/float64(g.checked)); err != nil {
			return err
		}
		if err := add(checked, values, float64(g.checked)); err != nil {
			return err
		}
		return add(found, values, float64(g.found))
	}
	err := func() error {
		for k, g := range res.services {
			if err := group(k[:], g, CoverageRatioMetric, TracesCheckedMetric, TracesFoundMetric); err != nil {
				return err
			}
		}
		for k, g := range res.edges {
			if err := group(k[:], g, EdgeCoverageRatioMetric, EdgeTracesCheckedMetric, EdgeTracesFoundMetric); err != nil {
				return err
			}
		}
		for h, ls := range c.written {
			if _, ok := written[h]; ok {
				continue
			}
			if _, err := app.Append(0, ls, 0, ts, math.Float64frombits(value.StaleNaN), nil, nil, storage.AOptions{}); err != nil {
				return fmt.Errorf("append staleness marker of %s: %w", ls, err)
			}
		}
		return nil
	}()
	if err != nil {
		_ = app.Rollback()
		return err
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("commit coverage series: %w", err)
	}
	c.written = written
	return nil
}
