package sim

import (
	"fmt"
	"strconv"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

const podNameAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// podName returns a Deployment-style pod name: workload, pod-template
// hash, random suffix.
func podName(workload string, h uint64) string {
	b := make([]byte, 0, len(workload)+17)
	b = append(b, workload...)
	b = append(b, '-')
	n := uint64(len(podNameAlphabet))
	for i := range 15 {
		if i == 10 {
			b = append(b, '-')
		}
		b = append(b, podNameAlphabet[h%n])
		h = h/n ^ mix64(h)>>(i%8)
	}
	return string(b)
}

func (s *Sim) addTarget(t target) int32 {
	id := int32(len(s.targets))
	t.offset = int64(hash(s.seed, 0x7461726765, uint64(t.cluster), uint64(id)) % uint64(s.interval.Milliseconds()))
	s.targets = append(s.targets, t)
	return id
}

func (s *Sim) buildTargets() {
	topo := s.topo
	nc := len(topo.Clusters)
	s.pods = make([][][][]int32, len(topo.Services))
	s.ksm = make([]int32, nc)
	if !s.linkerd {
		s.istiod = make([]int32, nc)
	}
	for c := range nc {
		ip := fmt.Sprintf("10.%d.0.%d", 16+c, 10)
		s.ksm[c] = s.addTarget(target{kind: tkKSM, cluster: c, job: JobKSM, namespace: "kube-system",
			pod: podName("kube-state-metrics", hash(s.seed, 1, uint64(c))), ip: ip, instance: ip + ":8080"})
		if s.linkerd {
			continue
		}
		ip = fmt.Sprintf("10.%d.0.%d", 16+c, 11)
		s.istiod[c] = s.addTarget(target{kind: tkIstiod, cluster: c, job: JobIstiod, namespace: topology.IstioNamespace,
			pod: podName("istiod", hash(s.seed, 2, uint64(c))), ip: ip, instance: ip + ":15014"})
	}
	podSeq := make([]int, nc)
	for si := range topo.Services {
		svc := &topo.Services[si]
		s.pods[si] = make([][][]int32, nc)
		for _, c := range svc.Clusters {
			s.pods[si][c] = make([][]int32, len(svc.Versions))
			for v, ver := range svc.Versions {
				for r := range ver.Replicas {
					podSeq[c]++
					k := podSeq[c] + 20
					ip := fmt.Sprintf("10.%d.%d.%d", 16+c, k/250+1, k%250+2)
					t := target{kind: tkSidecar, cluster: c, job: JobPods, namespace: svc.Namespace,
						pod: podName(svc.Workload(v), hash(s.seed, 3, uint64(c), uint64(si), uint64(v), uint64(r))),
						ip:  ip, instance: ip + ":15020", service: si, version: v,
						certPhase: float64(hash(s.seed, 4, uint64(c), uint64(si), uint64(v), uint64(r))%1000) / 1000}
					if s.linkerd {
						s.linkerdTarget(&t, svc, v)
					}
					id := s.addTarget(t)
					s.pods[si][c][v] = append(s.pods[si][c][v], id)
				}
			}
		}
	}
	// Every target gets up; sidecars get their certificate gauge and a
	// restart counter on kube-state-metrics; istiod its series.
	for ti := range s.targets {
		id := int32(ti)
		t := &s.targets[ti]
		t.up = s.newSeries(id, Gauge, true, "__name__", "up")
		switch t.kind {
		case tkSidecar:
			cert, container := "envoy_server_days_until_first_cert_expiring", "istio-proxy"
			if s.linkerd {
				cert, container = MetricLinkerdCertExpiry, "linkerd-proxy"
			}
			t.base = s.newSeries(id, Gauge, true, "__name__", cert)
			tt := *t
			t.restarts = s.newSeries(s.ksm[t.cluster], Counter, true, "__name__", "kube_pod_container_status_restarts_total",
				"namespace", tt.namespace, "pod", tt.pod, "container", container)
		case tkIstiod:
			s.buildIstiod(id)
		}
	}
}

func (s *Sim) buildIstiod(id int32) {
	t := &s.targets[id]
	t.base = Ref(len(s.lsets))
	ns := func(name string, typ MetricType, kv ...string) {
		s.newSeries(id, typ, true, append([]string{"__name__", name}, kv...)...)
	}
	for _, typ := range []string{"cds", "eds", "lds", "rds"} {
		ns("pilot_xds_pushes", Counter, "type", typ)
	}
	ns("pilot_xds", Gauge, "version", topology.IstioVersion)
	ns("pilot_total_xds_rejects", Counter, "type", "cds")
	ns("pilot_total_xds_rejects", Counter, "type", "lds")
	ns("pilot_total_xds_internal_errors", Counter)
	ns("pilot_xds_push_context_errors", Counter)
	ns("pilot_conflict_inbound_listener", Gauge)
	ns("pilot_conflict_outbound_listener_tcp_over_current_tcp", Gauge)
	ns("pilot_conflict_outbound_listener_tcp_over_current_http", Gauge)
	ns("pilot_conflict_outbound_listener_http_over_current_tcp", Gauge)
	ns("pilot_eds_no_instances", Gauge)
	ns("pilot_duplicate_envoy_clusters", Gauge)
	ns("pilot_vservice_dup_domain", Gauge)
	ns("galley_validation_failed", Counter, "group", "networking.istio.io", "resource", "virtualservices", "reason", "invalid_resource")
	ns("sidecar_injection_success_total", Counter)
	ns("sidecar_injection_failure_total", Counter)
	ns("citadel_server_root_cert_expiry_timestamp", Gauge)
	ns("citadel_server_cert_chain_expiry_timestamp", Gauge)
	ns("citadel_server_csr_count", Counter)
	ns("istio_build", Gauge, "component", "pilot", "tag", topology.IstioVersion)
	s.newHistogram(id, true, "pilot_proxy_convergence_time", ConvergenceBuckets)
	if got := Ref(len(s.lsets)) - t.base; int(got) != idLen {
		panic(fmt.Sprintf("istiod layout: %d series, want %d", got, idLen))
	}
}

func (s *Sim) buildFlows() {
	topo := s.topo
	s.flows = make([]flow, len(s.traffic.Flows))
	s.flowsTo = make([][]int32, len(topo.Services))
	s.eff = make([]effect, len(s.flows))
	for i, f := range s.traffic.Flows {
		dst := &topo.Services[f.To]
		fl := &s.flows[i]
		fl.Flow = f
		fl.tcp = dst.Protocol == topology.ProtoTCP
		fl.grpc = dst.Protocol == topology.ProtoGRPC
		fl.srcPods = s.pods[f.From][f.SrcCluster][f.SrcVersion]
		fl.dstPods = s.pods[f.To][f.DstCluster][f.DstVersion]
		s.flowsTo[f.To] = append(s.flowsTo[f.To], int32(i))
		k := [3]int32{int32(f.Edge), int32(f.SrcCluster), int32(f.SrcVersion)}
		s.flowsFrom[k] = append(s.flowsFrom[k], int32(i))
		// Envoy creates the upstream cluster stats of every service a
		// sidecar may call as soon as it receives the configuration.
		if !fl.tcp && !s.linkerd {
			for _, p := range fl.srcPods {
				s.upstream(p, f.To)
			}
		}
	}
}

// upstream returns the first Envoy upstream-cluster series of a sidecar for
// a destination service, creating them on first use.
func (s *Sim) upstream(pod int32, dst int) Ref {
	k := [2]int32{pod, int32(dst)}
	if r, ok := s.upstreams[k]; ok {
		return r
	}
	svc := &s.topo.Services[dst]
	cn := "outbound|" + strconv.Itoa(svc.Port) + "||" + svc.FQDN()
	base := Ref(len(s.lsets))
	for _, st := range envoyUpstream {
		typ := Counter
		if st.gauge {
			typ = Gauge
		}
		s.newSeries(pod, typ, true, "__name__", st.name, "cluster_name", cn, "envoy_response_code_class", st.class)
	}
	s.newHistogram(pod, true, "envoy_cluster_upstream_rq_time", DurationBuckets, "cluster_name", cn)
	s.upstreams[k] = base
	return base
}

// istioLabels returns the Istio label pairs of a request or TCP group.
func (s *Sim) istioLabels(f *flow, dstSide, plain bool, oc outcome) []string {
	topo := s.topo
	src, dst := &topo.Services[f.From], &topo.Services[f.To]
	srcVer, dstVer := src.Versions[f.SrcVersion].Name, dst.Versions[f.DstVersion].Name
	srcRev := srcVer
	if src.Gateway {
		srcVer, srcRev = "unknown", "latest"
	}
	reporter := "source"
	policy := "unknown"
	if dstSide {
		reporter = "destination"
		policy = "mutual_tls"
		if plain {
			policy = "none"
		}
	}
	srcPrincipal, dstPrincipal := src.Principal(), dst.Principal()
	if plain {
		if dstSide {
			srcPrincipal = "unknown"
		} else {
			dstPrincipal = "unknown"
		}
	}
	proto := dst.Protocol
	var code, grpcStatus, flags string
	if f.tcp {
		flags = "-"
	} else {
		code, grpcStatus, flags = oc.codes(f.grpc, !dstSide)
	}
	return []string{
		"reporter", reporter,
		"source_workload", src.Workload(f.SrcVersion),
		"source_workload_namespace", src.Namespace,
		"source_principal", srcPrincipal,
		"source_app", src.Name,
		"source_version", srcVer,
		"source_canonical_service", src.Name,
		"source_canonical_revision", srcRev,
		"source_cluster", topo.Clusters[f.SrcCluster],
		"destination_workload", dst.Workload(f.DstVersion),
		"destination_workload_namespace", dst.Namespace,
		"destination_principal", dstPrincipal,
		"destination_app", dst.Name,
		"destination_version", dstVer,
		"destination_canonical_service", dst.Name,
		"destination_canonical_revision", dstVer,
		"destination_service", dst.FQDN(),
		"destination_service_name", dst.Name,
		"destination_service_namespace", dst.Namespace,
		"destination_cluster", topo.Clusters[f.DstCluster],
		"request_protocol", proto,
		"response_code", code,
		"grpc_response_status", grpcStatus,
		"response_flags", flags,
		"connection_security_policy", policy,
	}
}

// group returns the first series of the Istio request group of flow fi
// reported by pod, creating it (not yet live) on first use.
func (s *Sim) group(k groupKey) Ref {
	if r, ok := s.groups[k]; ok {
		return r
	}
	f := &s.flows[k.flow]
	lb := s.baseLabels(k.pod, s.istioLabels(f, k.dst, k.plain, k.oc)...)
	base := Ref(len(s.lsets))
	if f.tcp {
		for _, name := range []string{MetricTCPSent, MetricTCPReceived, MetricTCPOpened, MetricTCPClosed} {
			s.addSeries(k.pod, Counter, false, lb, name, "")
		}
	} else {
		s.addSeries(k.pod, Counter, false, lb, MetricRequests, "")
		s.newHistogramFrom(k.pod, false, MetricDuration, DurationBuckets, lb)
		s.newHistogramFrom(k.pod, false, MetricRequestBytes, DurationBuckets, lb)
		s.newHistogramFrom(k.pod, false, MetricResponseBytes, DurationBuckets, lb)
	}
	s.groups[k] = base
	return base
}
