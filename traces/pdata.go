package traces

import (
	"encoding/base64"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// FromPdata appends every span of td to dst, flattened with its resource and
// scope. It does not validate: ids may be zero (ingest refuses those).
func FromPdata(dst []Span, td ptrace.Traces) []Span {
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		res := attrsFromMap(nil, rs.Resource().Attributes())
		service := ""
		if v, ok := rs.Resource().Attributes().Get(ServiceNameKey); ok {
			service = v.AsString()
		}
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			scope := ss.Scope()
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				dst = append(dst, spanFromPdata(spans.At(k), service, res, scope.Name(), scope.Version()))
			}
		}
	}
	return dst
}

// SpanFromPdata converts one span; service and res describe its resource.
// The returned span shares res.
func spanFromPdata(ps ptrace.Span, service string, res []Attr, scopeName, scopeVersion string) Span {
	s := Span{
		TraceID:       TraceID(ps.TraceID()),
		SpanID:        SpanID(ps.SpanID()),
		ParentSpanID:  SpanID(ps.ParentSpanID()),
		TraceState:    ps.TraceState().AsRaw(),
		Name:          ps.Name(),
		Kind:          Kind(ps.Kind()),
		StartUnixNano: uint64(ps.StartTimestamp()),
		EndUnixNano:   uint64(ps.EndTimestamp()),
		StatusCode:    StatusCode(ps.Status().Code()),
		StatusMessage: ps.Status().Message(),
		Service:       service,
		Resource:      res,
		ScopeName:     scopeName,
		ScopeVersion:  scopeVersion,
		Attrs:         attrsFromMap(nil, ps.Attributes()),
	}
	if evs := ps.Events(); evs.Len() > 0 {
		s.Events = make([]Event, evs.Len())
		for i := range s.Events {
			e := evs.At(i)
			s.Events[i] = Event{TimeUnixNano: uint64(e.Timestamp()), Name: e.Name(), Attrs: attrsFromMap(nil, e.Attributes())}
		}
	}
	if ls := ps.Links(); ls.Len() > 0 {
		s.Links = make([]Link, ls.Len())
		for i := range s.Links {
			l := ls.At(i)
			s.Links[i] = Link{TraceID: TraceID(l.TraceID()), SpanID: SpanID(l.SpanID()), TraceState: l.TraceState().AsRaw(), Attrs: attrsFromMap(nil, l.Attributes())}
		}
	}
	return s
}

func attrsFromMap(dst []Attr, m pcommon.Map) []Attr {
	if m.Len() == 0 {
		return dst
	}
	if dst == nil {
		dst = make([]Attr, 0, m.Len())
	}
	for k, v := range m.All() {
		dst = append(dst, attrFromValue(k, v))
	}
	return dst
}

func attrFromValue(k string, v pcommon.Value) Attr {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return Attr{Key: k, Type: TypeString, Str: v.Str()}
	case pcommon.ValueTypeInt:
		return Attr{Key: k, Type: TypeInt, Int: v.Int()}
	case pcommon.ValueTypeDouble:
		return Attr{Key: k, Type: TypeFloat, Float: v.Double()}
	case pcommon.ValueTypeBool:
		return Attr{Key: k, Type: TypeBool, Bool: v.Bool()}
	case pcommon.ValueTypeBytes:
		return Attr{Key: k, Type: TypeBytes, Str: base64.StdEncoding.EncodeToString(v.Bytes().AsRaw())}
	case pcommon.ValueTypeMap, pcommon.ValueTypeSlice:
		return Attr{Key: k, Type: TypeJSON, Str: v.AsString()}
	}
	return Attr{Key: k, Type: TypeString}
}

func putAttrs(m pcommon.Map, as []Attr) {
	m.EnsureCapacity(len(as))
	for _, a := range as {
		switch a.Type {
		case TypeInt:
			m.PutInt(a.Key, a.Int)
		case TypeFloat:
			m.PutDouble(a.Key, a.Float)
		case TypeBool:
			m.PutBool(a.Key, a.Bool)
		case TypeBytes:
			b, err := base64.StdEncoding.DecodeString(a.Str)
			if err != nil {
				m.PutStr(a.Key, a.Str)
				continue
			}
			m.PutEmptyBytes(a.Key).FromRaw(b)
		case TypeJSON:
			// Arrays and maps come back as their JSON text.
			m.PutStr(a.Key, a.Str)
		default:
			m.PutStr(a.Key, a.Str)
		}
	}
}

// ToPdata converts spans to OTLP, one ResourceSpans per distinct resource
// (consecutive spans of the same service and resource share one) and one
// ScopeSpans per scope within it. Span order is kept.
func ToPdata(spans []Span) ptrace.Traces {
	td := ptrace.NewTraces()
	var (
		rs      ptrace.ResourceSpans
		ss      ptrace.ScopeSpans
		lastRes []Attr
		lastSvc string
		lastSc  [2]string
		have    bool
	)
	for i := range spans {
		s := &spans[i]
		if !have || s.Service != lastSvc || !sameAttrs(s.Resource, lastRes) {
			rs = td.ResourceSpans().AppendEmpty()
			putAttrs(rs.Resource().Attributes(), s.Resource)
			if _, ok := rs.Resource().Attributes().Get(ServiceNameKey); !ok && s.Service != "" {
				rs.Resource().Attributes().PutStr(ServiceNameKey, s.Service)
			}
			lastRes, lastSvc, have = s.Resource, s.Service, true
			ss = rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(s.ScopeName)
			ss.Scope().SetVersion(s.ScopeVersion)
			lastSc = [2]string{s.ScopeName, s.ScopeVersion}
		} else if lastSc != [2]string{s.ScopeName, s.ScopeVersion} {
			ss = rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(s.ScopeName)
			ss.Scope().SetVersion(s.ScopeVersion)
			lastSc = [2]string{s.ScopeName, s.ScopeVersion}
		}
		putSpan(ss.Spans().AppendEmpty(), s)
	}
	return td
}

func putSpan(ps ptrace.Span, s *Span) {
	ps.SetTraceID(pcommon.TraceID(s.TraceID))
	ps.SetSpanID(pcommon.SpanID(s.SpanID))
	ps.SetParentSpanID(pcommon.SpanID(s.ParentSpanID))
	ps.TraceState().FromRaw(s.TraceState)
	ps.SetName(s.Name)
	ps.SetKind(ptrace.SpanKind(s.Kind))
	ps.SetStartTimestamp(pcommon.Timestamp(s.StartUnixNano))
	ps.SetEndTimestamp(pcommon.Timestamp(s.EndUnixNano))
	ps.Status().SetCode(ptrace.StatusCode(s.StatusCode))
	ps.Status().SetMessage(s.StatusMessage)
	putAttrs(ps.Attributes(), s.Attrs)
	for _, e := range s.Events {
		pe := ps.Events().AppendEmpty()
		pe.SetTimestamp(pcommon.Timestamp(e.TimeUnixNano))
		pe.SetName(e.Name)
		putAttrs(pe.Attributes(), e.Attrs)
	}
	for _, l := range s.Links {
		pl := ps.Links().AppendEmpty()
		pl.SetTraceID(pcommon.TraceID(l.TraceID))
		pl.SetSpanID(pcommon.SpanID(l.SpanID))
		pl.TraceState().FromRaw(l.TraceState)
		putAttrs(pl.Attributes(), l.Attrs)
	}
}

// sameAttrs reports whether a and b are the same attributes in the same
// order. Spans of one ingested resource share its slice, so the pointer
// check answers most calls.
func sameAttrs(a, b []Attr) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
