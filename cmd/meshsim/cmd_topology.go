package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/meshlens/meshlens/internal/meshsim/sim"
	"github.com/meshlens/meshlens/internal/meshsim/topology"
	"github.com/meshlens/meshlens/internal/scenario"
)

// meshFlags are the flags that select the simulated mesh.
type meshFlags struct {
	seed       int64
	services   int
	clusters   int
	namespaces int
	entryRPS   float64
	scenario   string
}

func (f *meshFlags) register(fs *flag.FlagSet, withScenario bool) {
	fs.Int64Var(&f.seed, "seed", 1, "random seed; the same seed and size give the same mesh")
	fs.IntVar(&f.services, "services", 30, fmt.Sprintf("number of services (1..%d)", topology.MaxServices))
	fs.IntVar(&f.clusters, "clusters", 2, fmt.Sprintf("number of clusters (1..%d)", topology.MaxClusters))
	fs.IntVar(&f.namespaces, "namespaces", 0, "number of namespaces (0: one per ten services)")
	fs.Float64Var(&f.entryRPS, "entry-rps", 0, "requests per second entering each cluster's ingress gateway (0: 3 per service, at least 50)")
	if withScenario {
		fs.StringVar(&f.scenario, "scenario", "", "scenario file (YAML) scheduling faults; its topology replaces --seed/--services/--clusters")
	}
}

// build returns the topology and the scenario (nil without --scenario).
func (f *meshFlags) build(fs *flag.FlagSet) (*topology.Topology, *scenario.Scenario, error) {
	opts := topology.Options{Seed: f.seed, Services: f.services, Clusters: f.clusters, Namespaces: f.namespaces, EntryRPS: f.entryRPS}
	var sc *scenario.Scenario
	if f.scenario != "" {
		var err error
		if sc, err = scenario.Load(f.scenario); err != nil {
			return nil, nil, err
		}
		var conflict []string
		fs.Visit(func(fl *flag.Flag) {
			switch fl.Name {
			case "seed", "services", "clusters":
				conflict = append(conflict, "--"+fl.Name)
			}
		})
		if len(conflict) > 0 {
			return nil, nil, fmt.Errorf("%s conflict with --scenario, whose topology section sets the mesh", strings.Join(conflict, ", "))
		}
		st := sc.TopologyOptions()
		opts.Seed, opts.Services, opts.Clusters = st.Seed, st.Services, st.Clusters
	}
	t, err := topology.Generate(opts)
	if err != nil {
		return nil, nil, err
	}
	return t, sc, nil
}

func (m *Main) runTopology(_ context.Context, args []string) error {
	fs, lvl := m.newFlagSet("topology")
	var mf meshFlags
	mf.register(fs, false)
	asJSON := fs.Bool("json", false, "print JSON")
	interval := fs.Duration("interval", 15*time.Second, "scrape interval for the samples/s estimate")
	if err := m.parse(fs, lvl, args); err != nil {
		return err
	}
	t, _, err := mf.build(fs)
	if err != nil {
		return err
	}
	est := sim.EstimateSeries(t, *interval)
	if *asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*topology.Topology
			LongestPath int            `json:"longest_path"`
			Series      []sim.Estimate `json:"series_per_cluster"`
		}{t, t.LongestPath(), est})
	}
	printTopology(m.Stdout, t, est, *interval)
	return nil
}

func printTopology(w io.Writer, t *topology.Topology, est []sim.Estimate, interval time.Duration) {
	crossEdge := make(map[int]bool)
	for _, f := range t.Traffic().Flows {
		if f.SrcCluster != f.DstCluster {
			crossEdge[f.Edge] = true
		}
	}
	cross := len(crossEdge)
	fmt.Fprintf(w, "mesh seed=%d: %d services, %d namespaces, %d clusters (%s), %d edges (%d cross-cluster), longest call chain %d\n",
		t.Seed, len(t.Services)-1, len(t.Namespaces), len(t.Clusters), strings.Join(t.Clusters, ", "), len(t.Edges), cross, t.LongestPath())
	fmt.Fprintf(w, "entry rate %.0f req/s per cluster\n", t.EntryRPS)
	total := 0
	for _, e := range est {
		fmt.Fprintf(w, "cluster %s: %d pods, %d series (istio %d, envoy %d, istiod %d, other %d), %.0f samples/s at %s\n",
			e.Cluster, e.Pods, e.Total, e.Istio, e.Envoy, e.ControlPlane, e.Other, e.SamplesPerSecond, interval)
		total += e.Total
	}
	fmt.Fprintf(w, "all clusters: %d series, %.0f samples/s\n", total, float64(total)/interval.Seconds())
	// Hubs: the most-called services.
	in := make([]int, len(t.Services))
	for i := range t.Services {
		in[i] = len(t.In[i])
	}
	order := make([]int, 0, len(t.Services)-1)
	for i := 1; i < len(t.Services); i++ {
		order = append(order, i)
	}
	sort.SliceStable(order, func(a, b int) bool { return in[order[a]] > in[order[b]] })
	fmt.Fprint(w, "hubs:")
	for _, i := range order[:min(5, len(order))] {
		fmt.Fprintf(w, " %s(%d callers)", t.Services[i].Name, in[i])
	}
	fmt.Fprintln(w)
	if len(t.Services) > 201 {
		fmt.Fprintf(w, "(%d services: use --json for the full listing)\n", len(t.Services)-1)
		return
	}
	fmt.Fprintln(w, "\nservices:")
	for i := range t.Services {
		s := &t.Services[i]
		vers := make([]string, len(s.Versions))
		for v, ver := range s.Versions {
			vers[v] = fmt.Sprintf("%s×%d@%.0f%%", ver.Name, ver.Replicas, ver.Weight*100)
		}
		cl := make([]string, len(s.Clusters))
		for k, c := range s.Clusters {
			cl[k] = t.Clusters[c]
		}
		fmt.Fprintf(w, "  %-28s %-12s depth %d %-4s %-10s %s [%s] own %.1fms err %.2f%%\n",
			s.Name, s.Namespace, s.Depth, s.Protocol, s.MTLS, strings.Join(vers, ","), strings.Join(cl, ","), s.LatencyMS, s.ErrorRate*100)
	}
	fmt.Fprintln(w, "\nedges:")
	for _, e := range t.Edges {
		remote := ""
		if e.Remote > 0 {
			remote = fmt.Sprintf(" (%.0f%% to other clusters)", e.Remote*100)
		}
		fmt.Fprintf(w, "  %s -> %s  %.2f calls/request%s\n", t.Services[e.From].Name, t.Services[e.To].Name, e.CallsPerRequest, remote)
	}
}
