// Package decode turns span requests (OTLP protobuf and JSON, Zipkin v2
// JSON and protobuf) into valid traces.Spans. It knows nothing of HTTP,
// gRPC or storage: every function takes bytes and Limits.
//
// A span with a zero or invalid trace or span id is refused on its own and
// counted in the Batch; the rest of the request is kept. Whole-request
// failures are the errors below.
package decode

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/meshlens/meshlens/traces"
)

// Errors for requests refused as a whole.
var (
	// ErrTooLarge means the request, once decompressed, is larger than
	// Limits.MaxDecodedBytes. Decompression stops at the limit.
	ErrTooLarge = errors.New("decoded request too large")
	// ErrTooManySpans means the request holds more than
	// Limits.MaxSpansPerRequest spans; none of them is kept.
	ErrTooManySpans = errors.New("too many spans in request")
	// ErrUndecodable means the bytes are not a request of the format.
	ErrUndecodable = errors.New("undecodable request")
)

// Limits bounds what one request may hold. A zero field means no limit.
type Limits struct {
	// MaxDecodedBytes is the largest request after decompression.
	MaxDecodedBytes int
	// MaxSpansPerRequest is the most spans one request may hold.
	MaxSpansPerRequest int
	// MaxAttrValueBytes is the longest string attribute value kept (span,
	// resource, event and link attributes, also strings inside arrays and
	// maps); longer values are cut at a UTF-8 boundary and counted in
	// Batch.Truncated.
	MaxAttrValueBytes int
}

// Reasons a single span is refused; they key Batch.Refused.
const (
	ReasonInvalidTraceID = "invalid_trace_id"
	ReasonInvalidSpanID  = "invalid_span_id"
	// ReasonInvalidSpan is a Zipkin span that cannot be read (bad id,
	// bad field type, bad annotation encoding).
	ReasonInvalidSpan = "invalid_span"
)

// Reasons lists every per-span reason, for exporting counters from zero.
var Reasons = []string{ReasonInvalidTraceID, ReasonInvalidSpanID, ReasonInvalidSpan}

// Batch is one decoded request: the spans to store and what was refused
// or changed on the way.
type Batch struct {
	// Spans are the valid spans, ready for traces.Appender.Append.
	Spans []traces.Span
	// Refused counts refused spans by reason (the Reason constants).
	Refused map[string]int
	// FirstRefused says which span was refused first and why: its name,
	// trace id and span id in hex.
	FirstRefused string
	// Truncated counts attribute values cut to Limits.MaxAttrValueBytes.
	Truncated int
}

// RefusedSpans is the number of refused spans.
func (b *Batch) RefusedSpans() int {
	n := 0
	for _, c := range b.Refused {
		n += c
	}
	return n
}

// RefusedMessage describes the refused spans for the sender, e.g.
// `2 spans refused; first: span "GET /" (trace 0000..., span 0000...): zero span id`.
// It is empty when nothing was refused.
func (b *Batch) RefusedMessage() string {
	n := b.RefusedSpans()
	if n == 0 {
		return ""
	}
	unit := "spans"
	if n == 1 {
		unit = "span"
	}
	return fmt.Sprintf("%d %s refused, the other %d accepted; first: %s", n, unit, len(b.Spans), b.FirstRefused)
}

func (b *Batch) refuse(reason, format string, args ...any) {
	if b.Refused == nil {
		b.Refused = map[string]int{}
	}
	b.Refused[reason]++
	if b.FirstRefused == "" {
		b.FirstRefused = fmt.Sprintf(format, args...)
	}
}

// maxNameInMessage bounds how much of a span name a message quotes.
const maxNameInMessage = 128

// quoteName quotes a span name for a message, shortened if long.
func quoteName(name string) string {
	if len(name) > maxNameInMessage {
		name = truncateUTF8(name, maxNameInMessage) + "..."
	}
	return fmt.Sprintf("%q", name)
}

func checkSize(data []byte, lim Limits) error {
	if lim.MaxDecodedBytes > 0 && len(data) > lim.MaxDecodedBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), lim.MaxDecodedBytes)
	}
	return nil
}

func checkSpanCount(n int, lim Limits) error {
	if lim.MaxSpansPerRequest > 0 && n > lim.MaxSpansPerRequest {
		return fmt.Errorf("%w: %d spans, limit %d per request", ErrTooManySpans, n, lim.MaxSpansPerRequest)
	}
	return nil
}

// Traces validates and converts decoded OTLP traces (as a gRPC server
// receives them): spans with a zero trace or span id are refused, long
// attribute values truncated. td is modified.
func Traces(td ptrace.Traces, lim Limits) (Batch, error) {
	var b Batch
	if err := checkSpanCount(td.SpanCount(), lim); err != nil {
		return b, err
	}
	b.add(td, lim)
	return b, nil
}

// add validates td, truncates its attributes and appends its spans to b.
func (b *Batch) add(td ptrace.Traces, lim Limits) {
	rss := td.ResourceSpans()
	n := 0
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		kept := 0
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			spans.RemoveIf(func(s ptrace.Span) bool { return !b.valid(s) })
			kept += spans.Len()
			if lim.MaxAttrValueBytes > 0 {
				for k := 0; k < spans.Len(); k++ {
					b.Truncated += truncateSpan(spans.At(k), lim.MaxAttrValueBytes)
				}
			}
		}
		if kept > 0 && lim.MaxAttrValueBytes > 0 {
			b.Truncated += truncateMap(rs.Resource().Attributes(), lim.MaxAttrValueBytes)
		}
		n += kept
	}
	if b.Spans == nil {
		b.Spans = make([]traces.Span, 0, n)
	}
	b.Spans = traces.FromPdata(b.Spans, td)
}

// valid reports whether s has a non-zero trace and span id, refusing it
// otherwise.
func (b *Batch) valid(s ptrace.Span) bool {
	switch {
	case s.TraceID().IsEmpty():
		b.refuse(ReasonInvalidTraceID, "span %s (trace %s, span %s): zero trace id", quoteName(s.Name()), traces.TraceID(s.TraceID()), traces.SpanID(s.SpanID()))
		return false
	case s.SpanID().IsEmpty():
		b.refuse(ReasonInvalidSpanID, "span %s (trace %s, span %s): zero span id", quoteName(s.Name()), traces.TraceID(s.TraceID()), traces.SpanID(s.SpanID()))
		return false
	}
	return true
}

func truncateSpan(s ptrace.Span, limit int) int {
	n := truncateMap(s.Attributes(), limit)
	for i := 0; i < s.Events().Len(); i++ {
		n += truncateMap(s.Events().At(i).Attributes(), limit)
	}
	for i := 0; i < s.Links().Len(); i++ {
		n += truncateMap(s.Links().At(i).Attributes(), limit)
	}
	return n
}

func truncateMap(m pcommon.Map, limit int) int {
	n := 0
	for _, v := range m.All() {
		n += truncateValue(v, limit)
	}
	return n
}

func truncateValue(v pcommon.Value, limit int) int {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		if s := v.Str(); len(s) > limit {
			v.SetStr(truncateUTF8(s, limit))
			return 1
		}
	case pcommon.ValueTypeMap:
		return truncateMap(v.Map(), limit)
	case pcommon.ValueTypeSlice:
		n := 0
		sl := v.Slice()
		for i := 0; i < sl.Len(); i++ {
			n += truncateValue(sl.At(i), limit)
		}
		return n
	}
	return 0
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8
// sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && i > n-utf8.UTFMax && !utf8.RuneStart(s[i]) {
		i--
	}
	return strings.Clone(s[:i])
}
