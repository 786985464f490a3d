// Package ingest receives spans: Zipkin v2 (POST /api/v2/spans, what
// Istio's Envoy sends), OTLP/HTTP (POST /v1/traces) and OTLP/gRPC. Decoding
// lives in package decode; the receivers depend only on traces.Appender.
//
// Every receiver keeps the valid spans of a request and refuses the
// invalid ones (zero trace or span id), telling the sender how many and
// which first. Nothing is acknowledged unless the appender took the spans.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/ingest/decode"
)

// Defaults for zero Options fields.
const (
	DefaultMaxRequestBytes = 16 << 20
	DefaultMaxDecodedBytes = 64 << 20
	DefaultRetryAfter      = time.Second
)

// Options configures the receivers. The zero value is usable.
type Options struct {
	// MaxRequestBytes is the largest body accepted as sent (compressed or
	// not); a larger one is answered 413 and read no further. Zero means
	// DefaultMaxRequestBytes. OTLP/gRPC ignores it (see ServerOptions).
	MaxRequestBytes int
	// Limits bound each request once decompressed. A zero MaxDecodedBytes
	// means DefaultMaxDecodedBytes (it is also the gRPC message size limit);
	// zero MaxSpansPerRequest and MaxAttrValueBytes mean no limit.
	Limits decode.Limits
	// RetryAfter is how long an overloaded appender (traces.ErrOverloaded)
	// asks senders to wait: the Retry-After header, gRPC RetryInfo. Zero
	// means DefaultRetryAfter.
	RetryAfter time.Duration
	// Logger logs refused requests at debug level and storage failures at
	// error level. Nil logs nothing.
	Logger *slog.Logger
	// Metrics receives the self-metrics (meshlens_traces_*). Nil means a
	// private set that nothing exports. Receivers given the same set share
	// their counters.
	Metrics *metrics.Set
}

func (o Options) withDefaults() Options {
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.Limits.MaxDecodedBytes <= 0 {
		o.Limits.MaxDecodedBytes = DefaultMaxDecodedBytes
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = DefaultRetryAfter
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	return o
}

// retryAfterSeconds is RetryAfter in whole seconds, at least 1, for the
// Retry-After header.
func (o Options) retryAfterSeconds() int {
	return max(1, int(math.Ceil(o.RetryAfter.Seconds())))
}

// Protocols label meshlens_traces_received_spans_total.
const (
	protocolZipkin   = "zipkin"
	protocolOTLPHTTP = "otlp_http"
	protocolOTLPGRPC = "otlp_grpc"
)

// Reasons a whole request is refused; they label
// meshlens_traces_refused_requests_total.
const (
	reasonTooLarge      = "request_too_large"
	reasonTooManySpans  = "too_many_spans"
	reasonUndecodable   = "undecodable_request"
	reasonUnsupported   = "unsupported_media_type"
	reasonInvalidSpans  = "no_valid_spans"
	reasonOverloaded    = "overloaded"
	reasonStorageFailed = "storage_failure"
)

// reasonTraceTooLarge labels meshlens_traces_refused_spans_total for spans
// the store refused because their trace was at its limit.
const reasonTraceTooLarge = "trace_too_large"

// reasonTooOld labels it for spans that start before traces.retention.
const reasonTooOld = "older_than_retention"

var requestReasons = []string{reasonTooLarge, reasonTooManySpans, reasonUndecodable, reasonUnsupported, reasonInvalidSpans, reasonOverloaded, reasonStorageFailed}

// Errors of the transport, before decoding.
var (
	errBodyTooLarge = errors.New("request body too large")
	errUnsupported  = errors.New("unsupported media type")
)

// receiver is what the Zipkin, OTLP/HTTP and OTLP/gRPC receivers share:
// the appender, the options and the self-metrics.
type receiver struct {
	app    traces.Appender
	opts   Options
	logger *slog.Logger
	set    *metrics.Set

	truncated *metrics.Counter
}

func newReceiver(app traces.Appender, opts Options) *receiver {
	opts = opts.withDefaults()
	r := &receiver{app: app, opts: opts, logger: opts.Logger, set: opts.Metrics}
	r.truncated = r.set.GetOrCreateCounter(`meshlens_traces_truncated_attributes_total`)
	// Every reason is exported from the start, so rate() has a zero to
	// start from.
	for _, reason := range decode.Reasons {
		r.refusedSpans(reason)
	}
	r.refusedSpans(reasonTraceTooLarge)
	r.refusedSpans(reasonTooOld)
	for _, reason := range requestReasons {
		r.refusedRequests(reason)
	}
	for _, p := range []string{protocolZipkin, protocolOTLPHTTP, protocolOTLPGRPC} {
		r.receivedSpans(p)
	}
	return r
}

func (r *receiver) receivedSpans(protocol string) *metrics.Counter {
	return r.set.GetOrCreateCounter(fmt.Sprintf(`meshlens_traces_received_spans_total{protocol=%q}`, protocol))
}

// receivedBytes counts request bodies after decompression.
func (r *receiver) receivedBytes(protocol string) *metrics.Counter {
	return r.set.GetOrCreateCounter(fmt.Sprintf(`meshlens_traces_received_bytes_total{protocol=%q}`, protocol))
}

func (r *receiver) refusedSpans(reason string) *metrics.Counter {
	return r.set.GetOrCreateCounter(fmt.Sprintf(`meshlens_traces_refused_spans_total{reason=%q}`, reason))
}

func (r *receiver) refusedRequests(reason string) *metrics.Counter {
	return r.set.GetOrCreateCounter(fmt.Sprintf(`meshlens_traces_refused_requests_total{reason=%q}`, reason))
}

// countDecoded counts what decoding refused and truncated.
func (r *receiver) countDecoded(b *decode.Batch) {
	for reason, n := range b.Refused {
		r.refusedSpans(reason).Add(n)
	}
	r.truncated.Add(b.Truncated)
}

// store counts a decoded batch and appends its valid spans. It returns the
// appender's error, wrapped; nothing was stored then.
func (r *receiver) store(ctx context.Context, protocol string, b *decode.Batch) error {
	r.countDecoded(b)
	if len(b.Spans) == 0 {
		return nil
	}
	err := r.app.Append(ctx, b.Spans)
	// Spans the store refused (their trace at its limit, or older than the
	// retention) are answered as spans refused by decoding are; the other
	// spans are stored.
	if err != nil && onlyRefusals(err) {
		var tooLarge *traces.TraceTooLargeError
		if errors.As(err, &tooLarge) {
			r.storeRefused(b, reasonTraceTooLarge, tooLarge.Refused, tooLarge.Error())
		}
		var tooOld *traces.SpansTooOldError
		if errors.As(err, &tooOld) {
			r.storeRefused(b, reasonTooOld, tooOld.Refused, tooOld.Error())
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("append %d spans: %w", len(b.Spans), err)
	}
	r.receivedSpans(protocol).Add(len(b.Spans))
	return nil
}

// storeRefused counts n spans of b refused by the store for reason; msg names
// the first refusal when decoding refused none.
func (r *receiver) storeRefused(b *decode.Batch, reason string, n int, msg string) {
	n = min(n, len(b.Spans))
	if b.Refused == nil {
		b.Refused = map[string]int{}
	}
	b.Refused[reason] += n
	if b.FirstRefused == "" {
		b.FirstRefused = msg
	}
	r.refusedSpans(reason).Add(n)
	b.Spans = b.Spans[:len(b.Spans)-n] // only their number is read from here on
}

// onlyRefusals reports whether err says no more than that the store
// refused some spans and stored the others.
func onlyRefusals(err error) bool {
	if errs, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range errs.Unwrap() {
			if !onlyRefusals(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, traces.ErrTraceTooLarge) || errors.Is(err, traces.ErrSpansTooOld)
}

// refusal is how a request refused as a whole is answered.
type refusal struct {
	reason   string
	httpCode int
}

// classify maps a request's error to its refusal.
func classify(err error) refusal {
	switch {
	case errors.Is(err, errBodyTooLarge), errors.Is(err, decode.ErrTooLarge):
		return refusal{reasonTooLarge, 413}
	case errors.Is(err, decode.ErrTooManySpans):
		return refusal{reasonTooManySpans, 413}
	case errors.Is(err, errUnsupported):
		return refusal{reasonUnsupported, 415}
	case errors.Is(err, decode.ErrUndecodable):
		return refusal{reasonUndecodable, 400}
	case errors.Is(err, traces.ErrOverloaded):
		return refusal{reasonOverloaded, 429}
	}
	// Nothing was stored: 503 is the status every OTLP and Zipkin sender
	// retries.
	return refusal{reasonStorageFailed, 503}
}

// refuse counts and logs a request refused as a whole.
func (r *receiver) refuse(protocol string, rf refusal, err error) {
	r.refusedRequests(rf.reason).Inc()
	if rf.reason == reasonStorageFailed {
		r.logger.Error("span ingest failed", "protocol", protocol, "err", err)
		return
	}
	r.logger.Debug("span request refused", "protocol", protocol, "reason", rf.reason, "err", err)
}
