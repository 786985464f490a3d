// Package sim simulates the metrics and spans of a service mesh: what the
// per-cluster Prometheus servers would remote-write after scraping the
// Envoy sidecars, istiod and kube-state-metrics, and what the sidecars
// would send to a trace collector. Output is deterministic for a topology,
// start time and scenario.
package sim

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
	"github.com/meshlens/meshlens/internal/scenario"
)

// Ref identifies a series of a Sim.
type Ref uint32

// DefaultStart is the time of step 0 when Options.Start is zero.
var DefaultStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// StaleNaN is Prometheus's staleness marker.
var StaleNaN = math.Float64frombits(0x7ff0000000000002)

// Options configure a Sim.
type Options struct {
	Topology *topology.Topology
	// Scenario schedules faults; nil means a healthy mesh.
	Scenario *scenario.Scenario
	// Start is the time of step 0; zero means DefaultStart.
	Start time.Time
	// Interval is the scrape interval; zero means 15s.
	Interval time.Duration
	// TraceSampling is the fraction of requests traced; zero means 0.01,
	// negative means no traces.
	TraceSampling float64
	// MaxTracesPerStep caps the sampled traces per cluster and step; zero
	// means 200.
	MaxTracesPerStep int
	// MaxSpansPerTrace caps the size of one trace; zero means 300.
	MaxSpansPerTrace int
	// Mesh selects the proxies' metrics; zero means MeshIstio.
	Mesh Mesh
}

// Sample is one value of one series.
type Sample struct {
	Ref Ref
	T   int64 // milliseconds since the epoch
	V   float64
}

// Exemplar is attached to a histogram bucket series and names the span of
// one sampled request.
type Exemplar struct {
	Ref     Ref
	T       int64
	V       float64
	TraceID TraceID
	SpanID  SpanID
}

// Batch is the output of one step. Its slices are reused by the next Step.
type Batch struct {
	Step int
	// Time is the scrape time of the step (targets are scraped at a fixed
	// offset before it).
	Time time.Time
	// Samples and Exemplars are indexed by cluster. A silent cluster has none.
	Samples   [][]Sample
	Exemplars [][]Exemplar
	Spans     []Span
}

type seriesMeta struct {
	target int32
	typ    MetricType
	live   bool // created (Envoy creates request stats on first request)
}

type targetKind uint8

const (
	tkSidecar targetKind = iota
	tkIstiod
	tkKSM
)

type target struct {
	kind      targetKind
	cluster   int
	job       string
	instance  string
	namespace string
	pod       string
	ip        string
	extra     []labels.Label // more target labels (Linkerd's pod labels), sorted
	offset    int64          // ms before the step time at which it is scraped
	service   int
	version   int
	up        Ref
	base      Ref // istiod: first istiod series; sidecar: its certificate gauge
	restarts  Ref // sidecar: kube_pod_container_status_restarts_total (on the KSM target)
	refs      []Ref
	wasDown   bool
	certPhase float64
}

// Sim is a running simulation. It is not safe for concurrent use.
type Sim struct {
	opts     Options
	linkerd  bool
	topo     *topology.Topology
	traffic  *topology.Traffic
	seed     uint64
	interval time.Duration
	step     int

	lsets []labels.Labels
	meta  []seriesMeta
	vals  []float64
	frac  []float64 // fractional part of counters

	targets []target
	// pods[service][cluster][version] lists sidecar target ids.
	pods    [][][][]int32
	istiod  []int32 // per cluster
	ksm     []int32 // per cluster
	flows   []flow
	flowsTo [][]int32 // flow ids per destination service
	// flowsFrom maps (edge, src cluster, src version) to flow ids.
	flowsFrom map[[3]int32][]int32
	groups    map[groupKey]Ref
	pending   map[groupKey]float64 // requests counted before a group exists
	upstreams map[[2]int32]Ref     // (src target, dst service) -> first envoy upstream series
	// Linkerd series groups and the requests counted before they exist.
	lkGroups  map[lkKey]Ref
	lkPending map[lkKey]float64

	eff     []effect // per flow, for the current step
	state   stepState
	batch   Batch
	exByRef map[Ref]Exemplar
	spanBuf []Span
	scratch labels.ScratchBuilder
}

type flow struct {
	topology.Flow
	tcp     bool
	grpc    bool
	srcPods []int32
	dstPods []int32
	// fractions for the current step, used by traces
	src [numOutcomes]float64
	dst [numOutcomes]float64
}

type groupKey struct {
	flow  int32
	pod   int32 // target id of the reporting pod
	oc    outcome
	dst   bool // reporter=destination
	plain bool // plaintext (mTLS off)
}

// ErrNoTopology is returned by New without a topology.
var ErrNoTopology = errors.New("sim: no topology")

// New builds the simulation: targets, pods and the series that exist from
// the start (gauges, control plane, Envoy cluster stats).
func New(opts Options) (*Sim, error) {
	if opts.Topology == nil {
		return nil, ErrNoTopology
	}
	if opts.Start.IsZero() {
		opts.Start = DefaultStart
	}
	if opts.Interval == 0 {
		opts.Interval = 15 * time.Second
	}
	if opts.Interval < time.Second {
		return nil, fmt.Errorf("sim: interval %s below 1s (--interval)", opts.Interval)
	}
	if opts.TraceSampling == 0 {
		opts.TraceSampling = 0.01
	}
	if opts.TraceSampling > 1 {
		return nil, fmt.Errorf("sim: trace sampling %v above 1 (--trace-sampling)", opts.TraceSampling)
	}
	if opts.MaxTracesPerStep == 0 {
		opts.MaxTracesPerStep = 200
	}
	if opts.MaxSpansPerTrace == 0 {
		opts.MaxSpansPerTrace = 300
	}
	if opts.Mesh == "" {
		opts.Mesh = MeshIstio
	}
	if _, err := ParseMesh(string(opts.Mesh)); err != nil {
		return nil, err
	}
	if opts.Scenario != nil {
		if err := opts.Scenario.Bind(opts.Topology); err != nil {
			return nil, err
		}
	}
	t := opts.Topology
	s := &Sim{
		// One symbol table for every series: built with -tags dedupelabels,
		// a label set is then a few bytes per label (a mesh of 10,000
		// services fits in memory); the default build ignores it.
		scratch:   labels.NewScratchBuilderWithSymbolTable(labels.NewSymbolTable(), 40),
		opts:      opts,
		topo:      t,
		traffic:   t.Traffic(),
		seed:      uint64(t.Seed),
		interval:  opts.Interval,
		flowsFrom: make(map[[3]int32][]int32),
		groups:    make(map[groupKey]Ref),
		pending:   make(map[groupKey]float64),
		upstreams: make(map[[2]int32]Ref),
		exByRef:   make(map[Ref]Exemplar),
		linkerd:   opts.Mesh == MeshLinkerd,
		lkGroups:  make(map[lkKey]Ref),
		lkPending: make(map[lkKey]float64),
	}
	nc := len(t.Clusters)
	s.batch.Samples = make([][]Sample, nc)
	s.batch.Exemplars = make([][]Exemplar, nc)
	s.buildTargets()
	s.buildFlows()
	return s, nil
}

// Topology returns the simulated mesh.
func (s *Sim) Topology() *topology.Topology { return s.topo }

// Interval returns the scrape interval.
func (s *Sim) Interval() time.Duration { return s.interval }

// NumSeries returns the number of series created so far.
func (s *Sim) NumSeries() int { return len(s.lsets) }

// Labels returns the labels of a series.
func (s *Sim) Labels(r Ref) labels.Labels { return s.lsets[r] }

// Type returns the metric type of a series.
func (s *Sim) Type(r Ref) MetricType { return s.meta[r].typ }

// Cluster returns the cluster index of a series.
func (s *Sim) Cluster(r Ref) int { return s.targets[s.meta[r].target].cluster }

// Value returns the current value of a series.
func (s *Sim) Value(r Ref) float64 { return s.vals[r] }

// StepTime returns the time of step i.
func (s *Sim) StepTime(i int) time.Time {
	return s.opts.Start.Add(time.Duration(i) * s.interval)
}

// newSeries registers a series of target tg. lbls are name/value pairs
// beyond the target labels; the first pair is __name__.
func (s *Sim) newSeries(tg int32, typ MetricType, live bool, lbls ...string) Ref {
	return s.addSeries(tg, typ, live, s.baseLabels(tg, lbls[2:]...), lbls[1], "")
}

// baseLabels returns the sorted labels of a series of target tg without
// __name__: the target labels and lbls (name/value pairs; empty values
// are dropped). Series that carry their own namespace/pod (from
// kube-state-metrics, honor_labels) keep them.
func (s *Sim) baseLabels(tg int32, lbls ...string) labels.Labels {
	t := &s.targets[tg]
	b := make([]labels.Label, 0, len(lbls)/2+5)
	for i := 0; i+1 < len(lbls); i += 2 {
		if lbls[i+1] == "" {
			continue
		}
		b = append(b, labels.Label{Name: lbls[i], Value: lbls[i+1]})
	}
	has := func(n string) bool {
		for _, l := range b {
			if l.Name == n {
				return true
			}
		}
		return false
	}
	b = append(b, labels.Label{Name: "cluster", Value: s.topo.Clusters[t.cluster]},
		labels.Label{Name: "instance", Value: t.instance},
		labels.Label{Name: "job", Value: t.job})
	for _, l := range t.extra {
		if !has(l.Name) {
			b = append(b, l)
		}
	}
	if !has("namespace") {
		b = append(b, labels.Label{Name: "namespace", Value: t.namespace})
	}
	if !has("pod") {
		b = append(b, labels.Label{Name: "pod", Value: t.pod})
	}
	return labels.New(b...)
}

// addSeries registers a series with the sorted base labels plus __name__
// and, if not empty, le.
func (s *Sim) addSeries(tg int32, typ MetricType, live bool, base labels.Labels, name, le string) Ref {
	s.scratch.Reset()
	s.scratch.Add("__name__", name)
	added := le == ""
	base.Range(func(l labels.Label) {
		if !added && l.Name > "le" {
			s.scratch.Add("le", le)
			added = true
		}
		s.scratch.Add(l.Name, l.Value)
	})
	if !added {
		s.scratch.Add("le", le)
	}
	r := Ref(len(s.lsets))
	s.lsets = append(s.lsets, s.scratch.Labels())
	s.meta = append(s.meta, seriesMeta{target: tg, typ: typ, live: live})
	s.vals = append(s.vals, 0)
	s.frac = append(s.frac, 0)
	s.targets[tg].refs = append(s.targets[tg].refs, r)
	return r
}

// newHistogram registers the series of a classic histogram and returns the
// ref of its first bucket.
func (s *Sim) newHistogram(tg int32, live bool, name string, buckets []float64, lbls ...string) Ref {
	return s.newHistogramFrom(tg, live, name, buckets, s.baseLabels(tg, lbls...))
}

func (s *Sim) newHistogramFrom(tg int32, live bool, name string, buckets []float64, base labels.Labels) Ref {
	first := Ref(len(s.lsets))
	for _, le := range buckets {
		s.addSeries(tg, Histogram, live, base, name+"_bucket", formatLe(le))
	}
	s.addSeries(tg, Histogram, live, base, name+"_bucket", "+Inf")
	s.addSeries(tg, Histogram, live, base, name+"_sum", "")
	s.addSeries(tg, Histogram, live, base, name+"_count", "")
	return first
}

// addCount adds x to a counter keeping the fraction, so counters stay
// integers and do not drift, and returns the whole-number increment.
func (s *Sim) addCount(r Ref, x float64) float64 {
	if x <= 0 {
		return 0
	}
	v := s.frac[r] + x
	n := math.Floor(v)
	s.frac[r] = v - n
	s.vals[r] += n
	return n
}

// observe records n observations of a log-normal distribution into the
// histogram at base. Small counts are drawn one by one; large counts are
// spread by the distribution function.
func (s *Sim) observe(base Ref, buckets []float64, n, median, sigma float64, rs *stream) {
	if n <= 0 {
		return
	}
	nb := len(buckets)
	if n <= 32 {
		sum := 0.0
		for range int(n) {
			v := rs.lognormal(median, sigma)
			sum += v
			for i := nb - 1; i >= 0 && v <= buckets[i]; i-- {
				s.vals[base+Ref(i)]++
			}
		}
		s.vals[base+Ref(nb)] += n
		s.vals[base+Ref(nb+1)] += sum
		s.vals[base+Ref(nb+2)] += n
		return
	}
	for i, le := range buckets {
		s.vals[base+Ref(i)] += math.Round(n * lognormalCDF(le, median, sigma))
	}
	s.vals[base+Ref(nb)] += n
	s.vals[base+Ref(nb+1)] += n * lognormalMean(median, sigma)
	s.vals[base+Ref(nb+2)] += n
}

// setLive marks the series of a group created.
func (s *Sim) setLive(base Ref, n int) {
	for i := range n {
		s.meta[base+Ref(i)].live = true
	}
}

// resetTarget zeroes the counters and histograms of a target (a restart).
func (s *Sim) resetTarget(tg int32) {
	for _, r := range s.targets[tg].refs {
		if s.meta[r].typ != Gauge {
			s.vals[r] = 0
			s.frac[r] = 0
		}
	}
}

// Step advances the simulation by one scrape interval and returns what the
// Prometheus servers and sidecars send for it.
func (s *Sim) Step() *Batch {
	now := s.StepTime(s.step)
	off := time.Duration(s.step) * s.interval
	s.computeState(off)
	s.updateTraffic(now)
	s.updateControlPlane(now, off)
	spans := s.generateTraces(now)
	s.emit(now, spans)
	s.step++
	return &s.batch
}

// emit fills the batch with the samples of every live series of every
// target that is up, staleness markers for targets that went down, and
// up for every target.
func (s *Sim) emit(now time.Time, spans []Span) {
	ms := now.UnixMilli()
	b := &s.batch
	b.Step = s.step
	b.Time = now
	b.Spans = spans
	for c := range b.Samples {
		b.Samples[c] = b.Samples[c][:0]
		b.Exemplars[c] = b.Exemplars[c][:0]
	}
	for ti := range s.targets {
		t := &s.targets[ti]
		if s.state.silent[t.cluster] {
			continue
		}
		ts := ms - t.offset
		down := s.state.down[ti]
		out := b.Samples[t.cluster]
		switch {
		case down && !t.wasDown:
			for _, r := range t.refs {
				if s.meta[r].live && r != t.up {
					out = append(out, Sample{Ref: r, T: ts, V: StaleNaN})
				}
			}
		case !down:
			for _, r := range t.refs {
				if s.meta[r].live && r != t.up {
					out = append(out, Sample{Ref: r, T: ts, V: s.vals[r]})
				}
			}
		}
		upv := 1.0
		if down {
			upv = 0
		}
		out = append(out, Sample{Ref: t.up, T: ts, V: upv})
		b.Samples[t.cluster] = out
		t.wasDown = down
	}
	for r, e := range s.exByRef {
		t := &s.targets[s.meta[r].target]
		if s.state.silent[t.cluster] || s.state.down[s.meta[r].target] || !s.meta[r].live {
			continue
		}
		b.Exemplars[t.cluster] = append(b.Exemplars[t.cluster], e)
	}
	clear(s.exByRef)
	for c := range b.Exemplars {
		sortExemplars(b.Exemplars[c])
	}
}

func sortExemplars(ex []Exemplar) {
	slices.SortFunc(ex, func(a, b Exemplar) int { return cmp.Compare(a.Ref, b.Ref) })
}
