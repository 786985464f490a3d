package topology

import (
	"errors"
	"reflect"
	"testing"
)

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"default", Options{Seed: 1}},
		{"one cluster", Options{Seed: 2, Services: 50, Clusters: 1}},
		{"large", Options{Seed: 3, Services: 2000, Clusters: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo, err := Generate(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.opts.Services
			if want == 0 {
				want = 30
			}
			if len(topo.Services) != want+1 || !topo.Services[0].Gateway {
				t.Fatalf("%d services", len(topo.Services))
			}
			names := map[string]bool{}
			for _, s := range topo.Services {
				if names[s.Name] {
					t.Fatalf("duplicate service name %s", s.Name)
				}
				names[s.Name] = true
				if s.Depth > DefaultMaxDepth || len(s.Versions) == 0 || len(s.Clusters) == 0 {
					t.Fatalf("bad service %+v", s)
				}
			}
			if lp := topo.LongestPath(); lp > DefaultMaxDepth || lp < 4 {
				t.Fatalf("longest path %d", lp)
			}
			tr := topo.Traffic()
			maxIn, cross := 0, 0
			for i := range topo.Services {
				maxIn = max(maxIn, len(topo.In[i]))
				reached := false
				for _, r := range tr.ServiceRPS[i] {
					reached = reached || r > 0
				}
				if !reached {
					t.Fatalf("service %s gets no traffic", topo.Services[i].Name)
				}
			}
			for _, f := range tr.Flows {
				if f.SrcCluster != f.DstCluster {
					cross++
				}
				if topo.Services[f.To].Depth <= topo.Services[f.From].Depth {
					t.Fatalf("edge %d goes up the graph", f.Edge)
				}
			}
			if maxIn < 3 {
				t.Fatalf("no hub: max in-degree %d", maxIn)
			}
			if (len(topo.Clusters) > 1) != (cross > 0) {
				t.Fatalf("%d cross-cluster flows with %d clusters", cross, len(topo.Clusters))
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := Generate(Options{Seed: 9, Services: 100})
	b, _ := Generate(Options{Seed: 9, Services: 100})
	c, _ := Generate(Options{Seed: 10, Services: 100})
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different topology")
	}
	if reflect.DeepEqual(a.Edges, c.Edges) {
		t.Fatal("different seeds, same edges")
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{{Services: -1}, {Services: MaxServices + 1}, {Clusters: 99}, {Services: 5, Namespaces: 6}, {EntryRPS: -1}} {
		if _, err := Generate(o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("%+v: err %v", o, err)
		}
	}
}
