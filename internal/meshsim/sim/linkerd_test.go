package sim

import (
	"math"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
	"github.com/meshlens/meshlens/internal/scenario"
)

func TestLinkerdLabelSet(t *testing.T) {
	s := newSim(t, topology.Options{Seed: 3}, Options{TraceSampling: -1, Mesh: MeshLinkerd})
	b, _ := run(s, 8)
	want := func(name string, ls labels.Labels) []string {
		out := []string{"__name__"}
		out = append(out, TargetLabels...)
		out = append(out, LinkerdTargetLabels...)
		if ls.Get("direction") == "outbound" {
			out = append(out, LinkerdOutboundLabels...)
		} else {
			out = append(out, LinkerdInboundLabels...)
		}
		switch name {
		case MetricLinkerdResponses:
			out = append(out, "status_code", "classification")
		case MetricLinkerdLatency + "_bucket":
			out = append(out, "status_code", "le")
		case MetricLinkerdLatency + "_sum", MetricLinkerdLatency + "_count":
			out = append(out, "status_code")
		}
		if ls.Get("grpc_status") != "" {
			out = append(out, "grpc_status")
		}
		sort.Strings(out)
		return out
	}
	seen := map[string]int{}
	for r := range Ref(s.NumSeries()) {
		ls := s.Labels(r)
		name := ls.Get("__name__")
		if strings.HasPrefix(name, "istio_") || strings.HasPrefix(name, "envoy_") || strings.HasPrefix(name, "pilot_") {
			t.Fatalf("Istio series in a Linkerd mesh: %s", ls)
		}
		if ls.Get("job") == JobLinkerdProxy {
			for _, l := range LinkerdTargetLabels {
				if ls.Get(l) == "" {
					t.Fatalf("linkerd-proxy series without %s: %s", l, ls)
				}
			}
		}
		if name != MetricLinkerdRequests && name != MetricLinkerdResponses && !strings.HasPrefix(name, MetricLinkerdLatency) {
			continue
		}
		seen[name+" "+ls.Get("direction")]++
		if got, exp := names(ls), want(name, ls); !slices.Equal(got, exp) {
			t.Fatalf("%s\n got labels %v\nwant %v", ls, got, exp)
		}
		if ls.Get("tls") != "true" {
			t.Fatalf("tls %q in a healthy mesh: %s", ls.Get("tls"), ls)
		}
		if !strings.HasSuffix(ls.Get("server_id")+ls.Get("client_id"), ".serviceaccount.identity.linkerd.cluster.local") {
			t.Fatalf("identity: %s", ls)
		}
		if name == MetricLinkerdResponses {
			ok := ls.Get("status_code") == "200" && (ls.Get("grpc_status") == "" || ls.Get("grpc_status") == "0")
			if c := ls.Get("classification"); (c == "success") != ok {
				t.Fatalf("classification %s: %s", c, ls)
			}
		}
	}
	for _, n := range []string{MetricLinkerdRequests, MetricLinkerdResponses, MetricLinkerdLatency + "_bucket"} {
		for _, dir := range []string{"inbound", "outbound"} {
			if seen[n+" "+dir] == 0 {
				t.Errorf("no %s %s series", dir, n)
			}
		}
	}
	// response_total and the latency histogram's _count grow together.
	total := map[string]float64{}
	count := map[string]float64{}
	for _, c := range b.Samples {
		for _, smp := range c {
			ls := s.Labels(smp.Ref)
			switch ls.Get("__name__") {
			case MetricLinkerdResponses:
				total[labels.NewBuilder(ls).Del("__name__", "classification").Labels().String()] = smp.V
			case MetricLinkerdLatency + "_count":
				count[labels.NewBuilder(ls).Del("__name__").Labels().String()] = smp.V
			}
		}
	}
	if len(total) == 0 || len(total) != len(count) {
		t.Fatalf("%d response_total series, %d response_latency_ms_count", len(total), len(count))
	}
	for k, v := range total {
		if count[k] != v {
			t.Fatalf("%s: response_total %v, response_latency_ms_count %v", k, v, count[k])
		}
	}
}

func TestLinkerdCountersMonotonic(t *testing.T) {
	s := newSim(t, topology.Options{Seed: 7, Services: 20}, Options{Mesh: MeshLinkerd})
	_, hist := run(s, 30)
	checked := 0
	for r, samples := range hist {
		if s.Type(r) == Gauge {
			continue
		}
		for i := 1; i < len(samples); i++ {
			if samples[i].V < samples[i-1].V || samples[i].T <= samples[i-1].T {
				t.Fatalf("%s: %v at %d after %v at %d", s.Labels(r), samples[i].V, samples[i].T, samples[i-1].V, samples[i-1].T)
			}
		}
		checked++
	}
	if checked < 500 {
		t.Fatalf("checked only %d counters", checked)
	}
}

// TestLinkerdFaults checks that scenario faults show in Linkerd's series:
// an error rate in response_total failures, mTLS off in tls="no_identity".
func TestLinkerdFaults(t *testing.T) {
	topo, err := topology.Generate(topology.Options{Seed: 9, Services: 12})
	if err != nil {
		t.Fatal(err)
	}
	svc := ""
	for i, sv := range topo.Services {
		if i > 0 && sv.MTLS == topology.MTLSStrict && sv.Protocol != topology.ProtoTCP && len(topo.In[i]) > 0 {
			svc = sv.Name
			break
		}
	}
	if svc == "" {
		t.Fatal("no STRICT HTTP service with callers")
	}
	sc := &scenario.Scenario{Faults: []scenario.Fault{
		{Kind: scenario.ErrorRate, Service: svc, Start: scenario.Duration(2 * 60e9), Duration: scenario.Duration(10 * 60e9), Rate: 0.5},
		{Kind: scenario.MTLSPlaintext, Service: svc, Start: scenario.Duration(2 * 60e9), Duration: scenario.Duration(10 * 60e9)},
	}}
	s, err := New(Options{Topology: topo, Scenario: sc, TraceSampling: -1, Mesh: MeshLinkerd})
	if err != nil {
		t.Fatal(err)
	}
	failures := func(b *Batch) (fail, plain float64) {
		for _, c := range b.Samples {
			for _, smp := range c {
				ls := s.Labels(smp.Ref)
				if ls.Get("__name__") != MetricLinkerdResponses || ls.Get("direction") != "inbound" || !strings.HasPrefix(ls.Get("pod"), svc+"-") {
					continue
				}
				if ls.Get("classification") == "failure" && !math.IsNaN(smp.V) {
					fail += smp.V
				}
				if ls.Get("tls") == "no_identity" {
					plain += smp.V
				}
			}
		}
		return fail, plain
	}
	var before, after float64
	var plain float64
	for i := range 16 {
		b := s.Step()
		switch i {
		case 7:
			before, _ = failures(b)
		case 15:
			after, plain = failures(b)
		}
	}
	if after-before < 10 || plain == 0 {
		t.Fatalf("%s: failures %v -> %v, plaintext responses %v", svc, before, after, plain)
	}
}
