package spanblock

import (
	"strings"

	"github.com/meshlens/meshlens/traces"
)

// spanRow is one row of data.parquet: one span. The trace id comes first
// and the rows are sorted by it (then by start), so the file's column index
// on trace_id bounds every page, and a trace's rows are contiguous in one
// row group.
//
// The end time is stored as a duration (end - start, modulo 2^64), which
// is small and round-trips exactly even when a span ends before it starts.
type spanRow struct {
	TraceID       [16]byte   `parquet:"trace_id"`
	Start         uint64     `parquet:"start_unix_nano,delta"`
	Duration      uint64     `parquet:"duration_nano,delta"`
	SpanID        [8]byte    `parquet:"span_id"`
	ParentSpanID  [8]byte    `parquet:"parent_span_id"`
	Name          string     `parquet:"name,dict"`
	Service       string     `parquet:"service,dict"`
	Kind          int8       `parquet:"kind"`
	StatusCode    int8       `parquet:"status_code"`
	StatusMessage string     `parquet:"status_message,dict"`
	TraceState    string     `parquet:"trace_state,dict"`
	ScopeName     string     `parquet:"scope_name,dict"`
	ScopeVersion  string     `parquet:"scope_version,dict"`
	Resource      []attrRow  `parquet:"resource"`
	Attrs         []attrRow  `parquet:"attrs"`
	Events        []eventRow `parquet:"events"`
	Links         []linkRow  `parquet:"links"`
}

// attrRow is an attribute. Every value column is stored whatever the type
// (most are zero and cost next to nothing once encoded), so that a row
// round-trips exactly. Str has no dictionary: its values (URLs, request
// ids, node ids) are of high cardinality, and a lookup would decode the
// row group's whole dictionary to read a few rows (measured: 2.8ms per
// trace lookup with it, 0.8ms without, for 12% more bytes; zstd still
// finds the repeats within a page).
type attrRow struct {
	Key   string  `parquet:"key,dict"`
	Type  uint8   `parquet:"type"`
	Str   string  `parquet:"str"`
	Int   int64   `parquet:"int"`
	Float float64 `parquet:"float"`
	Bool  bool    `parquet:"bool"`
}

type eventRow struct {
	Time  uint64    `parquet:"time_unix_nano,delta"`
	Name  string    `parquet:"name,dict"`
	Attrs []attrRow `parquet:"attrs"`
}

type linkRow struct {
	TraceID    [16]byte  `parquet:"trace_id"`
	SpanID     [8]byte   `parquet:"span_id"`
	TraceState string    `parquet:"trace_state"`
	Attrs      []attrRow `parquet:"attrs"`
}

// fromSpan fills r from s, reusing r's slices.
func (r *spanRow) fromSpan(s *traces.Span) {
	r.TraceID = s.TraceID
	r.Start = s.StartUnixNano
	r.Duration = s.EndUnixNano - s.StartUnixNano
	r.SpanID = s.SpanID
	r.ParentSpanID = s.ParentSpanID
	r.Name = s.Name
	r.Service = s.Service
	r.Kind = int8(s.Kind)
	r.StatusCode = int8(s.StatusCode)
	r.StatusMessage = s.StatusMessage
	r.TraceState = s.TraceState
	r.ScopeName = s.ScopeName
	r.ScopeVersion = s.ScopeVersion
	r.Resource = fromAttrs(r.Resource[:0], s.Resource)
	r.Attrs = fromAttrs(r.Attrs[:0], s.Attrs)
	r.Events = r.Events[:0]
	for _, e := range s.Events {
		r.Events = append(r.Events, eventRow{Time: e.TimeUnixNano, Name: e.Name, Attrs: fromAttrs(nil, e.Attrs)})
	}
	r.Links = r.Links[:0]
	for _, l := range s.Links {
		r.Links = append(r.Links, linkRow{TraceID: l.TraceID, SpanID: l.SpanID, TraceState: l.TraceState, Attrs: fromAttrs(nil, l.Attrs)})
	}
}

func fromAttrs(dst []attrRow, as []traces.Attr) []attrRow {
	for _, a := range as {
		dst = append(dst, attrRow{Key: a.Key, Type: uint8(a.Type), Str: a.Str, Int: a.Int, Float: a.Float, Bool: a.Bool})
	}
	return dst
}

// span returns the span of r. Its strings come from in, so that it shares
// no memory with r (whose strings may point into the reader's page
// buffers) and repeated values share one copy.
func (r *spanRow) span(in *interner) traces.Span {
	s := traces.Span{
		TraceID:       r.TraceID,
		SpanID:        r.SpanID,
		ParentSpanID:  r.ParentSpanID,
		TraceState:    in.str(r.TraceState),
		Name:          in.str(r.Name),
		Kind:          traces.Kind(r.Kind),
		StartUnixNano: r.Start,
		EndUnixNano:   r.Start + r.Duration,
		StatusCode:    traces.StatusCode(r.StatusCode),
		StatusMessage: in.str(r.StatusMessage),
		Service:       in.str(r.Service),
		Resource:      toAttrs(in, r.Resource),
		ScopeName:     in.str(r.ScopeName),
		ScopeVersion:  in.str(r.ScopeVersion),
		Attrs:         toAttrs(in, r.Attrs),
	}
	if len(r.Events) > 0 {
		s.Events = make([]traces.Event, len(r.Events))
		for i, e := range r.Events {
			s.Events[i] = traces.Event{TimeUnixNano: e.Time, Name: in.str(e.Name), Attrs: toAttrs(in, e.Attrs)}
		}
	}
	if len(r.Links) > 0 {
		s.Links = make([]traces.Link, len(r.Links))
		for i, l := range r.Links {
			s.Links[i] = traces.Link{TraceID: l.TraceID, SpanID: l.SpanID, TraceState: in.str(l.TraceState), Attrs: toAttrs(in, l.Attrs)}
		}
	}
	return s
}

func toAttrs(in *interner, rs []attrRow) []traces.Attr {
	if len(rs) == 0 {
		return nil
	}
	as := make([]traces.Attr, len(rs))
	for i, r := range rs {
		as[i] = traces.Attr{Key: in.str(r.Key), Type: traces.ValueType(r.Type), Str: in.str(r.Str), Int: r.Int, Float: r.Float, Bool: r.Bool}
	}
	return as
}

// interner copies strings read from a block, once per distinct value. It
// holds every distinct value it has seen; a reader uses one per row group.
type interner struct{ m map[string]string }

// maxInternedLen is the longest string interned; longer ones (unlikely to
// repeat) are copied each time.
const maxInternedLen = 512

func (in *interner) str(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > maxInternedLen {
		return strings.Clone(s)
	}
	if v, ok := in.m[s]; ok {
		return v
	}
	if in.m == nil {
		in.m = map[string]string{}
	}
	v := strings.Clone(s)
	in.m[v] = v
	return v
}

func (in *interner) reset() { clear(in.m) }
