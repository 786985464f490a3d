// Package traces is meshlens's span model and the small interfaces between
// span ingest, the span store and the trace query APIs.
//
// A Span is flat: it carries its own resource (service) and scope, so a
// trace is simply its spans. Ingest converts OTLP and Zipkin into Spans
// (FromPdata), the store keeps them, the query APIs turn them back into
// OTLP (ToPdata) or Jaeger's JSON.
package traces

import (
	"encoding/hex"
	"fmt"
	"strconv"
)

// TraceID is a 128-bit trace id. A 64-bit id (Zipkin's short ids) is kept
// left-padded with zeros, so it prints as 16 zeros followed by its own hex.
type TraceID [16]byte

// String is the id in lower-case hex, 32 characters.
func (id TraceID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether every byte of the id is zero (an invalid id).
func (id TraceID) IsZero() bool { return id == TraceID{} }

// ParseTraceID accepts 1 to 32 hex digits in either case; shorter ids are
// left-padded with zeros, so "463ac35c9f6413ad" and
// "0000000000000000463ac35c9f6413ad" are the same trace.
func ParseTraceID(s string) (TraceID, error) {
	var id TraceID
	if err := parseHexID(id[:], s, "trace"); err != nil {
		return TraceID{}, err
	}
	return id, nil
}

// SpanID is a 64-bit span id.
type SpanID [8]byte

// String is the id in lower-case hex, 16 characters.
func (id SpanID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether every byte of the id is zero (no parent, or an
// invalid span id).
func (id SpanID) IsZero() bool { return id == SpanID{} }

// ParseSpanID accepts 1 to 16 hex digits in either case, left-padded.
func ParseSpanID(s string) (SpanID, error) {
	var id SpanID
	if err := parseHexID(id[:], s, "span"); err != nil {
		return SpanID{}, err
	}
	return id, nil
}

func parseHexID(dst []byte, s, what string) error {
	if len(s) == 0 || len(s) > 2*len(dst) {
		return fmt.Errorf("%s id %q: want 1 to %d hex digits", what, s, 2*len(dst))
	}
	if len(s)%2 == 1 {
		s = "0" + s
	}
	off := len(dst) - len(s)/2
	if _, err := hex.Decode(dst[off:], []byte(s)); err != nil {
		return fmt.Errorf("%s id %q: not hex", what, s)
	}
	return nil
}

// Kind is the span kind, with OTLP's numbering.
type Kind int8

// Span kinds.
const (
	KindUnspecified Kind = 0
	KindInternal    Kind = 1
	KindServer      Kind = 2
	KindClient      Kind = 3
	KindProducer    Kind = 4
	KindConsumer    Kind = 5
)

var kindNames = [...]string{"unspecified", "internal", "server", "client", "producer", "consumer"}

// String is the kind as TraceQL and Jaeger's span.kind tag spell it:
// "server", "client", ...
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unspecified"
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, bool) {
	for i, n := range kindNames {
		if n == s {
			return Kind(i), true
		}
	}
	return 0, false
}

// StatusCode is the span status, with OTLP's numbering.
type StatusCode int8

// Status codes.
const (
	StatusUnset StatusCode = 0
	StatusOK    StatusCode = 1
	StatusError StatusCode = 2
)

var statusNames = [...]string{"unset", "ok", "error"}

// String is the status as TraceQL spells it: "unset", "ok", "error".
func (c StatusCode) String() string {
	if c >= 0 && int(c) < len(statusNames) {
		return statusNames[c]
	}
	return "unset"
}

// ParseStatusCode is the inverse of StatusCode.String.
func ParseStatusCode(s string) (StatusCode, bool) {
	for i, n := range statusNames {
		if n == s {
			return StatusCode(i), true
		}
	}
	return 0, false
}

// ValueType is the type of an attribute value.
type ValueType uint8

// Value types. Arrays and maps are kept as their JSON text (TypeString is
// not used for them, so they print back as JSON); bytes as base64 text.
const (
	TypeString ValueType = iota
	TypeInt
	TypeFloat
	TypeBool
	TypeBytes // Str holds the base64 encoding
	TypeJSON  // an array or a map; Str holds its JSON encoding
)

// Attr is one attribute: a key and a typed value. Exactly one of Str, Int,
// Float, Bool is meaningful, as Type says.
type Attr struct {
	Key   string
	Type  ValueType
	Str   string
	Int   int64
	Float float64
	Bool  bool
}

// String returns an attribute of type TypeString.
func String(k, v string) Attr { return Attr{Key: k, Type: TypeString, Str: v} }

// Int returns an attribute of type TypeInt.
func Int(k string, v int64) Attr { return Attr{Key: k, Type: TypeInt, Int: v} }

// Float returns an attribute of type TypeFloat.
func Float(k string, v float64) Attr { return Attr{Key: k, Type: TypeFloat, Float: v} }

// Bool returns an attribute of type TypeBool.
func Bool(k string, v bool) Attr { return Attr{Key: k, Type: TypeBool, Bool: v} }

// Text is the value as text: strings as they are, numbers and booleans as
// Go formats them, bytes as base64 and arrays and maps as JSON.
func (a Attr) Text() string {
	switch a.Type {
	case TypeInt:
		return strconv.FormatInt(a.Int, 10)
	case TypeFloat:
		return strconv.FormatFloat(a.Float, 'g', -1, 64)
	case TypeBool:
		return strconv.FormatBool(a.Bool)
	}
	return a.Str
}

// Event is a timed annotation of a span (Zipkin's annotation, Jaeger's log).
type Event struct {
	TimeUnixNano uint64
	Name         string
	Attrs        []Attr
}

// Link points to a span of another (or the same) trace.
type Link struct {
	TraceID    TraceID
	SpanID     SpanID
	TraceState string
	Attrs      []Attr
}

// Span is one span with its resource and scope.
type Span struct {
	TraceID      TraceID
	SpanID       SpanID
	ParentSpanID SpanID // zero for a root span
	TraceState   string
	Name         string
	Kind         Kind

	StartUnixNano uint64
	EndUnixNano   uint64

	StatusCode    StatusCode
	StatusMessage string

	// Service is the resource's service.name ("" when it has none); it is
	// also among Resource.
	Service  string
	Resource []Attr

	ScopeName    string
	ScopeVersion string

	Attrs  []Attr
	Events []Event
	Links  []Link
}

// DurationNanos is the span's duration; 0 when its end is before its start.
func (s *Span) DurationNanos() uint64 {
	if s.EndUnixNano < s.StartUnixNano {
		return 0
	}
	return s.EndUnixNano - s.StartUnixNano
}

// Attr returns the span attribute named key.
func (s *Span) Attr(key string) (Attr, bool) { return findAttr(s.Attrs, key) }

// ResourceAttr returns the resource attribute named key.
func (s *Span) ResourceAttr(key string) (Attr, bool) { return findAttr(s.Resource, key) }

func findAttr(as []Attr, key string) (Attr, bool) {
	for _, a := range as {
		if a.Key == key {
			return a, true
		}
	}
	return Attr{}, false
}

// ServiceNameKey is the resource attribute holding the service name.
const ServiceNameKey = "service.name"

// EncodedSize is an estimate, in bytes, of the span's memory; the store
// and ingest limits use it.
func (s *Span) EncodedSize() int {
	n := 16 + 8 + 8 + 8 + 8 + 2 + len(s.TraceState) + len(s.Name) + len(s.StatusMessage) + len(s.Service) + len(s.ScopeName) + len(s.ScopeVersion)
	n += attrsSize(s.Resource) + attrsSize(s.Attrs)
	for _, e := range s.Events {
		n += 8 + len(e.Name) + attrsSize(e.Attrs)
	}
	for _, l := range s.Links {
		n += 24 + len(l.TraceState) + attrsSize(l.Attrs)
	}
	return n
}

func attrsSize(as []Attr) int {
	n := 0
	for _, a := range as {
		n += len(a.Key) + len(a.Str) + 10
	}
	return n
}

// Summary describes a whole trace, as search results show it.
type Summary struct {
	TraceID TraceID
	// RootService and RootName are the root span's service and name; when
	// the root span has not arrived, the earliest span's, and RootName is
	// empty (Tempo shows "<root span not yet received>").
	RootService   string
	RootName      string
	StartUnixNano uint64
	EndUnixNano   uint64
}

// Summarize summarizes the spans of one trace.
func Summarize(spans []Span) Summary {
	var sum Summary
	if len(spans) == 0 {
		return sum
	}
	sum.TraceID = spans[0].TraceID
	var root, first *Span
	for i := range spans {
		s := &spans[i]
		if sum.StartUnixNano == 0 || s.StartUnixNano < sum.StartUnixNano {
			sum.StartUnixNano = s.StartUnixNano
		}
		sum.EndUnixNano = max(sum.EndUnixNano, s.EndUnixNano)
		if s.ParentSpanID.IsZero() && (root == nil || s.StartUnixNano < root.StartUnixNano) {
			root = s
		}
		if first == nil || s.StartUnixNano < first.StartUnixNano {
			first = s
		}
	}
	if root != nil {
		sum.RootService, sum.RootName = root.Service, root.Name
	} else {
		sum.RootService = first.Service
	}
	return sum
}

// IsRoot reports whether s has no parent.
func (s *Span) IsRoot() bool { return s.ParentSpanID.IsZero() }
