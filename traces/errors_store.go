package traces

import "errors"

// Errors of the span store that callers tell apart.
var (
	// ErrTraceTooLarge is returned (wrapped, naming the trace and the
	// limit) by Appender.Append when spans are refused because their trace
	// already holds the most spans the store keeps for one trace. The other
	// spans of the call are stored; ingest reports the refused ones as
	// rejected.
	ErrTraceTooLarge = errors.New("trace has too many spans")
)
