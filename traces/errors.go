package traces

import "errors"

// ErrOverloaded is returned (possibly wrapped) by an Appender that cannot
// take spans now but may later: ingest answers the sender with a retryable
// error (HTTP 429 with Retry-After, gRPC Unavailable) and acknowledges
// nothing.
var ErrOverloaded = errors.New("span store overloaded")
