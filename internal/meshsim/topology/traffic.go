package topology

import "sort"

// Flow is the steady request rate from one workload in one cluster to
// another workload in one cluster along an edge.
type Flow struct {
	Edge       int
	From, To   int // services
	SrcCluster int
	SrcVersion int
	DstCluster int
	DstVersion int
	// RPS is the mean request rate (before diurnal variation and faults).
	RPS float64
}

// Traffic is the steady-state traffic of a topology.
type Traffic struct {
	// Flows in a fixed order: by edge, then source cluster, source
	// version, destination cluster, destination version.
	Flows []Flow
	// ServiceRPS is the inbound request rate per service and cluster; for
	// the gateway it is the entry rate.
	ServiceRPS [][]float64
	// LatencyMS is the expected median latency of a request to each
	// service including its own downstream calls.
	LatencyMS []float64
}

// Traffic computes the rates on every edge from the entry rate, walking the
// call graph from the gateway down.
func (t *Topology) Traffic() *Traffic {
	ns, nc := len(t.Services), len(t.Clusters)
	tr := &Traffic{ServiceRPS: make([][]float64, ns), LatencyMS: make([]float64, ns)}
	for i := range tr.ServiceRPS {
		tr.ServiceRPS[i] = make([]float64, nc)
	}
	for c := range nc {
		tr.ServiceRPS[0][c] = t.EntryRPS
	}
	order := t.depthOrder()
	// Flows are collected per edge, then sorted by edge to give a stable order.
	type key struct{ edge, cs, sv, cd, dv int }
	acc := make(map[key]float64)
	for _, s := range order {
		src := &t.Services[s]
		for _, c := range src.Clusters {
			r := tr.ServiceRPS[s][c]
			if r == 0 {
				continue
			}
			for _, ei := range t.Out[s] {
				e := &t.Edges[ei]
				dst := &t.Services[e.To]
				rate := r * e.CallsPerRequest
				shares := t.clusterShares(e, c)
				for cd, x := range shares {
					if x == 0 {
						continue
					}
					tr.ServiceRPS[e.To][cd] += rate * x
					for sv := range src.Versions {
						for dv := range dst.Versions {
							acc[key{ei, c, sv, cd, dv}] += rate * x * src.Versions[sv].Weight * dst.Versions[dv].Weight
						}
					}
				}
			}
		}
	}
	tr.Flows = make([]Flow, 0, len(acc))
	for k, v := range acc {
		e := &t.Edges[k.edge]
		tr.Flows = append(tr.Flows, Flow{Edge: k.edge, From: e.From, To: e.To, SrcCluster: k.cs, SrcVersion: k.sv, DstCluster: k.cd, DstVersion: k.dv, RPS: v})
	}
	sort.Slice(tr.Flows, func(a, b int) bool {
		x, y := &tr.Flows[a], &tr.Flows[b]
		if x.Edge != y.Edge {
			return x.Edge < y.Edge
		}
		if x.SrcCluster != y.SrcCluster {
			return x.SrcCluster < y.SrcCluster
		}
		if x.SrcVersion != y.SrcVersion {
			return x.SrcVersion < y.SrcVersion
		}
		if x.DstCluster != y.DstCluster {
			return x.DstCluster < y.DstCluster
		}
		return x.DstVersion < y.DstVersion
	})
	// Latency bottom-up: own time plus sequential downstream calls.
	for i := len(order) - 1; i >= 0; i-- {
		s := order[i]
		l := t.Services[s].LatencyMS
		for _, ei := range t.Out[s] {
			e := &t.Edges[ei]
			l += e.CallsPerRequest * (tr.LatencyMS[e.To] + 0.3)
		}
		tr.LatencyMS[s] = l
	}
	return tr
}

// clusterShares returns, for calls along e from cluster c, the share going
// to each cluster.
func (t *Topology) clusterShares(e *Edge, c int) []float64 {
	dst := &t.Services[e.To]
	shares := make([]float64, len(t.Clusters))
	if dst.InCluster(c) {
		others := len(dst.Clusters) - 1
		if others == 0 || e.Remote == 0 {
			shares[c] = 1
			return shares
		}
		shares[c] = 1 - e.Remote
		for _, o := range dst.Clusters {
			if o != c {
				shares[o] = e.Remote / float64(others)
			}
		}
		return shares
	}
	for _, o := range dst.Clusters {
		shares[o] = 1 / float64(len(dst.Clusters))
	}
	return shares
}

// depthOrder returns service indexes sorted by depth (a topological order,
// since edges always go deeper).
func (t *Topology) depthOrder() []int {
	order := make([]int, len(t.Services))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return t.Services[order[a]].Depth < t.Services[order[b]].Depth })
	return order
}
