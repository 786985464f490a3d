// Package jaeger serves Jaeger's query API over a traces.Reader, so that
// Grafana's Jaeger data source and Jaeger's UI work against meshlens.
//
// The handler serves paths relative to its mount point (meshlens mounts
// it under /jaeger with http.StripPrefix):
//
//	GET /api/services                      {"data": [service, ...]}
//	GET /api/services/{service}/operations {"data": [name, ...]}
//	GET /api/operations?service=&spanKind= {"data": [{"name", "spanKind"}]}
//	GET /api/traces?service=&operation=&tags=&minDuration=&maxDuration=&limit=&start=&end=
//	GET /api/traces/{id}
//	GET /api/dependencies?endTs=&lookback= {"data": [{"parent", "child", "callCount"}]}
//	GET /api/v3/services, /api/v3/operations, /api/v3/traces, /api/v3/traces/{id}
//
// The /api/... answers use Jaeger's envelope {"data", "total", "limit",
// "offset", "errors"} and its UI trace model, as Jaeger v1.75 shows spans
// received over OTLP; /api/v3/... answer as Jaeger's HTTP gateway does,
// with traces in OTLP JSON.
package jaeger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshlens/meshlens/traces"
)

// Options configure the handler.
type Options struct {
	// Logger receives errors of the reader (requests answered 500). Nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock for default time ranges. Nil means time.Now.
	Now func() time.Time
	// SearchLookback is the time range searched, and listed by services
	// and operations, when a request gives no start. Zero means 48 hours,
	// as Jaeger's.
	SearchLookback time.Duration
	// DependenciesLookback is the range of /api/dependencies without a
	// lookback parameter. Zero means 24 hours, as Jaeger's.
	DependenciesLookback time.Duration
}

type handler struct {
	reader traces.Reader
	opts   Options
	mux    *http.ServeMux
}

// NewHandler returns the Jaeger query API handler over r, serving the
// paths listed in the package documentation.
func NewHandler(r traces.Reader, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SearchLookback <= 0 {
		opts.SearchLookback = 48 * time.Hour
	}
	if opts.DependenciesLookback <= 0 {
		opts.DependenciesLookback = 24 * time.Hour
	}
	h := &handler{reader: r, opts: opts, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /api/services", h.services)
	h.mux.HandleFunc("GET /api/services/{service}/operations", h.serviceOperations)
	h.mux.HandleFunc("GET /api/operations", h.operations)
	h.mux.HandleFunc("GET /api/traces", h.findTraces)
	h.mux.HandleFunc("GET /api/traces/{id}", h.trace)
	h.mux.HandleFunc("GET /api/dependencies", h.dependencies)
	h.mux.HandleFunc("GET /api/v3/services", h.servicesV3)
	h.mux.HandleFunc("GET /api/v3/operations", h.operationsV3)
	h.mux.HandleFunc("GET /api/v3/traces", h.findTracesV3)
	h.mux.HandleFunc("GET /api/v3/traces/{id}", h.traceV3)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// response is Jaeger's envelope.
type response struct {
	Data   any             `json:"data"`
	Total  int             `json:"total"`
	Limit  int             `json:"limit"`
	Offset int             `json:"offset"`
	Errors []responseError `json:"errors"`
}

type responseError struct {
	Code    int    `json:"code,omitempty"`
	Msg     string `json:"msg"`
	TraceID string `json:"traceID,omitempty"`
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// fail answers an error in the envelope, as Jaeger does (http.Error with a
// JSON body). 500s are logged.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error, code int) {
	if errors.Is(err, traces.ErrNotFound) {
		code = http.StatusNotFound
	}
	if code == http.StatusInternalServerError {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return
		}
		h.opts.Logger.Error("jaeger api request failed", "path", r.URL.Path, "err", err)
	}
	b, _ := json.Marshal(response{Errors: []responseError{{Code: code, Msg: err.Error()}}})
	http.Error(w, string(b), code)
}

func (h *handler) lookbackRange() traces.TimeRange {
	end := h.opts.Now()
	return traces.TimeRange{Start: uint64(end.Add(-h.opts.SearchLookback).UnixNano()), End: uint64(end.UnixNano())}
}

func (h *handler) services(w http.ResponseWriter, r *http.Request) {
	svcs, err := h.reader.Services(r.Context(), h.lookbackRange())
	if err != nil {
		h.fail(w, r, fmt.Errorf("list services: %w", err), http.StatusInternalServerError)
		return
	}
	if svcs == nil {
		svcs = []string{}
	}
	writeJSON(w, response{Data: svcs, Total: len(svcs)})
}

func (h *handler) serviceOperations(w http.ResponseWriter, r *http.Request) {
	svc := r.PathValue("service")
	if u, err := url.QueryUnescape(svc); err == nil {
		svc = u
	}
	ops, err := h.reader.Operations(r.Context(), svc, h.lookbackRange())
	if err != nil {
		h.fail(w, r, fmt.Errorf("list operations of %q: %w", svc, err), http.StatusInternalServerError)
		return
	}
	names := []string{}
	for _, op := range ops {
		names = append(names, op.Name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	writeJSON(w, response{Data: names, Total: len(names)})
}

type operation struct {
	Name     string `json:"name"`
	SpanKind string `json:"spanKind"`
}

// kindName is Jaeger's span kind of an operation: "" when unspecified.
func kindName(k traces.Kind) string {
	if k == traces.KindUnspecified {
		return ""
	}
	return k.String()
}

// listOperations lists a service's operations, of one kind if kind is
// not empty.
func (h *handler) listOperations(ctx context.Context, service, kind string) ([]operation, error) {
	ops, err := h.reader.Operations(ctx, service, h.lookbackRange())
	if err != nil {
		return nil, fmt.Errorf("list operations of %q: %w", service, err)
	}
	out := []operation{}
	for _, op := range ops {
		if k := kindName(op.Kind); kind == "" || k == kind {
			out = append(out, operation{Name: op.Name, SpanKind: k})
		}
	}
	return out, nil
}

func (h *handler) operations(w http.ResponseWriter, r *http.Request) {
	svc := r.FormValue("service")
	if svc == "" {
		h.fail(w, r, errors.New("parameter 'service' is required"), http.StatusBadRequest)
		return
	}
	ops, err := h.listOperations(r.Context(), svc, r.FormValue("spanKind"))
	if err != nil {
		h.fail(w, r, err, http.StatusInternalServerError)
		return
	}
	writeJSON(w, response{Data: ops, Total: len(ops)})
}

// query is a trace search.
type query struct {
	service, operation       string
	tags                     map[string]string
	minDuration, maxDuration time.Duration
	limit                    int
	tr                       traces.TimeRange
}

func parseError(name string, err error) error {
	return fmt.Errorf("unable to parse param '%s': %w", name, err)
}

// microsParam reads a time in µs since the epoch; def when absent.
func microsParam(r *http.Request, name string, def time.Time) (uint64, error) {
	s := r.FormValue(name)
	if s == "" {
		return uint64(def.UnixNano()), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		if err == nil {
			err = errors.New("negative time")
		}
		return 0, parseError(name, err)
	}
	return uint64(n) * 1000, nil
}

func (h *handler) parseQuery(r *http.Request) (query, error) {
	now := h.opts.Now()
	q := query{service: r.FormValue("service"), operation: r.FormValue("operation"), tags: map[string]string{}, limit: 100}
	var err error
	if q.tr.Start, err = microsParam(r, "start", now.Add(-h.opts.SearchLookback)); err != nil {
		return q, err
	}
	if q.tr.End, err = microsParam(r, "end", now); err != nil {
		return q, err
	}
	for _, t := range r.Form["tag"] {
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			return q, fmt.Errorf("malformed 'tag' parameter, expecting key:value, received: %s", t)
		}
		q.tags[k] = v
	}
	for _, t := range r.Form["tags"] {
		var m map[string]string
		if err := json.Unmarshal([]byte(t), &m); err != nil {
			return q, fmt.Errorf("malformed 'tags' parameter, cannot unmarshal JSON: %w", err)
		}
		for k, v := range m {
			q.tags[k] = v
		}
	}
	if s := r.FormValue("limit"); s != "" {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return q, parseError("limit", err)
		}
		if n > 0 {
			q.limit = int(n)
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"minDuration", &q.minDuration}, {"maxDuration", &q.maxDuration}} {
		if s := r.FormValue(d.name); s != "" {
			if *d.dst, err = time.ParseDuration(s); err != nil {
				return q, parseError(d.name, err)
			}
		}
	}
	if q.minDuration != 0 && q.maxDuration != 0 && q.maxDuration < q.minDuration {
		return q, errors.New("'maxDuration' should be greater than 'minDuration'")
	}
	return q, nil
}

// spanMatches reports whether a span satisfies every condition of q, as
// Jaeger's stores search: one span of the service with the operation,
// duration and all tags. A tag matches a span attribute, a resource
// attribute, an event attribute or a tag Jaeger derives (span.kind,
// otel.status_code, ...), compared as text; error=true matches spans with
// status error, error=false the others.
func (q *query) spanMatches(s *traces.Span) bool {
	if q.service != "" && s.Service != q.service {
		return false
	}
	if q.operation != "" && s.Name != q.operation {
		return false
	}
	if (q.tr.Start != 0 && s.StartUnixNano < q.tr.Start) || (q.tr.End != 0 && s.StartUnixNano > q.tr.End) {
		return false
	}
	d := time.Duration(s.DurationNanos())
	if q.minDuration != 0 && d < q.minDuration || q.maxDuration != 0 && d > q.maxDuration {
		return false
	}
	for k, v := range q.tags {
		if !tagMatches(s, k, v) {
			return false
		}
	}
	return true
}

func tagMatches(s *traces.Span, k, v string) bool {
	if k == "error" {
		return (s.StatusCode == traces.StatusError) == (v == "true")
	}
	for _, as := range [][]traces.Attr{s.Attrs, s.Resource} {
		for _, a := range as {
			if a.Key == k && a.Text() == v {
				return true
			}
		}
	}
	for _, e := range s.Events {
		for _, a := range e.Attrs {
			if a.Key == k && a.Text() == v {
				return true
			}
		}
	}
	switch k {
	case traces.ServiceNameKey:
		return s.Service == v
	case "span.kind":
		return s.Kind != traces.KindUnspecified && s.Kind.String() == v
	case "otel.status_code":
		return s.StatusCode == traces.StatusOK && v == "OK" || s.StatusCode == traces.StatusError && v == "ERROR"
	case "otel.status_description":
		return s.StatusMessage != "" && s.StatusMessage == v
	case "otel.scope.name":
		return s.ScopeName != "" && s.ScopeName == v
	case "otel.scope.version":
		return s.ScopeVersion != "" && s.ScopeVersion == v
	case "w3c.tracestate":
		return s.TraceState != "" && s.TraceState == v
	}
	return false
}

// find returns the ids of the traces, newest first, with a span matching
// q, at most q.limit.
func (h *handler) find(ctx context.Context, q *query) ([]traces.TraceID, error) {
	var ids []traces.TraceID
	seen := map[traces.TraceID]bool{}
	err := h.reader.Traces(ctx, q.tr, func(spans []traces.Span) bool {
		if len(spans) == 0 || seen[spans[0].TraceID] {
			return true
		}
		for i := range spans {
			if q.spanMatches(&spans[i]) {
				seen[spans[0].TraceID] = true
				ids = append(ids, spans[0].TraceID)
				break
			}
		}
		return len(ids) < q.limit
	})
	if err != nil {
		return nil, fmt.Errorf("find traces: %w", err)
	}
	return ids, nil
}

func (h *handler) findTraces(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, err, http.StatusBadRequest)
		return
	}
	q, err := h.parseQuery(r)
	if err != nil {
		h.fail(w, r, err, http.StatusBadRequest)
		return
	}
	var (
		ids      []traces.TraceID
		uiErrors []responseError
	)
	if given := r.Form["traceID"]; len(given) > 0 {
		for _, s := range given {
			id, err := traces.ParseTraceID(s)
			if err != nil {
				h.fail(w, r, fmt.Errorf("cannot parse traceID param: %w", err), http.StatusBadRequest)
				return
			}
			ids = append(ids, id)
		}
	} else {
		if q.service == "" {
			h.fail(w, r, errors.New("parameter 'service' is required"), http.StatusBadRequest)
			return
		}
		if ids, err = h.find(r.Context(), &q); err != nil {
			h.fail(w, r, err, http.StatusInternalServerError)
			return
		}
	}
	data := []uiTrace{}
	for _, id := range ids {
		spans, err := h.reader.Trace(r.Context(), id, traces.TimeRange{})
		if errors.Is(err, traces.ErrNotFound) {
			uiErrors = append(uiErrors, responseError{Msg: err.Error(), TraceID: traceIDString(id)})
			continue
		}
		if err != nil {
			h.fail(w, r, fmt.Errorf("read trace %s: %w", id, err), http.StatusInternalServerError)
			return
		}
		data = append(data, toUITrace(spans))
	}
	writeJSON(w, response{Data: data, Errors: uiErrors})
}

func (h *handler) trace(w http.ResponseWriter, r *http.Request) {
	id, err := traces.ParseTraceID(r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err, http.StatusBadRequest)
		return
	}
	var tr traces.TimeRange
	if r.FormValue("start") != "" {
		if tr.Start, err = microsParam(r, "start", time.Time{}); err != nil {
			h.fail(w, r, err, http.StatusBadRequest)
			return
		}
	}
	if r.FormValue("end") != "" {
		if tr.End, err = microsParam(r, "end", time.Time{}); err != nil {
			h.fail(w, r, err, http.StatusBadRequest)
			return
		}
	}
	spans, err := h.reader.Trace(r.Context(), id, tr)
	if err != nil {
		h.fail(w, r, err, http.StatusInternalServerError)
		return
	}
	writeJSON(w, response{Data: []uiTrace{toUITrace(spans)}})
}

type dependencyLink struct {
	Parent    string `json:"parent"`
	Child     string `json:"child"`
	CallCount uint64 `json:"callCount"`
}

// dependencies counts, in the traces of the window, the spans whose
// parent span belongs to another service (a client span and the server
// span answering it), per pair of services.
func (h *handler) dependencies(w http.ResponseWriter, r *http.Request) {
	now := h.opts.Now()
	end := now
	if s := r.FormValue("endTs"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			h.fail(w, r, parseError("endTs", err), http.StatusBadRequest)
			return
		}
		end = time.UnixMilli(ms)
	}
	lookback := h.opts.DependenciesLookback
	if s := r.FormValue("lookback"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			if err == nil {
				err = errors.New("negative lookback")
			}
			h.fail(w, r, parseError("lookback", err), http.StatusBadRequest)
			return
		}
		lookback = time.Duration(ms) * time.Millisecond
	}
	start := end.Add(-lookback)
	if start.Before(time.Unix(0, 0)) {
		start = time.Unix(0, 1)
	}
	service := r.FormValue("service")
	tr := traces.TimeRange{Start: uint64(start.UnixNano()), End: uint64(end.UnixNano())}
	counts := map[[2]string]uint64{}
	err := h.reader.Traces(r.Context(), tr, func(spans []traces.Span) bool {
		svc := make(map[traces.SpanID]string, len(spans))
		for i := range spans {
			svc[spans[i].SpanID] = spans[i].Service
		}
		for i := range spans {
			s := &spans[i]
			parent, ok := svc[s.ParentSpanID]
			if s.ParentSpanID.IsZero() || !ok || parent == "" || s.Service == "" || parent == s.Service {
				continue
			}
			if service == "" || service == parent || service == s.Service {
				counts[[2]string{parent, s.Service}]++
			}
		}
		return true
	})
	if err != nil {
		h.fail(w, r, fmt.Errorf("compute dependencies: %w", err), http.StatusInternalServerError)
		return
	}
	links := make([]dependencyLink, 0, len(counts))
	for k, n := range counts {
		links = append(links, dependencyLink{Parent: k[0], Child: k[1], CallCount: n})
	}
	slices.SortFunc(links, func(a, b dependencyLink) int {
		return strings.Compare(a.Parent+"\x00"+a.Child, b.Parent+"\x00"+b.Child)
	})
	writeJSON(w, response{Data: links})
}
