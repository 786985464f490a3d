package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

// Mesh is the service mesh whose proxies the simulation reports as.
type Mesh string

// Meshes.
const (
	// MeshIstio: Envoy sidecars with Istio's standard metrics, Envoy
	// cluster stats and istiod.
	MeshIstio Mesh = "istio"
	// MeshLinkerd: linkerd2-proxy sidecars scraped by Linkerd's
	// linkerd-proxy job; no Envoy stats and no istiod.
	MeshLinkerd Mesh = "linkerd"
)

// ParseMesh accepts "istio" and "linkerd".
func ParseMesh(s string) (Mesh, error) {
	switch Mesh(s) {
	case MeshIstio, MeshLinkerd:
		return Mesh(s), nil
	}
	return "", fmt.Errorf("unknown mesh %q (--mesh: istio or linkerd)", s)
}

// Linkerd names. The proxy serves its metrics on :4191; the linkerd-viz
// Prometheus configuration scrapes them as job linkerd-proxy and copies
// the pod's labels (app, version, pod-template-hash and the linkerd.io/
// ones: control_plane_ns, deployment, workload_ns) onto every series.
const (
	JobLinkerdProxy          = "linkerd-proxy"
	LinkerdNamespace         = "linkerd"
	LinkerdIdentityDomain    = "identity.linkerd.cluster.local"
	MetricLinkerdRequests    = "request_total"
	MetricLinkerdResponses   = "response_total"
	MetricLinkerdLatency     = "response_latency_ms"
	MetricLinkerdTCPOpen     = "tcp_open_total"
	MetricLinkerdTCPClose    = "tcp_close_total"
	MetricLinkerdTCPRead     = "tcp_read_bytes_total"
	MetricLinkerdTCPWrite    = "tcp_write_bytes_total"
	MetricLinkerdCertExpiry  = "identity_cert_expiration_timestamp_seconds"
	linkerdProxyAdminPort    = ":4191"
	linkerdControlPlaneLabel = "control_plane_ns"
)

// LinkerdLatencyBuckets are the proxy's response_latency_ms bounds.
var LinkerdLatencyBuckets = []float64{1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
	1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000}

// LinkerdOutboundLabels are the labels of outbound request_total beyond
// the target labels (empty values, like dst_zone, are dropped by
// Prometheus); response_total and response_latency_ms add status_code
// (and grpc_status for gRPC), response_total classification.
var LinkerdOutboundLabels = []string{
	"direction", "authority", "target_addr", "target_ip", "target_port", "tls", "server_id",
	"dst_control_plane_ns", "dst_deployment", "dst_namespace", "dst_pod", "dst_pod_template_hash",
	"dst_service", "dst_serviceaccount", "dst_zone_locality",
}

// LinkerdInboundLabels are the labels of inbound request_total beyond the
// target labels: the default server and authorization of a pod without
// policy resources.
var LinkerdInboundLabels = []string{
	"direction", "target_addr", "target_ip", "target_port", "tls", "client_id",
	"srv_kind", "srv_name", "srv_port", "route_kind", "route_name", "authz_kind", "authz_name",
}

// LinkerdTargetLabels are the labels of every series of a linkerd-proxy
// target beyond TargetLabels.
var LinkerdTargetLabels = []string{"app", linkerdControlPlaneLabel, "deployment", "pod_template_hash", "version", "workload_ns"}

// linkerdTarget turns a sidecar target into a linkerd-proxy one.
func (s *Sim) linkerdTarget(t *target, svc *topology.Service, v int) {
	t.job = JobLinkerdProxy
	t.instance = t.ip + linkerdProxyAdminPort
	ls := []labels.Label{
		{Name: "app", Value: svc.Name},
		{Name: linkerdControlPlaneLabel, Value: LinkerdNamespace},
		{Name: "deployment", Value: svc.Workload(v)},
		{Name: "pod_template_hash", Value: podTemplateHash(t.pod, svc.Workload(v))},
		{Name: "version", Value: svc.Versions[v].Name},
		{Name: "workload_ns", Value: svc.Namespace},
	}
	slices.SortFunc(ls, func(a, b labels.Label) int { return strings.Compare(a.Name, b.Name) })
	t.extra = ls
}

// podTemplateHash is the pod-template-hash part of a Deployment pod name.
func podTemplateHash(pod, workload string) string {
	rest := strings.TrimPrefix(pod, workload+"-")
	h, _, _ := strings.Cut(rest, "-")
	return h
}

// linkerdIdentity is the mTLS identity of a service's workloads.
func linkerdIdentity(svc *topology.Service) string {
	return svc.ServiceAccount + "." + svc.Namespace + ".serviceaccount." + LinkerdIdentityDomain
}

// lkKey identifies a group of Linkerd series of one reporting pod.
type lkKey struct {
	kind lkKind
	// flow is the flow of outbound groups, -1 for inbound ones.
	flow int32
	// pod is the reporting pod's target.
	pod int32
	// peer is the destination pod (outbound) or the source service
	// (inbound).
	peer  int32
	plain bool
	class lkClass
}

type lkKind uint8

const (
	lkRequests  lkKind = iota // request_total
	lkResponses               // response_total and response_latency_ms of a class
	lkTCP                     // tcp_open_total, tcp_close_total, tcp_read_bytes_total, tcp_write_bytes_total
)

// lkClass is a response as the proxy labels it.
type lkClass uint8

const (
	lkOK          lkClass = iota // 200, success
	lkAppError                   // 500 (gRPC: status 2), failure
	lkUnavailable                // 503 (gRPC: status 14), failure
	lkTimeout                    // 504 (gRPC: status 4), failure
)

// linkerdClass maps a simulated outcome to the response the proxy sees.
// Linkerd has no Envoy retries or circuit breakers: overflow and no
// healthy endpoint are fail-fast 503s.
func linkerdClass(oc outcome) lkClass {
	switch oc {
	case ocOK:
		return lkOK
	case ocAppError:
		return lkAppError
	case ocTimeout:
		return lkTimeout
	}
	return lkUnavailable
}

// labels returns status_code, grpc_status ("" for HTTP) and classification.
func (c lkClass) labels(grpc bool) (code, grpcStatus, class string) {
	code, grpcStatus, class = "200", "0", "success"
	switch c {
	case lkAppError:
		code, grpcStatus, class = "500", "2", "failure"
	case lkUnavailable:
		code, grpcStatus, class = "503", "14", "failure"
	case lkTimeout:
		code, grpcStatus, class = "504", "4", "failure"
	}
	if grpc {
		code = "200" // gRPC errors travel in the grpc-status trailer
	} else {
		grpcStatus = ""
	}
	return code, grpcStatus, class
}

// linkerdHTTP counts the requests of HTTP/gRPC flow fi in this step: the
// source pods' outbound series per destination pod, the destination
// pods' inbound series per calling service.
func (s *Sim) linkerdHTTP(fi int, n float64, h *hop, reach float64, rs *stream) {
	f := &s.flows[fi]
	e := &s.eff[fi]
	perPair := n / float64(len(f.srcPods)*len(f.dstPods))
	for _, sp := range f.srcPods {
		for _, dp := range f.dstPods {
			k := lkKey{kind: lkRequests, flow: int32(fi), pod: sp, peer: dp, plain: e.plain}
			s.lkCount(k, perPair)
			for oc := range numOutcomes {
				if f.src[oc] > 0 {
					med, sig := h.srcLatency(oc)
					k.kind, k.class = lkResponses, linkerdClass(oc)
					s.lkRespond(k, perPair*f.src[oc], med, sig, rs)
				}
			}
		}
	}
	// Requests that reach the destination; Linkerd does not retry.
	perPod := n * reach / float64(len(f.dstPods))
	for _, dp := range f.dstPods {
		k := lkKey{kind: lkRequests, flow: -1, pod: dp, peer: int32(f.From), plain: e.plain}
		s.lkCount(k, perPod)
		for _, oc := range []outcome{ocOK, ocAppError, ocUpstream503} {
			if f.dst[oc] > 0 {
				med, sig := h.dstLatency(oc)
				k.kind, k.class = lkResponses, linkerdClass(oc)
				s.lkRespond(k, perPod*f.dst[oc], med, sig, rs)
			}
		}
	}
}

// linkerdTCP counts the connections and bytes of TCP flow fi.
func (s *Sim) linkerdTCP(fi int, n float64) {
	f := &s.flows[fi]
	e := &s.eff[fi]
	dst := &s.topo.Services[f.To]
	add := func(k lkKey, x, read, write float64) {
		base, _ := s.lkGroup(k, x*0.05)
		if base == noRef {
			return
		}
		s.addCount(base+1, x*0.05*0.98) // tcp_close_total
		s.addCount(base+2, x*read)      // tcp_read_bytes_total
		s.addCount(base+3, x*write)     // tcp_write_bytes_total
	}
	perPair := n / float64(len(f.srcPods)*len(f.dstPods))
	for _, sp := range f.srcPods {
		for _, dp := range f.dstPods {
			add(lkKey{kind: lkTCP, flow: int32(fi), pod: sp, peer: dp, plain: e.plain}, perPair, dst.ResponseBytes, dst.RequestBytes)
		}
	}
	perPod := n / float64(len(f.dstPods))
	for _, dp := range f.dstPods {
		add(lkKey{kind: lkTCP, flow: -1, pod: dp, peer: int32(f.From), plain: e.plain}, perPod, dst.RequestBytes, dst.ResponseBytes)
	}
}

const noRef = ^Ref(0)

// lkGroup adds x to the first counter of group k, creating the group when
// its first whole count is reached. It returns the group's first series
// (noRef while it does not exist) and the whole-number increment.
func (s *Sim) lkGroup(k lkKey, x float64) (Ref, float64) {
	base, ok := s.lkGroups[k]
	if !ok {
		v := s.lkPending[k] + x
		if v < 1 {
			s.lkPending[k] = v
			return noRef, 0
		}
		delete(s.lkPending, k)
		base = s.lkCreate(k)
		s.frac[base] = v - x
	}
	return base, s.addCount(base, x)
}

// lkCount adds x requests to a request_total group.
func (s *Sim) lkCount(k lkKey, x float64) { s.lkGroup(k, x) }

// lkRespond adds x responses of k's class, observing their latency.
func (s *Sim) lkRespond(k lkKey, x, median, sigma float64, rs *stream) {
	base, n := s.lkGroup(k, x)
	if n > 0 {
		s.observe(base+1, LinkerdLatencyBuckets, n, median, sigma, rs)
	}
}

// lkCreate registers the series of group k.
func (s *Sim) lkCreate(k lkKey) Ref {
	lb := s.baseLabels(k.pod, s.linkerdLabels(k)...)
	base := Ref(len(s.lsets))
	switch k.kind {
	case lkRequests:
		s.addSeries(k.pod, Counter, true, lb, MetricLinkerdRequests, "")
	case lkResponses:
		s.addSeries(k.pod, Counter, true, s.withClassification(lb, k), MetricLinkerdResponses, "")
		first := s.newHistogramFrom(k.pod, true, MetricLinkerdLatency, LinkerdLatencyBuckets, lb)
		if first != base+1 {
			panic("linkerd response layout")
		}
	case lkTCP:
		s.addSeries(k.pod, Counter, true, lb, MetricLinkerdTCPOpen, "")
		closed := labels.NewBuilder(lb).Set("classification", "success").Labels()
		s.addSeries(k.pod, Counter, true, closed, MetricLinkerdTCPClose, "")
		s.addSeries(k.pod, Counter, true, lb, MetricLinkerdTCPRead, "")
		s.addSeries(k.pod, Counter, true, lb, MetricLinkerdTCPWrite, "")
	}
	s.lkGroups[k] = base
	return base
}

func (s *Sim) withClassification(lb labels.Labels, k lkKey) labels.Labels {
	f := s.lkFlowProto(k)
	_, _, class := k.class.labels(f == topology.ProtoGRPC)
	return labels.NewBuilder(lb).Set("classification", class).Labels()
}

// lkFlowProto returns the protocol of the destination of group k.
func (s *Sim) lkFlowProto(k lkKey) string {
	if k.flow >= 0 {
		return s.topo.Services[s.flows[k.flow].To].Protocol
	}
	return s.topo.Services[s.targets[k.pod].service].Protocol
}

// linkerdLabels returns the label pairs of group k (response_total's
// classification is added by lkCreate).
func (s *Sim) linkerdLabels(k lkKey) []string {
	topo := s.topo
	proto := s.lkFlowProto(k)
	var out []string
	if k.flow >= 0 {
		f := &s.flows[k.flow]
		dst := &topo.Services[f.To]
		dp := &s.targets[k.peer]
		port := strconv.Itoa(dst.Port)
		svcName := dst.Name
		if f.SrcCluster != f.DstCluster {
			// Linkerd multicluster: the service mirror's copy of the remote
			// service, named after the link (the remote cluster).
			svcName += "-" + topo.Clusters[f.DstCluster]
		}
		out = []string{
			"direction", "outbound",
			"authority", svcName + "." + dst.Namespace + ".svc." + topology.TrustDomain + ":" + port,
			"target_addr", dp.ip + ":" + port,
			"target_ip", dp.ip,
			"target_port", port,
		}
		if k.plain {
			out = append(out, "tls", "no_identity", "no_tls_reason", "not_provided_by_service_discovery")
		} else {
			out = append(out, "tls", "true", "server_id", linkerdIdentity(dst))
		}
		if k.kind != lkTCP {
			out = append(out,
				"dst_control_plane_ns", LinkerdNamespace,
				"dst_deployment", dst.Workload(f.DstVersion),
				"dst_namespace", dst.Namespace,
				"dst_pod", dp.pod,
				"dst_pod_template_hash", podTemplateHash(dp.pod, dst.Workload(f.DstVersion)),
				"dst_service", svcName,
				"dst_serviceaccount", dst.ServiceAccount,
				"dst_zone_locality", "unknown")
		} else {
			out = append(out, "peer", "dst",
				"dst_control_plane_ns", LinkerdNamespace,
				"dst_deployment", dst.Workload(f.DstVersion),
				"dst_namespace", dst.Namespace,
				"dst_pod", dp.pod,
				"dst_pod_template_hash", podTemplateHash(dp.pod, dst.Workload(f.DstVersion)),
				"dst_service", svcName,
				"dst_serviceaccount", dst.ServiceAccount)
		}
	} else {
		t := &s.targets[k.pod]
		svc := &topo.Services[t.service]
		src := &topo.Services[k.peer]
		port := strconv.Itoa(svc.Port)
		out = []string{
			"direction", "inbound",
			"target_addr", t.ip + ":" + port,
			"target_ip", t.ip,
			"target_port", port,
		}
		if k.plain {
			out = append(out, "tls", "no_identity", "no_tls_reason", "no_tls_from_remote")
		} else {
			out = append(out, "tls", "true", "client_id", linkerdIdentity(src))
		}
		out = append(out, "srv_kind", "default", "srv_name", "all-unauthenticated", "srv_port", port)
		if k.kind == lkTCP {
			out = append(out, "peer", "src")
		} else {
			out = append(out, "route_kind", "default", "route_name", "default",
				"authz_kind", "default", "authz_name", "all-unauthenticated")
		}
	}
	if k.kind == lkResponses {
		code, grpcStatus, _ := k.class.labels(proto == topology.ProtoGRPC)
		out = append(out, "status_code", code, "grpc_status", grpcStatus)
	}
	return out
}
