package emit

import (
	"bufio"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/internal/meshsim/sim"
)

// Pages serves the latest step of each cluster as a Prometheus text
// exposition at /metrics/<cluster>, for a real Prometheus to scrape (with
// honor_labels: true, since the series carry their own cluster, pod,
// instance and job labels).
type Pages struct {
	sim *sim.Sim
	mu  sync.Mutex
	// per cluster: samples of the latest step, sorted by metric family
	latest [][]sim.Sample
}

// NewPages returns the pages of s's clusters.
func NewPages(s *sim.Sim) *Pages {
	return &Pages{sim: s, latest: make([][]sim.Sample, len(s.Topology().Clusters))}
}

// Update records a step.
func (p *Pages) Update(b *sim.Batch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, samples := range b.Samples {
		if len(samples) == 0 {
			continue // a silent cluster keeps its last page
		}
		out := p.latest[c][:0]
		for _, s := range samples {
			if !math.IsNaN(s.V) {
				out = append(out, s)
			}
		}
		slices.SortStableFunc(out, func(a, b sim.Sample) int {
			return strings.Compare(p.family(a.Ref), p.family(b.Ref))
		})
		p.latest[c] = out
	}
}

// family returns the metric family of a series.
func (p *Pages) family(r sim.Ref) string {
	name := p.sim.Labels(r).Get("__name__")
	if p.sim.Type(r) != sim.Histogram {
		return name
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(name, suf) {
			return name[:len(name)-len(suf)]
		}
	}
	return name
}

// ServeHTTP serves /metrics/<cluster>, or at /metrics the list of pages.
func (p *Pages) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/metrics"), "/")
	clusters := p.sim.Topology().Clusters
	if name == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, c := range clusters {
			_, _ = w.Write([]byte("/metrics/" + c + "\n"))
		}
		return
	}
	c := slices.Index(clusters, name)
	if c < 0 {
		http.Error(w, "unknown cluster "+strconv.Quote(name), http.StatusNotFound)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriterSize(w, 64<<10)
	last := ""
	for _, s := range p.latest[c] {
		ls := p.sim.Labels(s.Ref)
		n := ls.Get("__name__")
		if f := p.family(s.Ref); f != last {
			bw.WriteString("# TYPE " + f + " " + p.sim.Type(s.Ref).String() + "\n")
			last = f
		}
		bw.WriteString(n)
		bw.WriteByte('{')
		first := true
		ls.Range(func(l labels.Label) {
			if l.Name == "__name__" {
				return
			}
			if !first {
				bw.WriteByte(',')
			}
			first = false
			bw.WriteString(l.Name)
			bw.WriteString(`="`)
			bw.WriteString(escape(l.Value))
			bw.WriteByte('"')
		})
		bw.WriteString("} ")
		bw.WriteString(strconv.FormatFloat(s.V, 'g', -1, 64))
		bw.WriteByte('\n')
	}
	_ = bw.Flush()
}

var escaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func escape(s string) string { return escaper.Replace(s) }
