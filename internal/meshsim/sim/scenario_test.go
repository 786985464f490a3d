package sim

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
	"github.com/meshlens/meshlens/internal/scenario"
)

// snapshot is the emitted samples of one step.
type snapshot struct {
	s   *Sim
	t   time.Time
	val map[Ref]float64
	up  map[int]bool // clusters that sent anything
}

func takeSnapshot(s *Sim, b *Batch) *snapshot {
	sn := &snapshot{s: s, t: b.Time, val: map[Ref]float64{}, up: map[int]bool{}}
	for c, samples := range b.Samples {
		for _, smp := range samples {
			sn.val[smp.Ref] = smp.V
			sn.up[c] = true
		}
	}
	return sn
}

// sum adds the values of the series named name whose labels contain all
// of match (a value ending in * matches a prefix, one starting with * a
// suffix).
func (sn *snapshot) sum(name string, match ...string) (float64, int) {
	var v float64
	n := 0
	for r, x := range sn.val {
		ls := sn.s.Labels(r)
		if ls.Get("__name__") != name || !matches(ls, match) {
			continue
		}
		v += x
		n++
	}
	return v, n
}

func matches(ls labels.Labels, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		got, want := ls.Get(match[i]), match[i+1]
		if p, ok := strings.CutSuffix(want, "*"); ok {
			if !strings.HasPrefix(got, p) {
				return false
			}
		} else if p, ok := strings.CutPrefix(want, "*"); ok {
			if !strings.HasSuffix(got, p) {
				return false
			}
		} else if got != want {
			return false
		}
	}
	return true
}

// increase is the growth of a counter sum between two snapshots.
func increase(before, during *snapshot, name string, match ...string) float64 {
	a, _ := before.sum(name, match...)
	b, _ := during.sum(name, match...)
	return b - a
}

// visible checks that a fault shows in the series; prev and before are
// the two steps before the fault starts, at the step it starts, during one step later.
func visible(f *scenario.Fault, prev, before, at, during *snapshot) error {
	t := before.s.Topology()
	svc := f.Service
	fqdn := ""
	if i := t.ServiceIndex(svc); i >= 0 {
		fqdn = t.Services[i].FQDN()
	}
	dst := []string{"destination_service_name", svc}
	switch f.Kind {
	case scenario.Latency:
		m := dst
		if f.From != "" {
			m = append(m, "source_canonical_service", f.From)
		}
		mean := func(a, b *snapshot) float64 {
			return increase(a, b, MetricDuration+"_sum", m...) / increase(a, b, MetricDuration+"_count", m...)
		}
		prev := mean(prev, before)
		now := mean(at, during)
		if now < 2*prev {
			return fmt.Errorf("mean latency %.1fms during, %.1fms before", now, prev)
		}
	case scenario.ErrorRate:
		if d := increase(at, during, MetricRequests, append(dst, "response_code", "500")...); d < 10 {
			return fmt.Errorf("only %v new 500s", d)
		}
	case scenario.CircuitBreaker:
		if d := increase(at, during, MetricRequests, append(dst, "response_flags", "UO")...); d < 10 {
			return fmt.Errorf("only %v new UO responses", d)
		}
		if d := increase(at, during, "envoy_cluster_upstream_rq_pending_overflow", "cluster_name", "*"+fqdn); d < 10 {
			return fmt.Errorf("pending overflow grew by %v", d)
		}
		if v, _ := during.sum("envoy_cluster_circuit_breakers_default_rq_pending_open", "cluster_name", "*"+fqdn); v == 0 {
			return fmt.Errorf("circuit breaker not open")
		}
	case scenario.RetryStorm:
		r0 := increase(prev, before, "envoy_cluster_upstream_rq_retry", "cluster_name", "*"+fqdn)
		r1 := increase(at, during, "envoy_cluster_upstream_rq_retry", "cluster_name", "*"+fqdn)
		if r1 < 10*(r0+1) {
			return fmt.Errorf("retries %v during, %v before", r1, r0)
		}
		if d := increase(at, during, "envoy_cluster_upstream_rq_retry_overflow", "cluster_name", "*"+fqdn); d == 0 {
			return fmt.Errorf("no retry overflow")
		}
	case scenario.Timeout:
		if d := increase(at, during, MetricRequests, append(dst, "response_code", "504", "response_flags", "UT")...); d < 10 {
			return fmt.Errorf("only %v new 504 UT", d)
		}
	case scenario.OutlierEjection:
		if v, _ := during.sum("envoy_cluster_outlier_detection_ejections_active", "cluster_name", "*"+fqdn); v == 0 {
			return fmt.Errorf("no ejections")
		}
	case scenario.CertExpiry:
		found := false
		for r, v := range during.val {
			ls := during.s.Labels(r)
			if ls.Get("__name__") == "envoy_server_days_until_first_cert_expiring" && strings.HasPrefix(ls.Get("pod"), svc+"-") {
				found = true
				if v > *f.Days {
					return fmt.Errorf("%s: %v days left", ls.Get("pod"), v)
				}
			}
		}
		if !found {
			return fmt.Errorf("no certificate gauge for %s", svc)
		}
	case scenario.RootCertExpiry:
		v, n := during.sum("citadel_server_root_cert_expiry_timestamp", "cluster", "east")
		if n != 1 || v-float64(during.t.Unix()) > (*f.Days+1)*86400 {
			return fmt.Errorf("root expiry %v at %v", v, during.t.Unix())
		}
	case scenario.XDSRejects:
		if d := increase(at, during, "pilot_total_xds_rejects", "cluster", f.Cluster); d == 0 {
			return fmt.Errorf("no xDS rejects")
		}
	case scenario.PushErrors:
		if d := increase(at, during, "pilot_total_xds_internal_errors", "cluster", f.Cluster); d == 0 {
			return fmt.Errorf("no push errors")
		}
	case scenario.ListenerConflict:
		if v, _ := during.sum("pilot_conflict_inbound_listener", "cluster", f.Cluster); v != float64(f.Count) {
			return fmt.Errorf("conflicts %v", v)
		}
	case scenario.EDSNoInstances:
		if v, _ := during.sum("pilot_eds_no_instances", "cluster", f.Cluster); v == 0 {
			return fmt.Errorf("pilot_eds_no_instances 0")
		}
		if d := increase(at, during, MetricRequests, append(dst, "response_flags", "UH")...); d < 10 {
			return fmt.Errorf("only %v new UH responses", d)
		}
	case scenario.SidecarCrashLoop:
		if v, _ := at.sum("up", "cluster", f.Cluster, "pod", svc+"-*"); v != 0 {
			return fmt.Errorf("restarting pods up")
		}
		if v, n := during.sum("kube_pod_container_status_restarts_total", "cluster", f.Cluster, "pod", svc+"-*", "container", "istio-proxy"); v != float64(n) || n == 0 {
			return fmt.Errorf("restarts %v over %d pods", v, n)
		}
	case scenario.IstiodDown:
		if v, n := during.sum("up", "cluster", f.Cluster, "job", JobIstiod); v != 0 || n != 1 {
			return fmt.Errorf("istiod up=%v (%d series)", v, n)
		}
		if _, n := during.sum("pilot_xds", "cluster", f.Cluster); n != 0 {
			return fmt.Errorf("istiod series still sent")
		}
	case scenario.MTLSPlaintext:
		m := append(dst, "connection_security_policy", "none", "reporter", "destination", "source_principal", "unknown")
		if f.From != "" {
			m = append(m, "source_canonical_service", f.From)
		}
		if d := increase(at, during, MetricRequests, m...); d == 0 {
			return fmt.Errorf("no plaintext requests")
		}
	case scenario.ClusterSilent:
		if during.up[t.ClusterIndex(f.Cluster)] {
			return fmt.Errorf("cluster %s still sends", f.Cluster)
		}
	default:
		return fmt.Errorf("no check for kind %s", f.Kind)
	}
	return nil
}

// healthy checks the signs of every fault are absent.
func healthy(sn *snapshot) error {
	for r, v := range sn.val {
		ls := sn.s.Labels(r)
		switch name := ls.Get("__name__"); {
		case name == MetricRequests && strings.Contains("UO UH UT URX", ls.Get("response_flags")) && ls.Get("response_flags") != "-":
			return fmt.Errorf("fault response in a healthy mesh: %s", ls)
		case name == MetricRequests && ls.Get("connection_security_policy") == "none":
			return fmt.Errorf("plaintext in a healthy mesh: %s", ls)
		case name == "up" && v != 1:
			return fmt.Errorf("target down: %s", ls)
		case (strings.HasPrefix(name, "pilot_total_xds") || strings.HasPrefix(name, "pilot_conflict") || name == "pilot_eds_no_instances" ||
			name == "envoy_cluster_outlier_detection_ejections_active" || strings.HasPrefix(name, "envoy_cluster_circuit_breakers") ||
			name == "kube_pod_container_status_restarts_total" || name == "envoy_cluster_upstream_rq_pending_overflow") && v != 0:
			return fmt.Errorf("%s = %v in a healthy mesh", ls, v)
		case name == "envoy_server_days_until_first_cert_expiring" && v < 29:
			return fmt.Errorf("%s = %v in a healthy mesh", ls, v)
		}
	}
	if len(sn.up) != len(sn.s.Topology().Clusters) {
		return fmt.Errorf("a cluster is silent")
	}
	return nil
}

func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("../../../testdata/scenarios/*.yaml")
	if err != nil || len(files) < 16 {
		t.Fatalf("scenario library: %d files, %v", len(files), err)
	}
	kinds := map[scenario.Kind]bool{}
	for _, file := range files {
		sc, err := scenario.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range sc.Faults {
			kinds[f.Kind] = true
		}
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			topo, err := topology.Generate(sc.TopologyOptions())
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(Options{Topology: topo, Scenario: sc, Interval: sc.Interval.D(), TraceSampling: -1})
			if err != nil {
				t.Fatal(err)
			}
			if len(sc.Faults) == 0 {
				for range 29 {
					s.Step()
				}
				sn := takeSnapshot(s, s.Step())
				if err := healthy(sn); err != nil {
					t.Fatal(err)
				}
				return
			}
			f := &sc.Faults[0]
			startStep := int(f.Start.D() / sc.Interval.D())
			var prev, before, at, during *snapshot
			for i := 0; i <= startStep+1; i++ {
				b := s.Step()
				if i < startStep-2 {
					continue
				}
				sn := takeSnapshot(s, b)
				switch i {
				case startStep - 2:
					prev = sn
				case startStep - 1:
					before = sn
				case startStep:
					at = sn
				case startStep + 1:
					during = sn
				}
			}
			if err := healthy(before); err != nil {
				t.Fatalf("before the fault: %v", err)
			}
			if err := visible(f, prev, before, at, during); err != nil {
				t.Fatalf("fault %s not visible at %s: %v", f.Kind, f.Start.D(), err)
			}
		})
	}
	for _, k := range scenario.Kinds() {
		if !kinds[k] {
			t.Errorf("no scenario for fault kind %s", k)
		}
	}
}
