package jaeger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/meshlens/meshlens/traces"
)

// Jaeger's api_v3 HTTP gateway: results as {"result": <OTLP JSON>}, errors
// as {"error": {"httpCode", "message"}}, other messages in proto3 JSON
// (empty fields left out).

type gatewayError struct {
	Error gatewayErrorDetails `json:"error"`
}

type gatewayErrorDetails struct {
	HTTPCode int    `json:"httpCode,omitempty"`
	Message  string `json:"message,omitempty"`
}

func (h *handler) failV3(w http.ResponseWriter, r *http.Request, err error, code int) {
	if code == http.StatusInternalServerError {
		h.opts.Logger.Error("jaeger api request failed", "path", r.URL.Path, "err", err)
	}
	b, _ := json.Marshal(gatewayError{Error: gatewayErrorDetails{HTTPCode: code, Message: err.Error()}})
	http.Error(w, string(b), code)
}

func paramError(name string, err error) error {
	return fmt.Errorf("malformed parameter %s: %w", name, err)
}

func (h *handler) servicesV3(w http.ResponseWriter, r *http.Request) {
	svcs, err := h.reader.Services(r.Context(), h.lookbackRange())
	if err != nil {
		h.failV3(w, r, fmt.Errorf("list services: %w", err), http.StatusInternalServerError)
		return
	}
	writeJSON(w, struct {
		Services []string `json:"services,omitempty"`
	}{svcs})
}

func (h *handler) operationsV3(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ops, err := h.listOperations(r.Context(), q.Get("service"), q.Get("span_kind"))
	if err != nil {
		h.failV3(w, r, err, http.StatusInternalServerError)
		return
	}
	type op struct {
		Name     string `json:"name,omitempty"`
		SpanKind string `json:"spanKind,omitempty"`
	}
	out := make([]op, len(ops))
	for i, o := range ops {
		out[i] = op(o)
	}
	writeJSON(w, struct {
		Operations []op `json:"operations,omitempty"`
	}{out})
}

func rfc3339(q map[string][]string, name string) (uint64, bool, error) {
	v := ""
	if len(q[name]) > 0 {
		v = q[name][0]
	}
	if v == "" {
		return 0, false, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, false, paramError(name, err)
	}
	if t.Before(time.Unix(0, 0)) {
		return 0, false, paramError(name, errors.New("before 1970"))
	}
	return uint64(t.UnixNano()), true, nil
}

func (h *handler) traceV3(w http.ResponseWriter, r *http.Request) {
	id, err := traces.ParseTraceID(r.PathValue("id"))
	if err != nil {
		h.failV3(w, r, paramError("trace_id", err), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	var tr traces.TimeRange
	if tr.Start, _, err = rfc3339(q, "start_time"); err != nil {
		h.failV3(w, r, err, http.StatusBadRequest)
		return
	}
	if tr.End, _, err = rfc3339(q, "end_time"); err != nil {
		h.failV3(w, r, err, http.StatusBadRequest)
		return
	}
	spans, err := h.reader.Trace(r.Context(), id, tr)
	if errors.Is(err, traces.ErrNotFound) {
		h.failV3(w, r, errors.New("No traces found"), http.StatusNotFound)
		return
	}
	if err != nil {
		h.failV3(w, r, fmt.Errorf("read trace %s: %w", id, err), http.StatusInternalServerError)
		return
	}
	h.writeResult(w, r, [][]traces.Span{spans})
}

func (h *handler) findTracesV3(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	q := query{service: v.Get("query.service_name"), operation: v.Get("query.operation_name"), tags: map[string]string{}, limit: 100}
	var (
		hasMin, hasMax bool
		err            error
	)
	if q.tr.Start, hasMin, err = rfc3339(v, "query.start_time_min"); err != nil {
		h.failV3(w, r, err, http.StatusBadRequest)
		return
	}
	if q.tr.End, hasMax, err = rfc3339(v, "query.start_time_max"); err != nil {
		h.failV3(w, r, err, http.StatusBadRequest)
		return
	}
	if !hasMin || !hasMax {
		h.failV3(w, r, errors.New("query.start_time_min and query.start_time_max are required"), http.StatusBadRequest)
		return
	}
	if s := v.Get("query.num_traces"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			h.failV3(w, r, paramError("query.num_traces", err), http.StatusBadRequest)
			return
		}
		if n > 0 {
			q.limit = n
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"query.duration_min", &q.minDuration}, {"query.duration_max", &q.maxDuration}} {
		if s := v.Get(d.name); s != "" {
			if *d.dst, err = time.ParseDuration(s); err != nil {
				h.failV3(w, r, paramError(d.name, err), http.StatusBadRequest)
				return
			}
		}
	}
	if s := v.Get("query.attributes"); s != "" {
		if err := json.Unmarshal([]byte(s), &q.tags); err != nil {
			h.failV3(w, r, paramError("query.attributes", err), http.StatusBadRequest)
			return
		}
	}
	ids, err := h.find(r.Context(), &q)
	if err != nil {
		h.failV3(w, r, err, http.StatusInternalServerError)
		return
	}
	var all [][]traces.Span
	for _, id := range ids {
		spans, err := h.reader.Trace(r.Context(), id, traces.TimeRange{})
		if errors.Is(err, traces.ErrNotFound) {
			continue
		}
		if err != nil {
			h.failV3(w, r, fmt.Errorf("read trace %s: %w", id, err), http.StatusInternalServerError)
			return
		}
		all = append(all, spans)
	}
	if len(all) == 0 {
		h.failV3(w, r, errors.New("No traces found"), http.StatusNotFound)
		return
	}
	h.writeResult(w, r, all)
}

// writeResult writes the traces' resource spans, together, as
// {"result": <OTLP JSON>}, adjusted as Jaeger's v2 query service does:
// attributes sorted by key, events by name, telemetry.sdk.* attributes of
// spans moved to their resource.
func (h *handler) writeResult(w http.ResponseWriter, r *http.Request, all [][]traces.Span) {
	td := ptrace.NewTraces()
	for _, spans := range all {
		traces.ToPdata(spans).ResourceSpans().MoveAndAppendTo(td.ResourceSpans())
	}
	adjustV3(td)
	b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	if err != nil {
		h.failV3(w, r, fmt.Errorf("encode traces: %w", err), http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	buf.WriteString(`{"result":`)
	buf.Write(b)
	buf.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

func adjustV3(td ptrace.Traces) {
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				for k := range libraryKeys {
					v, ok := sp.Attributes().Get(k)
					if !ok {
						continue
					}
					if existing, ok := rs.Resource().Attributes().Get(k); ok && existing.AsRaw() != v.AsRaw() {
						continue
					}
					v.CopyTo(rs.Resource().Attributes().PutEmpty(k))
					sp.Attributes().Remove(k)
				}
			}
		}
	}
	for _, rs := range td.ResourceSpans().All() {
		sortAttributes(rs.Resource().Attributes())
		for _, ss := range rs.ScopeSpans().All() {
			sortAttributes(ss.Scope().Attributes())
			for _, sp := range ss.Spans().All() {
				sortAttributes(sp.Attributes())
				sp.Events().Sort(func(a, b ptrace.SpanEvent) bool { return a.Name() < b.Name() })
				for _, e := range sp.Events().All() {
					sortAttributes(e.Attributes())
				}
				for _, l := range sp.Links().All() {
					sortAttributes(l.Attributes())
				}
			}
		}
	}
}

func sortAttributes(m pcommon.Map) {
	type entry struct {
		k string
		v pcommon.Value
	}
	entries := make([]entry, 0, m.Len())
	for k, v := range m.All() {
		entries = append(entries, entry{k, v})
	}
	if sort.SliceIsSorted(entries, func(i, j int) bool { return entries[i].k < entries[j].k }) {
		return
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].k < entries[j].k })
	sorted := pcommon.NewMap()
	sorted.EnsureCapacity(len(entries))
	for _, e := range entries {
		e.v.CopyTo(sorted.PutEmpty(e.k))
	}
	sorted.MoveTo(m)
}
