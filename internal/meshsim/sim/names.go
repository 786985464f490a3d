package sim

import (
	"strconv"
	"strings"

	"github.com/meshlens/meshlens/internal/meshsim/rw"
)

// DurationBuckets are Envoy's default histogram buckets, which Istio uses
// for istio_request_duration_milliseconds and the size histograms.
var DurationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// ConvergenceBuckets are istiod's pilot_proxy_convergence_time buckets (seconds).
var ConvergenceBuckets = []float64{0.1, 0.5, 1, 3, 5, 10, 20, 30}

// IstioLabels is the label set of Istio's standard request metrics, as
// Istio's telemetry reports them. Prometheus drops empty label values, so
// grpc_response_status is absent from HTTP series.
var IstioLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_canonical_service", "destination_canonical_revision",
	"destination_service", "destination_service_name", "destination_service_namespace", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// TargetLabels are the labels a Kubernetes Prometheus attaches to every
// scraped series (cluster comes from its external labels).
var TargetLabels = []string{"cluster", "namespace", "pod", "instance", "job"}

// Jobs of the scrape targets.
const (
	JobPods   = "kubernetes-pods" // sidecars and gateways (Istio's merged metrics on :15020)
	JobIstiod = "istiod"
	JobKSM    = "kube-state-metrics"
)

// Metric names.
const (
	MetricRequests      = "istio_requests_total"
	MetricDuration      = "istio_request_duration_milliseconds"
	MetricRequestBytes  = "istio_request_bytes"
	MetricResponseBytes = "istio_response_bytes"
	MetricTCPSent       = "istio_tcp_sent_bytes_total"
	MetricTCPReceived   = "istio_tcp_received_bytes_total"
	MetricTCPOpened     = "istio_tcp_connections_opened_total"
	MetricTCPClosed     = "istio_tcp_connections_closed_total"
)

// outcome is the result of a request as the proxies label it.
type outcome uint8

const (
	ocOK          outcome = iota // 200
	ocAppError                   // 500, gRPC status 2
	ocUpstream503                // 503 from upstream, retried: URX at the source
	ocOverflow                   // 503 UO: circuit breaker (pending overflow)
	ocTimeout                    // 504 UT: route timeout
	ocNoHealthy                  // 503 UH: no healthy upstream
	numOutcomes
)

// codes returns response_code, grpc_response_status ("" for HTTP) and
// response_flags for an outcome seen by the given reporter.
func (o outcome) codes(grpc, source bool) (code, grpcStatus, flags string) {
	switch o {
	case ocOK:
		code, grpcStatus, flags = "200", "0", "-"
	case ocAppError:
		code, grpcStatus, flags = "500", "2", "-"
		if grpc {
			code = "200"
		}
	case ocUpstream503:
		code, grpcStatus, flags = "503", "14", "-"
		if source {
			flags = "URX"
		}
	case ocOverflow:
		code, grpcStatus, flags = "503", "14", "UO"
	case ocTimeout:
		code, grpcStatus, flags = "504", "4", "UT"
	case ocNoHealthy:
		code, grpcStatus, flags = "503", "14", "UH"
	}
	if !grpc {
		grpcStatus = ""
	}
	return code, grpcStatus, flags
}

// formatLe formats a bucket bound as Prometheus 3 stores it (le="1.0",
// le="3.6e+06").
func formatLe(f float64) string {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eI") {
		s += ".0"
	}
	return s
}

// Layout of the series of a classic histogram starting at a base ref:
// one per finite bucket, then +Inf, _sum and _count.
func histLen(buckets []float64) int { return len(buckets) + 3 }

// Layout of an Istio request group: istio_requests_total, then the
// duration, request-size and response-size histograms.
var (
	grpReqTotal  = 0
	grpDur       = 1
	grpReqBytes  = grpDur + histLen(DurationBuckets)
	grpRespBytes = grpReqBytes + histLen(DurationBuckets)
	grpLen       = grpRespBytes + histLen(DurationBuckets)
)

// Envoy upstream-cluster stats of a sidecar, per upstream service.
var envoyUpstream = []struct {
	name  string
	class string // envoy_response_code_class, for upstream_rq_xx
	gauge bool
}{
	{name: "envoy_cluster_upstream_rq_total"},
	{name: "envoy_cluster_upstream_rq_xx", class: "2"},
	{name: "envoy_cluster_upstream_rq_xx", class: "5"},
	{name: "envoy_cluster_upstream_rq_retry"},
	{name: "envoy_cluster_upstream_rq_retry_overflow"},
	{name: "envoy_cluster_upstream_rq_timeout"},
	{name: "envoy_cluster_upstream_rq_pending_overflow"},
	{name: "envoy_cluster_upstream_cx_overflow"},
	{name: "envoy_cluster_upstream_cx_none_healthy"},
	{name: "envoy_cluster_circuit_breakers_default_rq_open", gauge: true},
	{name: "envoy_cluster_circuit_breakers_default_rq_pending_open", gauge: true},
	{name: "envoy_cluster_circuit_breakers_default_cx_open", gauge: true},
	{name: "envoy_cluster_circuit_breakers_default_rq_retry_open", gauge: true},
	{name: "envoy_cluster_outlier_detection_ejections_active", gauge: true},
}

const (
	upRqTotal = iota
	upRq2xx
	upRq5xx
	upRetry
	upRetryOverflow
	upTimeout
	upPendingOverflow
	upCxOverflow
	upCxNoneHealthy
	upCBRqOpen
	upCBPendingOpen
	upCBCxOpen
	upCBRetryOpen
	upEjections
	upRqTime // envoy_cluster_upstream_rq_time histogram
)

var upLen = upRqTime + histLen(DurationBuckets)

// istiod series, per cluster.
const (
	idPushCDS = iota
	idPushEDS
	idPushLDS
	idPushRDS
	idXDS
	idRejectCDS
	idRejectLDS
	idInternalErrors
	idPushContextErrors
	idConflictInbound
	idConflictTCPOverTCP
	idConflictTCPOverHTTP
	idConflictHTTPOverTCP
	idEDSNoInstances
	idDuplicateClusters
	idVServiceDupDomain
	idGalleyFailed
	idInjectionSuccess
	idInjectionFailure
	idRootCertExpiry
	idCertChainExpiry
	idCSRCount
	idBuild
	idConvergence // pilot_proxy_convergence_time histogram
)

var idLen = idConvergence + histLen(ConvergenceBuckets)

// MetricType is the Prometheus metric type of a series.
type MetricType uint8

// Metric types.
const (
	Counter MetricType = iota + 1
	Gauge
	Histogram
)

// String returns the lower-case Prometheus type name.
func (t MetricType) String() string {
	switch t {
	case Counter:
		return "counter"
	case Gauge:
		return "gauge"
	case Histogram:
		return "histogram"
	}
	return "unknown"
}

// RemoteWriteType is t as the remote-write encoder numbers metric types.
func (t MetricType) RemoteWriteType() uint8 {
	switch t {
	case Counter:
		return rw.TypeCounter
	case Gauge:
		return rw.TypeGauge
	case Histogram:
		return rw.TypeHistogram
	}
	return rw.TypeUnknown
}
