package spanblock

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/meshlens/meshlens/traces"
)

// tagsFile is tags.json: per scope and attribute key, up to
// WriteOptions.MaxTagValues distinct values. It is apart from meta.json so
// that listing blocks stays cheap; TagValues reads it on first use.
type tagsFile struct {
	Span     map[string]*tagValues `json:"span"`
	Resource map[string]*tagValues `json:"resource"`
}

// tagValues are the distinct values of one key, sorted by text. Truncated
// says that more values were seen than kept.
type tagValues struct {
	Values    []tagValue `json:"values"`
	Truncated bool       `json:"truncated,omitempty"`
}

// tagValue is a value as its type and text (traces.Attr.Text), which
// round-trips every type, NaN and infinities included, through JSON.
type tagValue struct {
	Type traces.ValueType `json:"type"`
	Text string           `json:"text"`
}

func (v tagValue) attr(key string) (traces.Attr, error) {
	a := traces.Attr{Key: key, Type: v.Type}
	var err error
	switch v.Type {
	case traces.TypeString, traces.TypeBytes, traces.TypeJSON:
		a.Str = v.Text
	case traces.TypeInt:
		a.Int, err = strconv.ParseInt(v.Text, 10, 64)
	case traces.TypeFloat:
		a.Float, err = strconv.ParseFloat(v.Text, 64)
	case traces.TypeBool:
		a.Bool, err = strconv.ParseBool(v.Text)
	default:
		err = fmt.Errorf("unknown value type %d", v.Type)
	}
	if err != nil {
		return traces.Attr{}, fmt.Errorf("value %q of %s: %w", v.Text, key, err)
	}
	return a, nil
}

// maxTagValueBytes is the longest value listed in tags.json; longer values
// (bodies, stack traces, long URLs) are not useful in a value picker.
const maxTagValueBytes = 256

// summary collects what meta.json and tags.json list about a block's spans,
// each list bounded.
type summary struct {
	maxOps, maxKeys, maxValues int

	services  map[string]struct{}
	ops       map[ServiceOperation]struct{}
	opsCut    bool
	scopes    [2]map[string]map[tagValue]struct{} // span, resource
	scopesCut [2]map[string]bool
	keysCut   bool
}

func newSummary(o WriteOptions) *summary {
	s := &summary{
		maxOps: o.MaxOperations, maxKeys: o.MaxTagKeys, maxValues: o.MaxTagValues,
		services: map[string]struct{}{},
		ops:      map[ServiceOperation]struct{}{},
	}
	for i := range s.scopes {
		s.scopes[i] = map[string]map[tagValue]struct{}{}
		s.scopesCut[i] = map[string]bool{}
	}
	return s
}

func (s *summary) add(sp *traces.Span) {
	op := ServiceOperation{Service: sp.Service, Name: sp.Name, Kind: sp.Kind}
	if _, ok := s.ops[op]; !ok {
		if len(s.ops) < s.maxOps {
			s.ops[op] = struct{}{}
			s.services[sp.Service] = struct{}{}
		} else {
			s.opsCut = true
		}
	}
	s.addAttrs(0, sp.Attrs)
	s.addAttrs(1, sp.Resource)
}

func (s *summary) addAttrs(scope int, as []traces.Attr) {
	keys := s.scopes[scope]
	for i := range as {
		a := &as[i]
		vals, ok := keys[a.Key]
		if !ok {
			if len(keys) >= s.maxKeys {
				s.keysCut = true
				continue
			}
			vals = map[tagValue]struct{}{}
			keys[a.Key] = vals
		}
		v := tagValue{Type: a.Type, Text: a.Text()}
		if len(v.Text) > maxTagValueBytes {
			continue
		}
		if _, ok := vals[v]; !ok {
			if len(vals) >= s.maxValues {
				s.scopesCut[scope][a.Key] = true
				continue
			}
			vals[v] = struct{}{}
		}
	}
}

// fill sets the summaries of m.
func (s *summary) fill(m *Meta) {
	m.Services = sortedKeys(s.services)
	m.Operations = make([]ServiceOperation, 0, len(s.ops))
	for op := range s.ops {
		m.Operations = append(m.Operations, op)
	}
	slices.SortFunc(m.Operations, func(a, b ServiceOperation) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
	})
	m.SpanTags = sortedKeys(s.scopes[0])
	m.ResourceTags = sortedKeys(s.scopes[1])
	m.OperationsTruncated, m.TagsTruncated = s.opsCut, s.keysCut
}

func (s *summary) tagsJSON() ([]byte, error) {
	f := tagsFile{Span: s.tagValues(0), Resource: s.tagValues(1)}
	return json.Marshal(f)
}

func (s *summary) tagValues(scope int) map[string]*tagValues {
	out := make(map[string]*tagValues, len(s.scopes[scope]))
	for k, vals := range s.scopes[scope] {
		tv := &tagValues{Values: make([]tagValue, 0, len(vals)), Truncated: s.scopesCut[scope][k]}
		for v := range vals {
			tv.Values = append(tv.Values, v)
		}
		slices.SortFunc(tv.Values, compareTagValues)
		out[k] = tv
	}
	return out
}

func compareTagValues(a, b tagValue) int {
	return cmp.Or(strings.Compare(a.Text, b.Text), cmp.Compare(a.Type, b.Type))
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
