// Package aggregate sums counters over the labels a rule drops as samples
// arrive, before they are stored (stream aggregation). A mesh of 10,000
// services sends tens of millions of per-pod Istio series; the alerts and
// dashboards read them summed to workload or service level. Aggregating at
// ingest stores the sums instead of the inputs and keeps per input series
// only its last value.
//
// An output series is a counter: the sum of the increases of its inputs
// (counter resets handled as rate() handles them), written once per
// interval at multiples of the interval. rate(output[5m]) equals
// sum(rate(inputs[5m])) up to Prometheus's extrapolation at the window
// edges. The first sample of an input only sets its base value, as the first
// sample in a rate() window does.
//
// Time is the samples' time, not the wall clock, so backfills aggregate as
// live data does. Each output keeps its own time, the newest sample of its
// inputs: an interval is written once a sample at least FlushDelay newer
// than its end has arrived for the output (and the newest sample of all,
// or the wall clock, has passed that too). So the samples of a sender that
// lags behind the others, such as a Prometheus server replaying its
// backlog, still count in their own intervals. A sample that arrives after
// its interval was written counts in the next one: late data moves, it is
// never dropped. An output that received nothing for the rule's staleness
// interval has its last intervals written and is forgotten, as is an input
// whose newest sample is that much older than its output's (a pod that
// went away).
//
// Aggregation state is in memory: after a restart every output starts from
// zero again (a counter reset to rate()) and the first sample of each input
// sets its base again.
package aggregate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/storage"
)

// Rule is one aggregation.
type Rule struct {
	// Match selects the input series: a series matches when every matcher
	// does. Native histogram samples are never aggregated.
	Match []*labels.Matcher
	// Interval is the output resolution. It must be positive.
	Interval time.Duration
	// By lists the labels the outputs keep (the metric name is always
	// kept); Without lists the labels they drop. At most one is set; with
	// neither, every input is its own output.
	By, Without []string
	// KeepMetricNames names outputs as their inputs. Otherwise an output is
	// named <metric>:<interval>[_by_<labels>|_without_<labels>]_total, as
	// vmagent names its stream aggregation outputs.
	KeepMetricNames bool
	// DropInput stores only the outputs, not the matched input series.
	// Exemplars of dropped inputs are kept on their output.
	DropInput bool
	// Staleness is how long an output is kept after it last received a
	// sample (wall-clock time), and an input after its last sample while
	// its output received newer ones (sample time). Zero means 5m.
	Staleness time.Duration
}

// Options configure an Aggregator.
type Options struct {
	Rules []Rule
	// FlushDelay is how long, in sample time, after an interval ends its
	// outputs are written; samples arriving later are counted in the next
	// interval. Zero writes an interval as soon as a newer sample arrives.
	FlushDelay time.Duration
	Logger     *slog.Logger
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
	// Metrics receives the self-metrics (meshlens_aggregation_*). Nil
	// means a private set that nothing exports.
	Metrics *metrics.Set
}

// shards per rule: inputs are spread over them by their hash, outputs by
// the hash of their labels.
const shards = 16

// Aggregator aggregates the samples appended through it and appends
// everything else, and the outputs, to the next storage.
type Aggregator struct {
	next   storage.AppendableV2
	opts   Options
	rules  []*rule
	logger *slog.Logger
	now    func() time.Time
	m      *aggMetrics

	maxT    atomic.Int64 // newest sample time seen, ms
	flushMu sync.Mutex   // one flush at a time
	scratch sync.Pool    // *scratch of finished appenders

	namesMu sync.RWMutex
	names   map[string]uint64 // metric name -> the name-only rules it matches
}

// maxNames bounds the cache of rule matches by metric name.
const maxNames = 10000

// New returns an aggregator in front of next, whose appenders must accept
// exemplars (storage.ExemplarAppenderV2), as the TSDB head's do.
func New(next storage.AppendableV2, opts Options) (*Aggregator, error) {
	a := &Aggregator{next: next, opts: opts, logger: opts.Logger, now: opts.Now, names: map[string]uint64{}}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	set := opts.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	a.m = newAggMetrics(set)
	if opts.FlushDelay < 0 {
		return nil, fmt.Errorf("flush delay %s must not be negative", opts.FlushDelay)
	}
	for i, r := range opts.Rules {
		ru, err := newRule(r)
		if err != nil {
			return nil, fmt.Errorf("aggregation rule %d: %w", i, err)
		}
		ru.swept, ru.lastWM = minTime, minTime
		ru.m = a.m
		ru.nameOnly = i < 64 && !slices.ContainsFunc(r.Match, func(m *labels.Matcher) bool { return m.Name != labels.MetricName })
		a.rules = append(a.rules, ru)
	}
	a.maxT.Store(minTime)
	return a, nil
}

const minTime = -1 << 62

// AppenderV2 returns an appender that aggregates matched samples when it
// commits and passes the rest to the next storage.
func (a *Aggregator) AppenderV2(ctx context.Context) storage.AppenderV2 {
	sc, _ := a.scratch.Get().(*scratch)
	if sc == nil {
		sc = &scratch{ops: make([][shards][]op, len(a.rules))}
	}
	return &appender{a: a, ctx: ctx, sc: sc, maxT: minTime}
}

// Run writes the outputs of every interval as it becomes due until ctx is
// done, then writes whatever is pending.
func (a *Aggregator) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			a.Flush(context.Background(), true)
			return nil
		case <-tick.C:
			a.Flush(ctx, false)
		}
	}
}

// Flush writes the outputs of the intervals that are due; with all, of
// every interval with samples, due or not (at shutdown).
func (a *Aggregator) Flush(ctx context.Context, all bool) {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	wall := timestamp.FromTime(a.now())
	now := min(a.maxT.Load(), wall)
	for _, r := range a.rules {
		if err := r.flush(ctx, a.next, now, wall, a.opts.FlushDelay.Milliseconds(), all); err != nil {
			a.logger.Error("write aggregated series", "err", err)
		}
	}
}

// Outputs returns the number of output series of every rule.
func (a *Aggregator) Outputs() int {
	n := 0
	for _, r := range a.rules {
		for i := range r.outs {
			s := &r.outs[i]
			s.mu.Lock()
			n += s.n
			s.mu.Unlock()
		}
	}
	return n
}

// aggMetrics are an Aggregator's self-metrics.
type aggMetrics struct {
	// inputSamples counts the samples aggregated (each once per matching rule).
	inputSamples *metrics.Counter
	// ignoredOld and ignoredNaN count inputs left out: not newer than the
	// input's last sample, or NaN (stale markers).
	ignoredOld, ignoredNaN *metrics.Counter
	// outputSamples and outputFailures count the aggregated samples written
	// to the next storage and those it refused.
	outputSamples, outputFailures *metrics.Counter
}

func newAggMetrics(set *metrics.Set) *aggMetrics {
	return &aggMetrics{
		inputSamples:   set.NewCounter(`meshlens_aggregation_input_samples_total`),
		ignoredOld:     set.NewCounter(`meshlens_aggregation_ignored_samples_total{reason="out_of_order"}`),
		ignoredNaN:     set.NewCounter(`meshlens_aggregation_ignored_samples_total{reason="nan"}`),
		outputSamples:  set.NewCounter(`meshlens_aggregation_output_samples_total`),
		outputFailures: set.NewCounter(`meshlens_aggregation_output_failures_total`),
	}
}

// rule is a Rule ready to match and split series.
type rule struct {
	Rule
	names     []string // By (with the metric name) or Without, sorted
	keep      bool     // names are kept (By) rather than dropped
	suffix    string   // ":<interval>_..._total", or "" with KeepMetricNames
	interval  int64    // ms
	staleness int64    // ms
	ins       [shards]inShard
	outs      [shards]outShard
	swept     int64 // wall-clock time of the last sweep of stale inputs
	lastWM    int64 // sample time up to which the last flush wrote
	nameOnly  bool  // every matcher is on the metric name
	m         *aggMetrics
}

func newRule(r Rule) (*rule, error) {
	if r.Interval <= 0 {
		return nil, fmt.Errorf("interval %s must be positive", r.Interval)
	}
	if len(r.By) > 0 && len(r.Without) > 0 {
		return nil, errors.New("set by or without, not both")
	}
	if slices.Contains(r.Without, labels.MetricName) || slices.Contains(r.By, labels.MetricName) {
		return nil, errors.New("the metric name is always kept; do not list __name__")
	}
	if r.Staleness == 0 {
		r.Staleness = 5 * time.Minute
	}
	if r.Staleness < r.Interval {
		return nil, fmt.Errorf("staleness %s must be at least the interval %s", r.Staleness, r.Interval)
	}
	ru := &rule{Rule: r, interval: r.Interval.Milliseconds(), staleness: r.Staleness.Milliseconds()}
	switch {
	case len(r.By) > 0:
		ru.names, ru.keep = append([]string{labels.MetricName}, r.By...), true
	default:
		ru.names = slices.Clone(r.Without)
	}
	sort.Strings(ru.names)
	ru.names = slices.Compact(ru.names)
	if !r.KeepMetricNames {
		ru.suffix = ":" + shortDuration(r.Interval)
		switch {
		case len(r.By) > 0:
			ru.suffix += "_by_" + strings.Join(sortedCopy(r.By), "_")
		case len(r.Without) > 0:
			ru.suffix += "_without_" + strings.Join(sortedCopy(r.Without), "_")
		}
		ru.suffix += "_total"
	}
	for i := range shards {
		ru.ins[i].inputs = map[inputKey]input{}
		ru.outs[i].outputs = map[uint64]*output{}
	}
	return ru, nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

// shortDuration prints 30s, 1m, 1h30m as Prometheus durations do.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// matching reports whether rule i matches ls.
func (a *Aggregator) matching(i int, ls labels.Labels, name string) bool {
	r := a.rules[i]
	if r.nameOnly {
		return a.byName(name)&(1<<i) != 0
	}
	for _, m := range r.Match {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

// byName returns the name-only rules matching a metric name as a bit set,
// remembered for the most common names.
func (a *Aggregator) byName(name string) uint64 {
	a.namesMu.RLock()
	mask, ok := a.names[name]
	a.namesMu.RUnlock()
	if ok {
		return mask
	}
	for i, r := range a.rules {
		if r.nameOnly && r.matchesName(name) {
			mask |= 1 << i
		}
	}
	a.namesMu.Lock()
	if len(a.names) < maxNames {
		a.names[strings.Clone(name)] = mask
	}
	a.namesMu.Unlock()
	return mask
}

func (r *rule) matchesName(name string) bool {
	for _, m := range r.Match {
		if !m.Matches(name) {
			return false
		}
	}
	return true
}

// outputLabels are the labels of the output whose kept labels are ls.
func (r *rule) outputLabels(ls labels.Labels) labels.Labels {
	b := labels.NewBuilder(ls)
	if r.keep {
		b.Keep(r.names...)
	} else {
		b.Del(r.names...)
	}
	if r.suffix != "" {
		b.Set(labels.MetricName, ls.Get(labels.MetricName)+r.suffix)
	}
	return b.Labels()
}

// bucketEnd is the end of the interval (end-interval, end] holding t.
func (r *rule) bucketEnd(t int64) int64 {
	q := t / r.interval
	if q*r.interval < t {
		q++
	}
	return q * r.interval
}
