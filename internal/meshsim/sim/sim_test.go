package sim

import (
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

func newSim(t testing.TB, opts topology.Options, so Options) *Sim {
	t.Helper()
	topo, err := topology.Generate(opts)
	if err != nil {
		t.Fatal(err)
	}
	so.Topology = topo
	s, err := New(so)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run steps the sim and returns the last batch and every emitted sample
// value per ref, in step order.
func run(s *Sim, steps int) (*Batch, map[Ref][]Sample) {
	hist := make(map[Ref][]Sample)
	var b *Batch
	for range steps {
		b = s.Step()
		for _, c := range b.Samples {
			for _, smp := range c {
				hist[smp.Ref] = append(hist[smp.Ref], smp)
			}
		}
	}
	return b, hist
}

func names(ls labels.Labels) []string {
	var out []string
	ls.Range(func(l labels.Label) { out = append(out, l.Name) })
	return out
}

func TestIstioLabelSet(t *testing.T) {
	s := newSim(t, topology.Options{Seed: 3}, Options{TraceSampling: -1})
	run(s, 8)
	want := func(extra []string, drop ...string) []string {
		out := []string{"__name__"}
		for _, l := range IstioLabels {
			if !slices.Contains(drop, l) {
				out = append(out, l)
			}
		}
		out = append(out, TargetLabels...)
		out = append(out, extra...)
		sort.Strings(out)
		return out
	}
	seen := map[string]int{}
	for r := range Ref(s.NumSeries()) {
		ls := s.Labels(r)
		name := ls.Get("__name__")
		var exp []string
		switch {
		case strings.HasPrefix(name, "istio_tcp_"):
			exp = want(nil, "response_code", "grpc_response_status")
		case strings.HasPrefix(name, "istio_request") || strings.HasPrefix(name, "istio_response"):
			var extra []string
			if strings.HasSuffix(name, "_bucket") {
				extra = []string{"le"}
			}
			if ls.Get("request_protocol") == "grpc" {
				exp = want(extra)
			} else {
				exp = want(extra, "grpc_response_status")
			}
		default:
			if ls.Get("cluster") == "" || ls.Get("job") == "" || ls.Get("instance") == "" {
				t.Fatalf("series without target labels: %s", ls)
			}
			continue
		}
		seen[name]++
		if got := names(ls); !slices.Equal(got, exp) {
			t.Fatalf("%s\n got labels %v\nwant %v", ls, got, exp)
		}
		rep := ls.Get("reporter")
		if rep != "source" && rep != "destination" {
			t.Fatalf("reporter %q", rep)
		}
		if pol := ls.Get("connection_security_policy"); (rep == "source") != (pol == "unknown") {
			t.Fatalf("reporter %s with connection_security_policy %s", rep, pol)
		}
	}
	for _, n := range []string{"istio_requests_total", "istio_request_duration_milliseconds_bucket", "istio_request_bytes_sum", "istio_response_bytes_count", "istio_tcp_sent_bytes_total"} {
		if seen[n] == 0 {
			t.Errorf("no %s series", n)
		}
	}
}

// histKey identifies a histogram: its labels without le and the suffix.
func histKey(ls labels.Labels) (string, string) {
	name := ls.Get("__name__")
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(name, suf) {
			b := labels.NewBuilder(ls)
			b.Del("le")
			b.Set("__name__", strings.TrimSuffix(name, suf))
			return b.Labels().String(), suf
		}
	}
	return "", ""
}

func TestHistogramsConsistent(t *testing.T) {
	s := newSim(t, topology.Options{Seed: 5}, Options{TraceSampling: -1})
	b, _ := run(s, 12)
	type hist struct {
		buckets    map[float64]float64
		sum, count float64
		hasCount   bool
	}
	hs := map[string]*hist{}
	for _, c := range b.Samples {
		for _, smp := range c {
			if s.Type(smp.Ref) != Histogram {
				continue
			}
			ls := s.Labels(smp.Ref)
			k, suf := histKey(ls)
			h := hs[k]
			if h == nil {
				h = &hist{buckets: map[float64]float64{}}
				hs[k] = h
			}
			switch suf {
			case "_bucket":
				le, err := strconv.ParseFloat(ls.Get("le"), 64)
				if err != nil {
					t.Fatal(err)
				}
				h.buckets[le] = smp.V
			case "_sum":
				h.sum = smp.V
			case "_count":
				h.count, h.hasCount = smp.V, true
			}
		}
	}
	if len(hs) < 100 {
		t.Fatalf("only %d histograms", len(hs))
	}
	for k, h := range hs {
		les := make([]float64, 0, len(h.buckets))
		for le := range h.buckets {
			les = append(les, le)
		}
		sort.Float64s(les)
		if !h.hasCount || !math.IsInf(les[len(les)-1], 1) {
			t.Fatalf("%s: missing _count or +Inf bucket", k)
		}
		for i := 1; i < len(les); i++ {
			if h.buckets[les[i]] < h.buckets[les[i-1]] {
				t.Fatalf("%s: bucket le=%v (%v) below le=%v (%v)", k, les[i], h.buckets[les[i]], les[i-1], h.buckets[les[i-1]])
			}
		}
		if inf := h.buckets[math.Inf(1)]; inf != h.count {
			t.Fatalf("%s: +Inf bucket %v != count %v", k, inf, h.count)
		}
		if h.sum < 0 || (h.count > 0 && h.sum == 0 && !strings.Contains(k, "convergence")) {
			t.Fatalf("%s: sum %v with count %v", k, h.sum, h.count)
		}
	}
	if len(DurationBuckets) != 19 || DurationBuckets[0] != 0.5 || DurationBuckets[18] != 3600000 {
		t.Fatalf("duration buckets %v", DurationBuckets)
	}
}

func TestCountersMonotonic(t *testing.T) {
	s := newSim(t, topology.Options{Seed: 7, Services: 20}, Options{})
	_, hist := run(s, 40)
	checked := 0
	for r, samples := range hist {
		typ := s.Type(r)
		if typ == Gauge {
			continue
		}
		for i := 1; i < len(samples); i++ {
			if samples[i].T <= samples[i-1].T {
				t.Fatalf("%s: timestamps not increasing", s.Labels(r))
			}
			if samples[i].V < samples[i-1].V {
				t.Fatalf("%s: counter went from %v to %v", s.Labels(r), samples[i-1].V, samples[i].V)
			}
			if samples[i].V != math.Floor(samples[i].V) && !strings.HasSuffix(s.Labels(r).Get("__name__"), "_sum") {
				t.Fatalf("%s: counter %v is not whole", s.Labels(r), samples[i].V)
			}
		}
		checked++
	}
	if checked < 1000 {
		t.Fatalf("checked only %d counters", checked)
	}
}

func fingerprint(b *Batch, s *Sim) uint64 {
	h := fnv.New64a()
	for _, c := range b.Samples {
		for _, smp := range c {
			h.Write([]byte(strconv.FormatUint(s.Labels(smp.Ref).Hash(), 16) + strconv.FormatInt(smp.T, 10) + strconv.FormatFloat(smp.V, 'g', -1, 64)))
		}
	}
	for _, sp := range b.Spans {
		h.Write(sp.TraceID[:])
		h.Write(sp.ID[:])
		h.Write([]byte(strconv.FormatInt(sp.Duration, 10)))
	}
	return h.Sum64()
}

func TestDeterministic(t *testing.T) {
	fp := func(seed int64) uint64 {
		s := newSim(t, topology.Options{Seed: seed, Services: 15}, Options{})
		var x uint64
		for range 5 {
			x = x*31 + fingerprint(s.Step(), s)
		}
		return x
	}
	if a, b := fp(11), fp(11); a != b {
		t.Fatalf("same seed, different output: %x %x", a, b)
	}
	if fp(11) == fp(12) {
		t.Fatal("different seeds, same output")
	}
}

func TestExemplarsJoinTraces(t *testing.T) {
	s := newSim(t, topology.Options{Seed: 2}, Options{TraceSampling: 0.05})
	spans := map[TraceID]map[SpanID]*Span{}
	exemplars := 0
	for range 6 {
		b := s.Step()
		for i := range b.Spans {
			sp := b.Spans[i]
			if spans[sp.TraceID] == nil {
				spans[sp.TraceID] = map[SpanID]*Span{}
			}
			spans[sp.TraceID][sp.ID] = &sp
		}
		for _, c := range b.Exemplars {
			for _, e := range c {
				exemplars++
				sp := spans[e.TraceID][e.SpanID]
				if sp == nil {
					t.Fatalf("exemplar trace %s span %s not among emitted spans", e.TraceID, e.SpanID)
				}
				ls := s.Labels(e.Ref)
				if ls.Get("__name__") != MetricDuration+"_bucket" {
					t.Fatalf("exemplar on %s", ls)
				}
				le, _ := strconv.ParseFloat(ls.Get("le"), 64)
				if e.V > le {
					t.Fatalf("exemplar value %v above its bucket le=%v", e.V, le)
				}
				if want := map[string]string{"source": SpanClient, "destination": SpanServer}[ls.Get("reporter")]; sp.Kind != want {
					t.Fatalf("exemplar of %s reporter points at a %s span", ls.Get("reporter"), sp.Kind)
				}
			}
		}
	}
	if exemplars == 0 || len(spans) == 0 {
		t.Fatalf("%d exemplars, %d traces", exemplars, len(spans))
	}
	// Span structure: every server span's parent is a client span of the
	// same trace, ids are 128/64-bit and non-zero, children nest in time.
	for _, tr := range spans {
		for _, sp := range tr {
			if sp.TraceID == (TraceID{}) || sp.ID.IsZero() || sp.Duration <= 0 {
				t.Fatalf("bad span %+v", sp)
			}
			if sp.Kind == SpanServer {
				p := tr[sp.ParentID]
				if p == nil || p.Kind != SpanClient {
					t.Fatalf("server span %s without its client span", sp.ID)
				}
				if sp.Start < p.Start || sp.Start+sp.Duration > p.Start+p.Duration {
					t.Fatalf("server span %s outside its client span", sp.ID)
				}
			}
		}
	}
}

func TestEstimateMatchesSimulation(t *testing.T) {
	s := newSim(t, topology.Options{Seed: 4, Services: 8, EntryRPS: 400}, Options{TraceSampling: -1})
	run(s, 60)
	est := EstimateSeries(s.Topology(), 0)
	total := 0
	for _, e := range est {
		total += e.Total
	}
	got := s.NumSeries()
	if math.Abs(float64(got-total)) > 0.1*float64(got) {
		t.Fatalf("estimate %d series, simulation has %d", total, got)
	}
}

func BenchmarkStep(b *testing.B) {
	for _, n := range []int{30, 300} {
		b.Run(strconv.Itoa(n)+"services", func(b *testing.B) {
			s := newSim(b, topology.Options{Seed: 1, Services: n}, Options{})
			s.Step()
			samples := 0
			for b.Loop() {
				bt := s.Step()
				for _, c := range bt.Samples {
					samples += len(c)
				}
			}
			b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(s.NumSeries()), "series")
		})
	}
}
