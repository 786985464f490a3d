package tempo

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/query/traceql"
)

// Search defaults, as Tempo's.
const (
	defaultLimit           = 20
	defaultSpansPerSpanSet = 3
	rootNotReceived        = "<root span not yet received>"
)

// searchResponse is Tempo's SearchResponse in its JSON form: 64-bit
// integers are strings, as proto3 JSON writes them.
type searchResponse struct {
	Traces  []traceResult `json:"traces"`
	Metrics searchMetrics `json:"metrics"`
}

type traceResult struct {
	TraceID           string    `json:"traceID"`
	RootServiceName   string    `json:"rootServiceName"`
	RootTraceName     string    `json:"rootTraceName,omitempty"`
	StartTimeUnixNano string    `json:"startTimeUnixNano"`
	DurationMs        uint64    `json:"durationMs"`
	SpanSets          []spanSet `json:"spanSets"`
	SpanSet           *spanSet  `json:"spanSet,omitempty"` // the first of SpanSets, for older Grafanas

	start uint64
}

type spanSet struct {
	Spans   []spanResult `json:"spans"`
	Matched int          `json:"matched"`
}

type spanResult struct {
	SpanID            string     `json:"spanID"`
	Name              string     `json:"name"`
	StartTimeUnixNano string     `json:"startTimeUnixNano"`
	DurationNanos     string     `json:"durationNanos"`
	Attributes        []keyValue `json:"attributes,omitempty"`
}

// keyValue and anyValue are OTLP's, in OTLP JSON.
type keyValue struct {
	Key   string   `json:"key"`
	Value anyValue `json:"value"`
}

type anyValue struct {
	StringValue *string  `json:"stringValue,omitempty"`
	IntValue    *string  `json:"intValue,omitempty"`
	DoubleValue *float64 `json:"doubleValue,omitempty"`
	BoolValue   *bool    `json:"boolValue,omitempty"`
}

type searchMetrics struct {
	InspectedTraces uint32 `json:"inspectedTraces"`
	InspectedSpans  string `json:"inspectedSpans"`
	InspectedBytes  string `json:"inspectedBytes"`
	CompletedJobs   uint32 `json:"completedJobs"`
	TotalJobs       uint32 `json:"totalJobs"`
}

// matcher selects the spans of a trace that a search finds, nil when the
// trace does not match; attrs are the attributes shown with those spans.
type matcher struct {
	match func(spans []traces.Span) []int
	attrs []traceql.Attribute
}

func (h *handler) search(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tr, err := h.timeRange(r, false)
	if err != nil {
		badRequest(w, err)
		return
	}
	limit, err := positiveInt(r, "limit", defaultLimit)
	if err != nil {
		badRequest(w, err)
		return
	}
	if h.opts.MaxSearchLimit > 0 {
		limit = min(limit, h.opts.MaxSearchLimit)
	}
	spss, err := positiveInt(r, "spss", defaultSpansPerSpanSet)
	if err != nil {
		badRequest(w, err)
		return
	}
	minDur, err := duration(q.Get("minDuration"), "minDuration")
	if err != nil {
		badRequest(w, err)
		return
	}
	maxDur, err := duration(q.Get("maxDuration"), "maxDuration")
	if err != nil {
		badRequest(w, err)
		return
	}
	if maxDur > 0 && maxDur < minDur {
		badRequest(w, fmt.Errorf("invalid maxDuration %s: less than minDuration %s", maxDur, minDur))
		return
	}
	var m matcher
	if qs := q.Get("q"); qs != "" {
		query, err := traceql.Parse(qs)
		if err != nil {
			badRequest(w, fmt.Errorf("invalid TraceQL query: %w", err))
			return
		}
		m = matcher{match: query.Eval, attrs: query.Attributes()}
	} else {
		tags, err := parseLogfmt(q.Get("tags"))
		if err != nil {
			badRequest(w, fmt.Errorf("invalid tags: %w", err))
			return
		}
		m = legacyMatcher(tags)
	}
	if minDur > 0 || maxDur > 0 {
		inner := m.match
		m.match = func(spans []traces.Span) []int {
			sum := traces.Summarize(spans)
			d := time.Duration(sum.EndUnixNano - min(sum.StartUnixNano, sum.EndUnixNano))
			if d < minDur || maxDur > 0 && d > maxDur {
				return nil
			}
			return inner(spans)
		}
	}

	resp, err := h.runSearch(r, tr, m, limit, spss)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, resp)
}

func duration(s, name string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid %s %q: want a duration like 100ms", name, s)
	}
	return d, nil
}

// runSearch evaluates m over the traces in tr, newest first, until limit
// traces matched. A trace the reader passes more than once (its spans are
// in several blocks) is read again whole and evaluated over all its spans.
func (h *handler) runSearch(r *http.Request, tr traces.TimeRange, m matcher, limit, spss int) (*searchResponse, error) {
	var (
		resp    = &searchResponse{Traces: []traceResult{}, Metrics: searchMetrics{CompletedJobs: 1, TotalJobs: 1}}
		seen    = map[traces.TraceID]bool{}
		again   []traces.TraceID
		results = map[traces.TraceID]traceResult{}
		order   []traces.TraceID
		spans   int
	)
	err := h.reader.Traces(r.Context(), tr, func(ts []traces.Span) bool {
		if len(ts) == 0 {
			return true
		}
		id := ts[0].TraceID
		spans += len(ts)
		if seen[id] {
			if !slices.Contains(again, id) {
				again = append(again, id)
			}
			return true
		}
		seen[id] = true
		if matched := m.match(ts); len(matched) > 0 {
			results[id] = newTraceResult(ts, matched, m.attrs, spss)
			order = append(order, id)
		}
		return len(order) < limit
	})
	if err != nil {
		return nil, fmt.Errorf("search traces: %w", err)
	}
	for _, id := range again {
		ts, err := h.reader.Trace(r.Context(), id, tr)
		if err != nil {
			return nil, fmt.Errorf("search traces: read split trace %s: %w", id, err)
		}
		_, had := results[id]
		if matched := m.match(ts); len(matched) > 0 {
			results[id] = newTraceResult(ts, matched, m.attrs, spss)
			if !had {
				order = append(order, id)
			}
		} else if had {
			delete(results, id)
		}
	}
	for _, id := range order {
		if res, ok := results[id]; ok {
			resp.Traces = append(resp.Traces, res)
		}
	}
	slices.SortStableFunc(resp.Traces, func(a, b traceResult) int { return cmp.Compare(b.start, a.start) })
	if len(resp.Traces) > limit {
		resp.Traces = resp.Traces[:limit]
	}
	resp.Metrics.InspectedTraces = uint32(len(seen))
	resp.Metrics.InspectedSpans = strconv.Itoa(spans)
	resp.Metrics.InspectedBytes = "0"
	return resp, nil
}

// newTraceResult describes a matched trace; it copies what it keeps from
// spans.
func newTraceResult(spans []traces.Span, matched []int, attrs []traceql.Attribute, spss int) traceResult {
	sum := traces.Summarize(spans)
	res := traceResult{
		TraceID:           sum.TraceID.String(),
		RootServiceName:   sum.RootService,
		RootTraceName:     sum.RootName,
		StartTimeUnixNano: strconv.FormatUint(sum.StartUnixNano, 10),
		DurationMs:        (sum.EndUnixNano - min(sum.StartUnixNano, sum.EndUnixNano)) / uint64(time.Millisecond),
		start:             sum.StartUnixNano,
	}
	if !slices.ContainsFunc(spans, func(s traces.Span) bool { return s.IsRoot() }) {
		res.RootServiceName, res.RootTraceName = rootNotReceived, ""
	}
	shown := slices.Clone(matched)
	slices.SortStableFunc(shown, func(a, b int) int { return cmp.Compare(spans[a].StartUnixNano, spans[b].StartUnixNano) })
	if len(shown) > spss {
		shown = shown[:spss]
	}
	set := spanSet{Spans: make([]spanResult, 0, len(shown)), Matched: len(matched)}
	for _, i := range shown {
		s := &spans[i]
		set.Spans = append(set.Spans, spanResult{
			SpanID:            s.SpanID.String(),
			Name:              s.Name,
			StartTimeUnixNano: strconv.FormatUint(s.StartUnixNano, 10),
			DurationNanos:     strconv.FormatUint(s.DurationNanos(), 10),
			Attributes:        spanAttributes(s, sum, attrs),
		})
	}
	res.SpanSets = []spanSet{set}
	res.SpanSet = &res.SpanSets[0]
	return res
}

// spanAttributes are the values of the query's attributes on the span,
// keyed by their name without scope, and the span's service.name.
func spanAttributes(s *traces.Span, sum traces.Summary, attrs []traceql.Attribute) []keyValue {
	var out []keyValue
	has := func(k string) bool {
		return slices.ContainsFunc(out, func(kv keyValue) bool { return kv.Key == k })
	}
	for _, a := range attrs {
		if has(a.Name) {
			continue
		}
		switch a.Intrinsic {
		case traceql.IntrinsicNone, traceql.IntrinsicStatus, traceql.IntrinsicKind, traceql.IntrinsicStatusMessage:
		default:
			continue // shown elsewhere: name, durations, root
		}
		v := traceql.SpanValue(a, s, sum)
		if kv, ok := toKeyValue(a.Name, v); ok {
			out = append(out, kv)
		}
	}
	if !has(traces.ServiceNameKey) && s.Service != "" {
		svc := s.Service
		out = append(out, keyValue{Key: traces.ServiceNameKey, Value: anyValue{StringValue: &svc}})
	}
	return out
}

func toKeyValue(key string, v traceql.Value) (keyValue, bool) {
	kv := keyValue{Key: key}
	switch v.Type {
	case traceql.TypeString:
		s := v.Str
		kv.Value.StringValue = &s
	case traceql.TypeInt, traceql.TypeDuration:
		s := strconv.FormatInt(v.Int, 10)
		kv.Value.IntValue = &s
	case traceql.TypeFloat:
		f := v.Flt
		kv.Value.DoubleValue = &f
	case traceql.TypeBool:
		b := v.Bool
		kv.Value.BoolValue = &b
	case traceql.TypeStatus:
		s := traces.StatusCode(v.Int).String()
		kv.Value.StringValue = &s
	case traceql.TypeKind:
		s := traces.Kind(v.Int).String()
		kv.Value.StringValue = &s
	default:
		return kv, false
	}
	return kv, true
}

// legacyMatcher is Tempo's tag search: the spans on which every tag
// matches. Keys are attribute names (span, else resource) compared as
// text, and name (the span name), status.code (unset, ok, error) and
// error=true (status error).
func legacyMatcher(tags [][2]string) matcher {
	var attrs []traceql.Attribute
	for _, kv := range tags {
		switch kv[0] {
		case "name", "status.code", "error":
		default:
			attrs = append(attrs, traceql.Attribute{Scope: traceql.ScopeNone, Name: kv[0]})
		}
	}
	spanMatches := func(s *traces.Span) bool {
		for _, kv := range tags {
			k, v := kv[0], kv[1]
			var ok bool
			switch k {
			case "name":
				ok = s.Name == v
			case "status.code":
				ok = s.StatusCode.String() == v
			case "error":
				ok = (s.StatusCode == traces.StatusError) == (v == "true")
			default:
				if a, found := s.Attr(k); found {
					ok = a.Text() == v
				} else if a, found := s.ResourceAttr(k); found {
					ok = a.Text() == v
				} else {
					ok = k == traces.ServiceNameKey && s.Service == v
				}
			}
			if !ok {
				return false
			}
		}
		return true
	}
	return matcher{
		attrs: attrs,
		match: func(spans []traces.Span) []int {
			var out []int
			for i := range spans {
				if spanMatches(&spans[i]) {
					out = append(out, i)
				}
			}
			return out
		},
	}
}

// parseLogfmt parses `key=value key2="quoted value"`.
func parseLogfmt(s string) ([][2]string, error) {
	var out [][2]string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \t\"") {
			return nil, fmt.Errorf("%q: want key=value", s)
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return nil, fmt.Errorf("%s: unterminated quoted value", key)
			}
			v, err := strconv.Unquote(s[:end+1])
			if err != nil {
				return nil, fmt.Errorf("%s: invalid quoted value %s", key, s[:end+1])
			}
			val, s = v, s[end+1:]
		} else {
			end := strings.IndexAny(s, " \t")
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		out = append(out, [2]string{key, val})
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", contentTypeJSON)
	_ = json.NewEncoder(w).Encode(v)
}
