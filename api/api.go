// Package api routes meshlens's HTTP endpoints: the Prometheus HTTP API v1
// (Prometheus's own implementation, over meshlens's storage), remote write and
// read, metadata, lifecycle endpoints and /metrics.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/grafana/regexp"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/route"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/notifications"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"
)

// Storage is what the query API reads: samples, chunks, exemplars and the
// TSDB status calls.
type Storage interface {
	storage.SampleAndChunkQueryable
	storage.ExemplarQueryable
	apiv1.TSDBAdminStats
}

// MetadataLister answers /api/v1/metadata.
type MetadataLister interface {
	Metadata(metric string, limit int) map[string][]metadata.Metadata
}

// Options wires the API. Every field is required unless its comment says
// otherwise.
type Options struct {
	Logger  *slog.Logger
	Storage Storage
	Engine  promql.QueryEngine
	// Parser must be the engine's parser; nil is Prometheus's default parser.
	Parser   parser.Parser
	Write    http.Handler // POST /api/v1/write and /api/v1/push
	Read     http.Handler // POST /api/v1/read
	Metadata MetadataLister
	// Metrics holds meshlens's own metrics: /metrics shows them first, with
	// the Go and process metrics. The API adds meshlens_http_* to it. Nil
	// means a private set with only the API's metrics.
	Metrics *metrics.Set
	// Gatherer holds the Prometheus-client metrics (the TSDB's, the engine's)
	// shown on /metrics after meshlens's own.
	Gatherer prometheus.Gatherer

	DataDir       string
	ListenAddress string
	Retention     string // as /api/v1/status/runtimeinfo shows it
	LookbackDelta time.Duration
	QueryTimeout  time.Duration
	Version       string
	Revision      string

	// Ready reports whether queries and writes can be served: until it
	// does (WAL replay), /-/ready, the Prometheus API, remote write and
	// read, metadata and the drill-down answer 503, as in Prometheus.
	Ready func() bool
	// Reload re-reads the configuration file (POST /-/reload). Nil answers 404.
	Reload func() error
	// LastReload reports the outcome and time of the last configuration load.
	LastReload func() (ok bool, at time.Time)
	// Rules lists rule groups for /api/v1/rules and /api/v1/alerts; nil
	// means no rules are loaded.
	Rules func(context.Context) apiv1.RulesRetriever
	// Alertmanagers lists where alerts go for /api/v1/alertmanagers; nil
	// means none.
	Alertmanagers func(context.Context) apiv1.AlertmanagerRetriever

	// Span ingest and trace queries; a nil handler leaves its paths 404.
	ZipkinSpans http.Handler // POST /api/v2/spans (Zipkin v2)
	OTLPTraces  http.Handler // POST /v1/traces (OTLP/HTTP)
	// Tempo serves Grafana Tempo's query API at the root: /api/echo,
	// /api/traces/, /api/v2/traces/, /api/search and /api/search/...,
	// /api/v2/search/...
	Tempo http.Handler
	// Jaeger serves Jaeger's query API under /jaeger, with the prefix
	// stripped (it sees /api/services).
	Jaeger http.Handler
	// Drilldown joins exemplars to traces; nil leaves the path to the
	// Prometheus API (404).
	Drilldown http.Handler // GET|POST /api/v1/drilldown
}

// New returns the root handler.
func New(o Options) http.Handler {
	started := time.Now()
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	rules := o.Rules
	if rules == nil {
		rules = func(context.Context) apiv1.RulesRetriever { return noRules{} }
	}
	ams := o.Alertmanagers
	if ams == nil {
		ams = func(context.Context) apiv1.AlertmanagerRetriever { return noAlertmanagers{} }
	}
	host, _ := os.Hostname()
	runtimeInfo := func() (apiv1.RuntimeInfo, error) {
		ok, at := o.LastReload()
		return apiv1.RuntimeInfo{
			StartTime:           started,
			CWD:                 cwd(),
			Hostname:            host,
			ServerTime:          time.Now(),
			ReloadConfigSuccess: ok,
			LastConfigTime:      at,
			GoroutineCount:      runtime.NumGoroutine(),
			GOMAXPROCS:          runtime.GOMAXPROCS(0),
			GOGC:                os.Getenv("GOGC"),
			GODEBUG:             os.Getenv("GODEBUG"),
			StorageRetention:    o.Retention,
		}, nil
	}
	v1 := apiv1.NewAPI(
		o.Engine, o.Storage, nil, o.Storage,
		func(context.Context) apiv1.ScrapePoolsRetriever { return noTargets{} },
		func(context.Context) apiv1.TargetRetriever { return noTargets{} },
		ams,
		func() promconfig.Config { return promconfig.DefaultConfig },
		nil, // flags: /api/v1/status/flags answers 404 (see below)
		apiv1.GlobalURLOptions{ListenAddress: o.ListenAddress, Host: o.ListenAddress, Scheme: "http"},
		func(f http.HandlerFunc) http.HandlerFunc { return ready(o.Ready, f).ServeHTTP },
		o.Storage, o.DataDir,
		false,    // admin API
		false, 0, // search API
		o.Logger, rules,
		0, 1, 1<<20, // remote read: served by o.Read, not by this API
		false, // agent
		regexp.MustCompile("^(?:.*)$"),
		runtimeInfo,
		&apiv1.PrometheusVersion{Version: o.Version, Revision: o.Revision, Branch: "", BuildUser: "", BuildDate: "", GoVersion: runtime.Version()},
		func() []notifications.Notification { return nil },
		func() (<-chan notifications.Notification, func(), bool) { return nil, func() {}, false },
		o.Gatherer,
		prometheus.NewRegistry(), // only for the unused built-in remote-read handler's metrics
		nil,
		false, nil, // remote write: served by o.Write
		false, false, false, // OTLP
		o.LookbackDelta,
		false, false,
		nil, nil,
		apiv1.OpenAPIOptions{Version: o.Version},
		o.Parser, false, o.QueryTimeout,
	)
	router := route.New()
	v1.Register(router)

	mux := http.NewServeMux()
	mux.Handle("/api/v1/", http.StripPrefix("/api/v1", router))
	if o.Drilldown != nil {
		mux.Handle("/api/v1/drilldown", ready(o.Ready, o.Drilldown)) // more specific than /api/v1/
	}
	mux.Handle("GET /api/v1/rules", ruleFilterSpellings(http.StripPrefix("/api/v1", router)))
	mux.Handle("/api/v1/write", ready(o.Ready, o.Write))
	mux.Handle("/api/v1/push", ready(o.Ready, o.Write))
	mux.Handle("/api/v1/read", ready(o.Ready, o.Read))
	mux.Handle("GET /api/v1/metadata", ready(o.Ready, metadataHandler(o.Metadata)))
	mux.Handle("/api/v1/status/flags", http.NotFoundHandler())
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "meshlens is Healthy.\n")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, r *http.Request) {
		if !o.Ready() {
			unavailable(w)
			return
		}
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "meshlens is Ready.\n")
	})
	if o.Reload != nil {
		reload := func(w http.ResponseWriter, r *http.Request) {
			if err := o.Reload(); err != nil {
				http.Error(w, fmt.Sprintf("failed to reload config: %s", err), http.StatusInternalServerError)
			}
		}
		mux.HandleFunc("POST /-/reload", reload)
		mux.HandleFunc("PUT /-/reload", reload)
	}
	if o.ZipkinSpans != nil {
		mux.Handle("/api/v2/spans", o.ZipkinSpans)
	}
	if o.OTLPTraces != nil {
		mux.Handle("/v1/traces", o.OTLPTraces)
	}
	if o.Tempo != nil {
		for _, p := range []string{"/api/echo", "/api/traces/", "/api/v2/traces/", "/api/search", "/api/search/", "/api/v2/search/"} {
			mux.Handle(p, o.Tempo)
		}
	}
	if o.Jaeger != nil {
		mux.Handle("/jaeger/", http.StripPrefix("/jaeger", o.Jaeger))
	}
	mux.Handle("GET /metrics", metricsHandler(o.Metrics, o.Gatherer, o.Logger))
	// Go profiles, where Prometheus serves them.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return instrument(o.Metrics, mux)
}

// ready answers 503 while isReady is false (WAL replay), as Prometheus's
// web handler does, and passes the request to next after.
func ready(isReady func() bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isReady() {
			unavailable(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func unavailable(w http.ResponseWriter) {
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprint(w, "Service Unavailable")
}

func cwd() string {
	d, err := os.Getwd()
	if err != nil {
		return "<error retrieving current working directory>"
	}
	return d
}

// metadataHandler serves /api/v1/metadata from what remote write delivered,
// in Prometheus's shape: {"metric": [{"type","help","unit"}]}.
func metadataHandler(ml MetadataLister) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := -1
		if s := r.FormValue("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				respondError(w, http.StatusBadRequest, "bad_data", "limit must be a number")
				return
			}
			limit = n
		}
		if s := r.FormValue("limit_per_metric"); s != "" {
			if _, err := strconv.Atoi(s); err != nil {
				respondError(w, http.StatusBadRequest, "bad_data", "limit_per_metric must be a number")
				return
			}
		}
		// One entry per family is kept, so limit_per_metric never trims more.
		respond(w, ml.Metadata(r.FormValue("metric"), limit))
	})
}

func respond(w http.ResponseWriter, data any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": data})
}

func respondError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "error", "errorType": typ, "error": msg})
}

// metricsHandler writes meshlens's own metrics (set, then the Go and process
// metrics), then the Prometheus-client registry's, in the text format.
func metricsHandler(set *metrics.Set, g prometheus.Gatherer, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		set.WritePrometheus(w)
		metrics.WriteProcessMetrics(w)
		mfs, err := g.Gather()
		if err != nil {
			logger.Warn("gather metrics", "err", err)
		}
		enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return
			}
		}
	})
}

// durationBuckets are the upper bounds of meshlens_http_request_duration_seconds:
// Prometheus's default buckets, extended to the longest queries.
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// instrument counts requests by route and status code and times them in
// set, in a histogram with le buckets that histogram_quantile() reads.
func instrument(set *metrics.Set, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		h := routeName(r.URL.Path)
		set.GetOrCreateCounter(fmt.Sprintf(`meshlens_http_requests_total{handler=%q,code="%d"}`, h, sw.code)).Inc()
		set.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`meshlens_http_request_duration_seconds{handler=%q}`, h), durationBuckets).UpdateDuration(start)
	})
}

// routeName bounds the handler label: path parameters are replaced, unknown
// paths are "other".
func routeName(p string) string {
	switch {
	case strings.HasPrefix(p, "/api/v1/label/"):
		return "/api/v1/label/:name/values"
	case p == "/api/v2/spans", p == "/v1/traces", p == "/api/echo", p == "/api/search":
		return p
	case strings.HasPrefix(p, "/api/traces/"):
		return "/api/traces/:id"
	case strings.HasPrefix(p, "/api/v2/traces/"):
		return "/api/v2/traces/:id"
	case strings.HasPrefix(p, "/api/search/"), strings.HasPrefix(p, "/api/v2/search/"):
		if strings.Contains(p, "/tag/") {
			return p[:strings.Index(p, "/tag/")] + "/tag/:name/values"
		}
		return p
	case strings.HasPrefix(p, "/jaeger/api/traces/"):
		return "/jaeger/api/traces/:id"
	case strings.HasPrefix(p, "/jaeger/api/v3/traces/"):
		return "/jaeger/api/v3/traces/:id"
	case strings.HasPrefix(p, "/jaeger/api/services/"):
		return "/jaeger/api/services/:name/operations"
	case strings.HasPrefix(p, "/jaeger/api/"):
		if len(p) > 64 || strings.Count(p, "/") > 4 {
			return "other"
		}
		return p
	case strings.HasPrefix(p, "/api/v1/"), strings.HasPrefix(p, "/-/"), p == "/metrics":
		if len(p) > 64 || strings.Count(p, "/") > 4 {
			return "other"
		}
		return p
	}
	return "other"
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Flush lets streamed remote-read answers through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// meshlens has no scrape targets, and no Alertmanagers or rules until the
// rules component configures them.
type (
	noTargets       struct{}
	noAlertmanagers struct{}
	noRules         struct{}
)

func (noTargets) ScrapePools() []string                       { return nil }
func (noTargets) TargetsActive() map[string][]*scrape.Target  { return nil }
func (noTargets) TargetsDropped() map[string][]*scrape.Target { return nil }
func (noTargets) TargetsDroppedCounts() map[string]int        { return nil }
func (noTargets) ScrapePoolConfig(string) (*promconfig.ScrapeConfig, error) {
	return nil, fmt.Errorf("no scrape pools")
}
func (noAlertmanagers) Alertmanagers() []*url.URL        { return nil }
func (noAlertmanagers) DroppedAlertmanagers() []*url.URL { return nil }
func (noRules) RuleGroups() []*rules.Group               { return nil }
func (noRules) AlertingRules() []*rules.AlertingRule     { return nil }

// ruleFilterSpellings accepts the filters of /api/v1/rules without brackets
// (rule_group, rule_name, file), as some clients send them, by rewriting them
// to Prometheus's rule_group[], rule_name[] and file[].
func ruleFilterSpellings(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		changed := false
		for _, k := range []string{"rule_group", "rule_name", "file"} {
			if vs, ok := q[k]; ok {
				q[k+"[]"] = append(q[k+"[]"], vs...)
				delete(q, k)
				changed = true
			}
		}
		if changed {
			r = r.Clone(r.Context())
			r.URL.RawQuery = q.Encode()
		}
		next.ServeHTTP(w, r)
	})
}
