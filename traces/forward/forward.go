// Package forward sends accepted spans on to an OTLP endpoint (Grafana
// Tempo, Jaeger, an OpenTelemetry collector), so that meshlens can be the
// first hop in front of a trace backend that scales beyond one node.
//
// Append only enqueues: a slow or failed endpoint never slows span ingest.
// The queue is bounded; spans that do not fit, that the endpoint rejects or
// that could not be sent before the retry time ran out are dropped and
// counted in meshlens_traces_forward_dropped_spans_total{reason}.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshlens/meshlens/traces"
)

// Protocols of Options.Protocol.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http"
)

// Reasons of meshlens_traces_forward_dropped_spans_total.
const (
	reasonQueueFull        = "queue_full"        // Append found the queue full
	reasonRetriesExhausted = "retries_exhausted" // retryable failures until MaxRetryTime
	reasonRejected         = "rejected"          // a non-retryable failure, or spans a partial success rejected
	reasonShutdown         = "shutdown"          // still queued when the shutdown grace period ended
)

// Defaults of the Options fields left zero.
const (
	DefaultTimeout       = 10 * time.Second
	DefaultQueueSpans    = 100_000
	DefaultBatchSpans    = 8192
	DefaultFlushInterval = 200 * time.Millisecond
	DefaultMinBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff    = 5 * time.Second
	DefaultMaxRetryTime  = time.Minute
	DefaultShutdownGrace = 5 * time.Second
)

// Options configure a Forwarder.
type Options struct {
	// Endpoint is where spans go: for ProtocolHTTP the full URL
	// ("http://tempo:4318/v1/traces"), for ProtocolGRPC host:port
	// ("tempo:4317"). Required.
	Endpoint string
	// Protocol is ProtocolGRPC or ProtocolHTTP. Required.
	//
	// Both speak plain text: TLS to the endpoint is not supported yet, so
	// run the forwarder towards an endpoint on a trusted network (or a
	// local proxy that adds TLS).
	Protocol string
	// Headers are sent with every request (HTTP headers, gRPC metadata),
	// e.g. X-Scope-OrgID for a multi-tenant Tempo. Nil: none.
	Headers map[string]string
	// Timeout bounds one export request. Zero: DefaultTimeout.
	Timeout time.Duration
	// QueueSpans bounds the spans waiting to be sent; Append drops what
	// does not fit. Zero: DefaultQueueSpans.
	QueueSpans int
	// BatchSpans is the most spans one request carries. Zero:
	// DefaultBatchSpans.
	BatchSpans int
	// FlushInterval is the longest a span waits for a batch to fill before
	// it is sent. Zero: DefaultFlushInterval.
	FlushInterval time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// retries of a failed request; a Retry-After (HTTP) or RetryInfo
	// (gRPC) from the endpoint takes precedence. Zero: DefaultMinBackoff,
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryTime is the longest a batch is retried before it is dropped.
	// Zero: DefaultMaxRetryTime; negative: no retries.
	MaxRetryTime time.Duration
	// ShutdownGrace is how long Run, once its context is done, keeps
	// sending what is queued. Zero: DefaultShutdownGrace; negative: none.
	ShutdownGrace time.Duration
	// Logger logs failed requests. Nil: nothing is logged.
	Logger *slog.Logger
	// Metrics receives the forwarder's metrics. Nil: a private set (the
	// metrics are then not exported).
	Metrics *metrics.Set
}

// Forwarder sends spans to an OTLP endpoint. Append enqueues; Run, its one
// owner goroutine, batches and sends.
type Forwarder struct {
	opts   Options
	logger *slog.Logger
	send   sender

	mu      sync.Mutex
	queue   []traces.Span // FIFO; queue[0] is the oldest
	stopped bool          // Run has returned: Append drops
	wake    chan struct{} // capacity 1: a span was queued

	sent       *metrics.Counter
	dropped    map[string]*metrics.Counter
	requests   *metrics.Counter
	failures   *metrics.Counter
	retries    *metrics.Counter
	queueGauge *metrics.Gauge
}

// sender sends one request's spans. A failure is an *exportError when the
// endpoint answered; any other error is retryable.
type sender interface {
	export(ctx context.Context, spans []traces.Span) (rejected int64, err error)
	close() error
}

// exportError is a failed request with what the endpoint said about it.
type exportError struct {
	err        error
	retryable  bool
	retryAfter time.Duration // 0: the endpoint did not say
}

func (e *exportError) Error() string { return e.err.Error() }
func (e *exportError) Unwrap() error { return e.err }

// New validates o and returns a Forwarder. Nothing is sent before Run.
func New(o Options) (*Forwarder, error) {
	if o.Endpoint == "" {
		return nil, errors.New("traces forward: endpoint is empty")
	}
	o.Timeout = orDefault(o.Timeout, DefaultTimeout)
	o.FlushInterval = orDefault(o.FlushInterval, DefaultFlushInterval)
	o.MinBackoff = orDefault(o.MinBackoff, DefaultMinBackoff)
	o.MaxBackoff = max(orDefault(o.MaxBackoff, DefaultMaxBackoff), o.MinBackoff)
	o.MaxRetryTime = orDefault(o.MaxRetryTime, DefaultMaxRetryTime)
	o.ShutdownGrace = orDefault(o.ShutdownGrace, DefaultShutdownGrace)
	if o.QueueSpans < 0 || o.BatchSpans < 0 {
		return nil, fmt.Errorf("traces forward: negative queue (%d) or batch (%d) size", o.QueueSpans, o.BatchSpans)
	}
	o.QueueSpans = orDefault(o.QueueSpans, DefaultQueueSpans)
	o.BatchSpans = orDefault(o.BatchSpans, DefaultBatchSpans)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}

	f := &Forwarder{
		opts:   o,
		logger: o.Logger.With("endpoint", o.Endpoint, "protocol", o.Protocol),
		wake:   make(chan struct{}, 1),
	}
	var err error
	switch o.Protocol {
	case ProtocolHTTP:
		f.send, err = newHTTPSender(o.Endpoint, o.Headers, http.DefaultTransport)
	case ProtocolGRPC:
		f.send, err = newGRPCSender(o.Endpoint, o.Headers)
	default:
		err = fmt.Errorf("protocol %q: want %q or %q", o.Protocol, ProtocolGRPC, ProtocolHTTP)
	}
	if err != nil {
		return nil, fmt.Errorf("traces forward: %w", err)
	}

	s := o.Metrics
	f.sent = s.GetOrCreateCounter(`meshlens_traces_forward_sent_spans_total`)
	f.dropped = map[string]*metrics.Counter{}
	for _, r := range []string{reasonQueueFull, reasonRetriesExhausted, reasonRejected, reasonShutdown} {
		f.dropped[r] = s.GetOrCreateCounter(fmt.Sprintf(`meshlens_traces_forward_dropped_spans_total{reason=%q}`, r))
	}
	f.requests = s.GetOrCreateCounter(`meshlens_traces_forward_requests_total`)
	f.failures = s.GetOrCreateCounter(`meshlens_traces_forward_failed_requests_total`)
	f.retries = s.GetOrCreateCounter(`meshlens_traces_forward_retries_total`)
	f.queueGauge = s.GetOrCreateGauge(`meshlens_traces_forward_queue_spans`, nil)
	s.GetOrCreateGauge(`meshlens_traces_forward_queue_capacity_spans`, nil).Set(float64(o.QueueSpans))
	return f, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Append queues spans to be sent and returns nil at once: it never waits
// for the endpoint. Spans that do not fit in the queue are dropped and
// counted. The spans are copied; the caller may reuse them.
func (f *Forwarder) Append(_ context.Context, spans []traces.Span) error {
	if len(spans) == 0 {
		return nil
	}
	f.mu.Lock()
	n := len(spans)
	if f.stopped {
		f.mu.Unlock()
		f.dropped[reasonShutdown].Add(n)
		return nil
	}
	fit := min(n, f.opts.QueueSpans-len(f.queue))
	f.queue = appendCopies(f.queue, spans[:fit])
	f.queueGauge.Set(float64(len(f.queue)))
	f.mu.Unlock()

	if fit < n {
		f.dropped[reasonQueueFull].Add(n - fit)
	}
	if fit > 0 {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// appendCopies appends deep copies of spans to dst. Spans of one ingested
// resource share their resource attributes; their copies share one copy.
func appendCopies(dst, spans []traces.Span) []traces.Span {
	var lastRes, lastCopy []traces.Attr
	for _, s := range spans {
		if len(s.Resource) > 0 {
			if len(lastRes) != len(s.Resource) || &lastRes[0] != &s.Resource[0] {
				lastRes, lastCopy = s.Resource, cloneAttrs(s.Resource)
			}
			s.Resource = lastCopy
		}
		s.Attrs = cloneAttrs(s.Attrs)
		if s.Events != nil {
			evs := make([]traces.Event, len(s.Events))
			for i, e := range s.Events {
				e.Attrs = cloneAttrs(e.Attrs)
				evs[i] = e
			}
			s.Events = evs
		}
		if s.Links != nil {
			ls := make([]traces.Link, len(s.Links))
			for i, l := range s.Links {
				l.Attrs = cloneAttrs(l.Attrs)
				ls[i] = l
			}
			s.Links = ls
		}
		dst = append(dst, s)
	}
	return dst
}

func cloneAttrs(as []traces.Attr) []traces.Attr {
	if as == nil {
		return nil
	}
	return append(make([]traces.Attr, 0, len(as)), as...)
}

// Run sends queued spans until ctx is done, then keeps sending what is
// queued for the shutdown grace period and drops the rest. Append drops
// spans after Run returned. Run returns nil.
func (f *Forwarder) Run(ctx context.Context) error {
	defer f.send.close()

	// Requests outlive ctx by the grace period, so a shutdown does not
	// abort the request in flight.
	sendCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	grace := f.opts.ShutdownGrace
	stopAfter := context.AfterFunc(ctx, func() {
		if grace <= 0 {
			cancel()
			return
		}
		time.AfterFunc(grace, cancel)
	})
	defer stopAfter()

	flush := time.NewTimer(time.Hour)
	flush.Stop()
	flushArmed := false
	for {
		if ctx.Err() != nil {
			f.drain(sendCtx)
			return nil
		}
		f.mu.Lock()
		n := len(f.queue)
		f.mu.Unlock()
		switch {
		case n >= f.opts.BatchSpans:
			f.sendBatch(sendCtx, ctx)
			continue
		case n > 0 && !flushArmed:
			flush.Reset(f.opts.FlushInterval)
			flushArmed = true
		}
		select {
		case <-ctx.Done():
		case <-f.wake:
		case <-flush.C:
			flushArmed = false
			f.sendBatch(sendCtx, ctx)
		}
	}
}

// drain sends what is queued until the queue is empty or the grace period
// ended, then drops the rest.
func (f *Forwarder) drain(sendCtx context.Context) {
	for sendCtx.Err() == nil {
		f.mu.Lock()
		n := len(f.queue)
		f.mu.Unlock()
		if n == 0 {
			break
		}
		f.sendBatch(sendCtx, sendCtx)
	}
	f.mu.Lock()
	f.stopped = true
	n := len(f.queue)
	f.queue = nil
	f.queueGauge.Set(0)
	f.mu.Unlock()
	if n > 0 {
		f.dropped[reasonShutdown].Add(n)
		f.logger.Warn("spans dropped at shutdown", "spans", n)
	}
}

// sendBatch takes up to BatchSpans spans off the queue and sends them,
// retrying retryable failures. Retries stop when runCtx is done (the
// batch is then put back at the head of the queue for the drain) or when
// sendCtx is done (the batch is dropped).
func (f *Forwarder) sendBatch(sendCtx, runCtx context.Context) {
	f.mu.Lock()
	n := min(len(f.queue), f.opts.BatchSpans)
	batch := make([]traces.Span, n)
	copy(batch, f.queue)
	// Clear the taken slots so the queue's array does not keep them alive.
	clear(f.queue[:n])
	f.queue = f.queue[n:]
	if len(f.queue) == 0 {
		f.queue = nil
	}
	f.queueGauge.Set(float64(len(f.queue)))
	f.mu.Unlock()
	if n == 0 {
		return
	}

	start := time.Now()
	backoff := f.opts.MinBackoff
	for attempt := 1; ; attempt++ {
		reqCtx, cancel := context.WithTimeout(sendCtx, f.opts.Timeout)
		rejected, err := f.send.export(reqCtx, batch)
		cancel()
		f.requests.Inc()
		if err == nil {
			if rejected > 0 {
				rejected = min(rejected, int64(n))
				f.dropped[reasonRejected].Add(int(rejected))
				f.logger.Warn("endpoint rejected some spans", "spans", n, "rejected", rejected)
			}
			f.sent.Add(n - int(rejected))
			return
		}
		f.failures.Inc()

		var ee *exportError
		retryable := !errors.As(err, &ee) || ee.retryable
		if !retryable {
			f.dropped[reasonRejected].Add(n)
			f.logger.Warn("spans rejected", "spans", n, "err", err)
			return
		}
		wait := backoff
		if ee != nil && ee.retryAfter > 0 {
			wait = ee.retryAfter
		}
		backoff = min(2*backoff, f.opts.MaxBackoff)
		if f.opts.MaxRetryTime < 0 || time.Since(start)+wait > f.opts.MaxRetryTime {
			f.dropped[reasonRetriesExhausted].Add(n)
			f.logger.Warn("spans dropped after retries", "spans", n, "attempts", attempt, "err", err)
			return
		}
		f.logger.Debug("retrying export", "spans", n, "attempt", attempt, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			f.retries.Inc()
		case <-runCtx.Done():
			t.Stop()
			if runCtx != sendCtx && sendCtx.Err() == nil {
				// Shutting down: back to the head of the queue, so the
				// drain sends it first.
				f.requeue(batch)
				return
			}
			f.dropped[reasonShutdown].Add(n)
			f.logger.Warn("spans dropped at shutdown", "spans", n, "err", err)
			return
		}
	}
}

// requeue puts batch back at the head of the queue.
func (f *Forwarder) requeue(batch []traces.Span) {
	f.mu.Lock()
	f.queue = append(batch, f.queue...)
	f.queueGauge.Set(float64(len(f.queue)))
	f.mu.Unlock()
}
