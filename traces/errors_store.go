package traces

import (
	"errors"
	"fmt"
	"time"
)

// Errors of the span store that callers tell apart.
var (
	// ErrTraceTooLarge is returned (wrapped, naming the trace and the
	// limit) by Appender.Append when spans are refused because their trace
	// already holds the most spans the store keeps for one trace. The other
	// spans of the call are stored; ingest reports the refused ones as
	// rejected.
	ErrTraceTooLarge = errors.New("trace has too many spans")
)

// TraceTooLargeError is the error Append returns when it refused spans
// because their trace was at its limit; it wraps ErrTraceTooLarge. The
// other spans of the call were stored.
type TraceTooLargeError struct {
	Refused int     // spans refused
	Trace   TraceID // one trace at its limit
	Limit   int     // spans a trace may hold
}

func (e *TraceTooLargeError) Error() string {
	return fmt.Sprintf("%d spans refused: trace %s holds the most spans a trace may have (%d, traces.max_spans_per_trace)", e.Refused, e.Trace, e.Limit)
}

// Unwrap makes errors.Is(err, ErrTraceTooLarge) hold.
func (e *TraceTooLargeError) Unwrap() error { return ErrTraceTooLarge }

// ErrSpansTooOld is returned (wrapped, with the count and the cutoff) by
// Appender.Append when spans start before the store's retention: they
// would be deleted at once and never shown. The other spans of the call
// are stored; ingest reports the refused ones as rejected.
var ErrSpansTooOld = errors.New("spans older than the retention")

// SpansTooOldError is the error Append returns when it refused spans that
// start before the retention; it wraps ErrSpansTooOld. The other spans of
// the call were stored.
type SpansTooOldError struct {
	Refused int       // spans refused
	Cutoff  time.Time // the earliest start kept
}

func (e *SpansTooOldError) Error() string {
	return fmt.Sprintf("%d spans refused: they start before %s, older than traces.retention", e.Refused, e.Cutoff.UTC().Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrSpansTooOld) hold.
func (e *SpansTooOldError) Unwrap() error { return ErrSpansTooOld }
