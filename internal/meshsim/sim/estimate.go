package sim

import (
	"time"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

// Estimate counts the series of a healthy mesh after it has run for an
// hour, per cluster, without building them (so it works for the largest
// meshes).
type Estimate struct {
	Cluster      string `json:"cluster"`
	Pods         int    `json:"pods"`
	Istio        int    `json:"istio_series"`
	Envoy        int    `json:"envoy_series"`
	ControlPlane int    `json:"control_plane_series"`
	Other        int    `json:"other_series"` // up, kube-state-metrics
	Total        int    `json:"total_series"`
	// SamplesPerSecond at the given scrape interval.
	SamplesPerSecond float64 `json:"samples_per_second"`
}

// EstimateSeries returns the series per cluster of topology t.
func EstimateSeries(t *topology.Topology, interval time.Duration) []Estimate {
	if interval == 0 {
		interval = 15 * time.Second
	}
	tr := t.Traffic()
	nc := len(t.Clusters)
	out := make([]Estimate, nc)
	for c := range out {
		out[c].Cluster = t.Clusters[c]
		out[c].ControlPlane = idLen + 1
		out[c].Other = 1 // kube-state-metrics up
	}
	// Pods: up, certificate gauge, restart counter.
	for si := range t.Services {
		svc := &t.Services[si]
		for _, c := range svc.Clusters {
			for _, v := range svc.Versions {
				out[c].Pods += v.Replicas
				out[c].Other += 2 * v.Replicas
				out[c].Envoy += v.Replicas
			}
		}
	}
	hour := 3600.0
	istioGroup := grpLen
	type up struct{ svc, cluster, version, dst int }
	seen := make(map[up]bool)
	for _, f := range tr.Flows {
		src, dst := &t.Services[f.From], &t.Services[f.To]
		srcPods := src.Versions[f.SrcVersion].Replicas
		dstPods := dst.Versions[f.DstVersion].Replicas
		if dst.Protocol == topology.ProtoTCP {
			out[f.SrcCluster].Istio += 4 * srcPods
			out[f.DstCluster].Istio += 4 * dstPods
			continue
		}
		k := up{f.From, f.SrcCluster, f.SrcVersion, f.To}
		if !seen[k] {
			seen[k] = true
			out[f.SrcCluster].Envoy += upLen * srcPods
		}
		// Success series always; error series once an hour has at least
		// one error per pod.
		groups := func(pods int) int {
			g := 1
			if f.RPS*hour*dst.ErrorRate/float64(pods) >= 1 {
				g++
			}
			return g
		}
		out[f.SrcCluster].Istio += istioGroup * srcPods * groups(srcPods)
		out[f.DstCluster].Istio += istioGroup * dstPods * groups(dstPods)
	}
	for c := range out {
		e := &out[c]
		e.Total = e.Istio + e.Envoy + e.ControlPlane + e.Other
		e.SamplesPerSecond = float64(e.Total) / interval.Seconds()
	}
	return out
}
