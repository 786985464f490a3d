package traces

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Reader.Trace when no span of the trace is
// stored in the asked time range.
var ErrNotFound = errors.New("trace not found")

// Appender takes accepted spans. Append returns nil only once the spans are
// durable (in the write-ahead log): a crash after it loses none of them.
// The spans must be valid (non-zero trace and span ids); Append may keep
// references to them, so the caller must not modify them afterwards.
type Appender interface {
	Append(ctx context.Context, spans []Span) error
}

// TimeRange bounds a read by span start time, in Unix nanoseconds,
// inclusive. A zero Start or End leaves that side open.
type TimeRange struct {
	Start, End uint64
}

// Overlaps reports whether [minT, maxT] overlaps the range.
func (r TimeRange) Overlaps(minT, maxT uint64) bool {
	return (r.Start == 0 || maxT >= r.Start) && (r.End == 0 || minT <= r.End)
}

// Operation is a span name of a service with its kind, as Jaeger lists it.
type Operation struct {
	Name string
	Kind Kind
}

// Scope of a tag: a span attribute, a resource attribute.
type Scope string

// Tag scopes.
const (
	ScopeSpan     Scope = "span"
	ScopeResource Scope = "resource"
)

// Finder is implemented by readers that tell which of many traces they
// hold faster than reading each one.
type Finder interface {
	// Stored reports, for each id, whether a span of the trace starting in
	// tr is stored.
	Stored(ctx context.Context, ids []TraceID, tr TimeRange) ([]bool, error)
}

// Reader reads stored traces. Every method covers the head, local blocks
// and the bucket.
type Reader interface {
	// Trace returns every stored span of the trace whose start is in tr
	// (zero tr: all), deduplicated by span id and kind (the client and
	// server halves of a Zipkin shared span keep the same id); ErrNotFound
	// if there is none.
	Trace(ctx context.Context, id TraceID, tr TimeRange) ([]Span, error)
	// Traces calls fn with the spans of each trace that has a span starting
	// in tr, newest blocks first, each trace whole (every span the trace
	// has in the same head or block), until fn returns false. A trace whose
	// spans are split over several blocks may be passed once per block.
	// fn must not keep spans after it returns.
	Traces(ctx context.Context, tr TimeRange, fn func(spans []Span) bool) error
	// Services lists the service names with spans in tr, sorted.
	Services(ctx context.Context, tr TimeRange) ([]string, error)
	// Operations lists a service's span names and kinds in tr, sorted by
	// name then kind; an empty service lists every service's.
	Operations(ctx context.Context, service string, tr TimeRange) ([]Operation, error)
	// TagNames lists the attribute keys of a scope seen in tr, sorted.
	TagNames(ctx context.Context, scope Scope, tr TimeRange) ([]string, error)
	// TagValues lists distinct values of the attribute key in the scope
	// (both scopes when scope is empty) seen in tr, at most limit (0: no
	// limit), sorted by their text.
	TagValues(ctx context.Context, scope Scope, key string, tr TimeRange, limit int) ([]Attr, error)
}
