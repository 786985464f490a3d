package load

import (
	"fmt"
	"math"
	"strings"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/internal/meshsim/rw"
	"github.com/meshlens/meshlens/internal/meshsim/sim"
	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

// Dataset is a fixed set of series with a start value and a per-round
// increment each, taken from the simulated mesh: counters and histogram
// series grow by the same amount every round, so they stay monotonic and
// histograms stay cumulative.
type Dataset struct {
	Set      *rw.SeriesSet
	Labels   []labels.Labels
	Start    []float64
	Inc      []float64
	Services int // size of the mesh the series came from
}

// Mix selects the series of a dataset.
type Mix string

// Mixes.
const (
	// MixIstio keeps only Istio's standard metrics (~30 labels each).
	MixIstio Mix = "istio"
	// MixAll keeps every series a per-cluster Prometheus would send.
	MixAll Mix = "all"
)

// DatasetOptions select a dataset.
type DatasetOptions struct {
	Seed int64
	// Series is the number of series wanted; zero means every series of
	// the mix in a mesh of Services services, encoded into each request
	// rather than once (memory for tens of millions of series).
	Series   int
	Services int
	Clusters int // zero means 2
	Mix      Mix // zero means MixIstio
}

// BuildDataset simulates a mesh large enough to have opts.Series series
// of the selected mix and takes that many of them.
func BuildDataset(opts DatasetOptions) (*Dataset, error) {
	if opts.Series < 0 || (opts.Series == 0 && opts.Services < 1) {
		return nil, fmt.Errorf("series %d must be positive, or zero with a number of services (--series, --services)", opts.Series)
	}
	keep := func(name string) bool {
		return strings.HasPrefix(name, "istio_request") || strings.HasPrefix(name, "istio_response") || strings.HasPrefix(name, "istio_tcp")
	}
	switch opts.Mix {
	case "", MixIstio:
	case MixAll:
		keep = func(string) bool { return true }
	default:
		return nil, fmt.Errorf("unknown series mix %q (--mix: istio or all)", opts.Mix)
	}
	// About 900 Istio series per service with two clusters; start there
	// and grow the mesh until it is large enough.
	if opts.Series == 0 {
		d, _, err := tryDataset(opts, opts.Services, keep)
		return d, err
	}
	services := max(5, int(float64(opts.Series)/800*2/float64(max(opts.Clusters, 2)))+1)
	for {
		services = min(services, topology.MaxServices)
		d, n, err := tryDataset(opts, services, keep)
		if err != nil {
			return nil, err
		}
		if d != nil {
			return d, nil
		}
		if services == topology.MaxServices {
			return nil, fmt.Errorf("a mesh of %d services has only %d series of mix %q; ask for fewer (--series)", services, n, opts.Mix)
		}
		services = int(math.Ceil(float64(services) * float64(opts.Series) / float64(max(n, 1)) * 1.1))
	}
}

func tryDataset(opts DatasetOptions, services int, keep func(string) bool) (*Dataset, int, error) {
	topo, err := topology.Generate(topology.Options{Seed: opts.Seed, Services: services, Clusters: opts.Clusters})
	if err != nil {
		return nil, 0, err
	}
	s, err := sim.New(sim.Options{Topology: topo, TraceSampling: -1})
	if err != nil {
		return nil, 0, err
	}
	// Two steps: values after the first, growth between them. Series
	// created in the second step are left out.
	b := s.Step()
	first := make([]float64, s.NumSeries()) // by Ref; NaN: no sample
	for i := range first {
		first[i] = math.NaN()
	}
	for _, c := range b.Samples {
		for _, smp := range c {
			first[smp.Ref] = smp.V
		}
	}
	var refs []sim.Ref
	var inc []float64
	b = s.Step()
	for _, c := range b.Samples {
		for _, smp := range c {
			if int(smp.Ref) >= len(first) {
				continue // created in the second step
			}
			v0 := first[smp.Ref]
			if math.IsNaN(v0) || math.IsNaN(smp.V) || !keep(s.Labels(smp.Ref).Get("__name__")) {
				continue
			}
			refs = append(refs, smp.Ref)
			d := smp.V - v0
			if s.Type(smp.Ref) == sim.Gauge || d < 0 {
				d = 0
			}
			inc = append(inc, d)
			if len(refs) == opts.Series {
				break
			}
		}
		if len(refs) == opts.Series {
			break
		}
	}
	if len(refs) < opts.Series {
		return nil, len(refs), nil
	}
	d := &Dataset{Labels: make([]labels.Labels, len(refs)), Start: make([]float64, len(refs)), Inc: inc, Services: services}
	types := make([]uint8, len(refs))
	for i, r := range refs {
		d.Labels[i] = s.Labels(r)
		d.Start[i] = first[r]
		types[i] = s.Type(r).RemoteWriteType()
	}
	if opts.Series == 0 {
		d.Set = rw.NewLazySeriesSet(d.Labels, types)
	} else {
		d.Set = rw.NewSeriesSet(d.Labels, types)
	}
	return d, len(refs), nil
}
