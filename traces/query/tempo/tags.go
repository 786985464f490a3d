package tempo

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/query/traceql"
)

// Tag scopes of the v2 tag APIs.
const (
	scopeSpan      = "span"
	scopeResource  = "resource"
	scopeIntrinsic = "intrinsic"
)

type tagNamesV1 struct {
	TagNames []string `json:"tagNames"`
}

type tagScope struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

type tagNamesV2 struct {
	Scopes []tagScope `json:"scopes"`
}

type tagValuesV1 struct {
	TagValues []string `json:"tagValues"`
}

type tagValue struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

type tagValuesV2 struct {
	TagValues []tagValue `json:"tagValues"`
}

// filter is the optional q of the tag APIs: nil when absent or {}.
func filter(r *http.Request) (*traceql.Query, error) {
	s := r.URL.Query().Get("q")
	if s == "" {
		return nil, nil
	}
	q, err := traceql.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid TraceQL query: %w", err)
	}
	if q.MatchesAll() {
		return nil, nil
	}
	return q, nil
}

// tagRequest reads the time range and the filter common to the tag APIs;
// on a bad request it answers it and returns false.
func (h *handler) tagRequest(w http.ResponseWriter, r *http.Request) (traces.TimeRange, *traceql.Query, bool) {
	tr, err := h.timeRange(r, false)
	if err != nil {
		badRequest(w, err)
		return traces.TimeRange{}, nil, false
	}
	q, err := filter(r)
	if err != nil {
		badRequest(w, err)
		return traces.TimeRange{}, nil, false
	}
	return tr, q, true
}

// eachMatch calls fn with every span q selects in tr.
func (h *handler) eachMatch(r *http.Request, q *traceql.Query, tr traces.TimeRange, fn func(s *traces.Span, sum traces.Summary)) error {
	return h.reader.Traces(r.Context(), tr, func(spans []traces.Span) bool {
		matched := q.Eval(spans)
		if len(matched) == 0 {
			return true
		}
		sum := traces.Summarize(spans)
		for _, i := range matched {
			fn(&spans[i], sum)
		}
		return true
	})
}

// tagNames lists the attribute keys of a scope (span or resource), of the
// spans q selects when q is not nil.
func (h *handler) tagNames(r *http.Request, q *traceql.Query, scope traces.Scope, tr traces.TimeRange) ([]string, error) {
	if q == nil {
		names, err := h.reader.TagNames(r.Context(), scope, tr)
		if err != nil {
			return nil, fmt.Errorf("list %s tag names: %w", scope, err)
		}
		if names == nil {
			names = []string{}
		}
		return names, nil
	}
	set := map[string]struct{}{}
	err := h.eachMatch(r, q, tr, func(s *traces.Span, _ traces.Summary) {
		as := s.Attrs
		if scope == traces.ScopeResource {
			as = s.Resource
		}
		for _, a := range as {
			set[a.Key] = struct{}{}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list %s tag names: %w", scope, err)
	}
	names := make([]string, 0, len(set))
	for k := range set {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, nil
}

func (h *handler) tagsV1(w http.ResponseWriter, r *http.Request) {
	tr, q, ok := h.tagRequest(w, r)
	if !ok {
		return
	}
	var all []string
	for _, scope := range []traces.Scope{traces.ScopeSpan, traces.ScopeResource} {
		names, err := h.tagNames(r, q, scope, tr)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		all = append(all, names...)
	}
	slices.Sort(all)
	writeJSON(w, tagNamesV1{TagNames: slices.Compact(all)})
}

func (h *handler) tagsV2(w http.ResponseWriter, r *http.Request) {
	tr, q, ok := h.tagRequest(w, r)
	if !ok {
		return
	}
	want := r.URL.Query().Get("scope")
	switch want {
	case "", "all", "none", scopeSpan, scopeResource, scopeIntrinsic:
	default:
		badRequest(w, fmt.Errorf("invalid scope %q: want span, resource, intrinsic or none", want))
		return
	}
	resp := tagNamesV2{Scopes: []tagScope{}}
	for _, scope := range []traces.Scope{traces.ScopeSpan, traces.ScopeResource} {
		if want == "" || want == "all" || want == "none" || want == string(scope) {
			names, err := h.tagNames(r, q, scope, tr)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			resp.Scopes = append(resp.Scopes, tagScope{Name: string(scope), Tags: names})
		}
	}
	if want == "" || want == "all" || want == "none" || want == scopeIntrinsic {
		names := traceql.IntrinsicNames()
		slices.Sort(names)
		resp.Scopes = append(resp.Scopes, tagScope{Name: scopeIntrinsic, Tags: names})
	}
	writeJSON(w, resp)
}

// tagName is the {tag} path value; Grafana encodes it twice.
func tagName(r *http.Request) string {
	t := r.PathValue("tag")
	if strings.Contains(t, "%") {
		if u, err := url.PathUnescape(t); err == nil {
			t = u
		}
	}
	return t
}

func (h *handler) tagValuesV1(w http.ResponseWriter, r *http.Request) {
	tr, q, ok := h.tagRequest(w, r)
	if !ok {
		return
	}
	name := tagName(r)
	if name == "" {
		badRequest(w, fmt.Errorf("empty tag name"))
		return
	}
	vals, err := h.tagValues(r, q, traceql.Attribute{Scope: traceql.ScopeNone, Name: name}, tr)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	resp := tagValuesV1{TagValues: make([]string, 0, len(vals))}
	for _, v := range vals {
		resp.TagValues = append(resp.TagValues, v.Value)
	}
	slices.Sort(resp.TagValues)
	resp.TagValues = slices.Compact(resp.TagValues)
	writeJSON(w, resp)
}

func (h *handler) tagValuesV2(w http.ResponseWriter, r *http.Request) {
	tr, q, ok := h.tagRequest(w, r)
	if !ok {
		return
	}
	attr, err := traceql.ParseAttribute(tagName(r))
	if err != nil {
		badRequest(w, fmt.Errorf("invalid tag: %w", err))
		return
	}
	vals, err := h.tagValues(r, q, attr, tr)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, tagValuesV2{TagValues: vals})
}

// Intrinsic values are "keyword"s, as Tempo types them, so that Grafana
// writes them unquoted.
var (
	statusValues = []tagValue{{"keyword", "error"}, {"keyword", "ok"}, {"keyword", "unset"}}
	kindValues   = []tagValue{
		{"keyword", "client"}, {"keyword", "consumer"}, {"keyword", "internal"},
		{"keyword", "producer"}, {"keyword", "server"}, {"keyword", "unspecified"},
	}
)

// tagValues lists the distinct values of an attribute or intrinsic in tr,
// of the spans q selects when q is not nil, sorted by type then value, at
// most MaxTagValues.
func (h *handler) tagValues(r *http.Request, q *traceql.Query, attr traceql.Attribute, tr traces.TimeRange) ([]tagValue, error) {
	limit := h.opts.MaxTagValues
	if q != nil {
		set := map[tagValue]struct{}{}
		err := h.eachMatch(r, q, tr, func(s *traces.Span, sum traces.Summary) {
			if len(set) >= limit {
				return
			}
			if v, ok := valueOf(traceql.SpanValue(attr, s, sum)); ok {
				set[v] = struct{}{}
			}
		})
		if err != nil {
			return nil, fmt.Errorf("list values of %s: %w", attr, err)
		}
		out := make([]tagValue, 0, len(set))
		for v := range set {
			out = append(out, v)
		}
		sortValues(out)
		return out, nil
	}
	var out []tagValue
	switch attr.Intrinsic {
	case traceql.IntrinsicStatus:
		return slices.Clone(statusValues), nil
	case traceql.IntrinsicKind:
		return slices.Clone(kindValues), nil
	case traceql.IntrinsicName, traceql.IntrinsicRootName:
		ops, err := h.reader.Operations(r.Context(), "", tr)
		if err != nil {
			return nil, fmt.Errorf("list values of %s: %w", attr, err)
		}
		for _, op := range ops {
			out = append(out, tagValue{"string", op.Name})
		}
	case traceql.IntrinsicRootServiceName:
		svcs, err := h.reader.Services(r.Context(), tr)
		if err != nil {
			return nil, fmt.Errorf("list values of %s: %w", attr, err)
		}
		for _, s := range svcs {
			out = append(out, tagValue{"string", s})
		}
	case traceql.IntrinsicNone:
		scope := traces.Scope("")
		switch attr.Scope {
		case traceql.ScopeSpan:
			scope = traces.ScopeSpan
		case traceql.ScopeResource:
			scope = traces.ScopeResource
		}
		attrs, err := h.reader.TagValues(r.Context(), scope, attr.Name, tr, limit)
		if err != nil {
			return nil, fmt.Errorf("list values of %s: %w", attr, err)
		}
		for _, a := range attrs {
			out = append(out, attrTagValue(a))
		}
	default:
		// Durations and messages have no useful list of values.
		return []tagValue{}, nil
	}
	sortValues(out)
	out = slices.Compact(out)
	if len(out) > limit {
		out = out[:limit]
	}
	if out == nil {
		out = []tagValue{}
	}
	return out, nil
}

func sortValues(vs []tagValue) {
	slices.SortFunc(vs, func(a, b tagValue) int { return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Value, b.Value)) })
}

func attrTagValue(a traces.Attr) tagValue {
	switch a.Type {
	case traces.TypeInt:
		return tagValue{"int", a.Text()}
	case traces.TypeFloat:
		return tagValue{"float", a.Text()}
	case traces.TypeBool:
		return tagValue{"bool", a.Text()}
	}
	return tagValue{"string", a.Text()}
}

func valueOf(v traceql.Value) (tagValue, bool) {
	switch v.Type {
	case traceql.TypeString:
		return tagValue{"string", v.Str}, true
	case traceql.TypeInt:
		return tagValue{"int", strconv.FormatInt(v.Int, 10)}, true
	case traceql.TypeFloat:
		return tagValue{"float", strconv.FormatFloat(v.Flt, 'g', -1, 64)}, true
	case traceql.TypeBool:
		return tagValue{"bool", strconv.FormatBool(v.Bool)}, true
	case traceql.TypeDuration:
		return tagValue{"duration", (time.Duration(v.Int)).String()}, true
	case traceql.TypeStatus:
		return tagValue{"keyword", traces.StatusCode(v.Int).String()}, true
	case traceql.TypeKind:
		return tagValue{"keyword", traces.Kind(v.Int).String()}, true
	}
	return tagValue{}, false
}
