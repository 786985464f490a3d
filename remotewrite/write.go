// Package remotewrite receives Prometheus remote write 1.0 and 2.0: the
// transport. Decoding is in package decode, apart from transport and
// storage; the handler appends to the next storage.AppendableV2 of the
// ingest chain and depends only on storage interfaces.
package remotewrite

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage"

	"github.com/meshlens/meshlens/remotewrite/decode"
)

// Reasons a whole request is refused; they label
// meshlens_remote_write_rejected_total along with the per-sample reasons.
const (
	reasonBodyTooLarge = "request_too_large"
	reasonUndecodable  = "undecodable_request"
	reasonUnsupported  = "unsupported_media_type"
	reasonThrottled    = "throttled"
)

// WriteOptions configures the write handler. Limits and MaxInflight must be
// positive.
type WriteOptions struct {
	decode.Limits
	// MaxInflight is how many requests are decoded and appended at once; more
	// are answered 429.
	MaxInflight int
	// Metrics receives the self-metrics (meshlens_remote_write_*). Nil means
	// a private set that nothing exports. Only NewWriteHandler reads it:
	// SetOptions keeps the handler's set.
	Metrics *metrics.Set
}

// WriteHandler receives remote write requests. Its options can be replaced
// while it serves (configuration reload).
type WriteHandler struct {
	logger *slog.Logger
	db     storage.AppendableV2
	meta   MetadataSink

	opts     atomic.Pointer[WriteOptions]
	inflight atomic.Int64
	metrics  *writeMetrics
}

// NewWriteHandler returns a handler for POST /api/v1/write. db's appenders must
// implement storage.ExemplarAppenderV2 (the TSDB head's do).
func NewWriteHandler(logger *slog.Logger, db storage.AppendableV2, meta MetadataSink, opts WriteOptions) *WriteHandler {
	h := &WriteHandler{logger: logger, db: db, meta: meta}
	set := opts.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	h.metrics = newWriteMetrics(set, func() float64 { return float64(h.inflight.Load()) })
	h.SetOptions(opts)
	return h
}

// SetOptions replaces the limits for requests that start after the call.
func (h *WriteHandler) SetOptions(o WriteOptions) { h.opts.Store(&o) }

func (h *WriteHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "remote write requires POST", http.StatusMethodNotAllowed)
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/x-protobuf"
	}
	msgType, err := remoteapi.ParseProtoMsg(ct)
	if err != nil {
		h.refuse(w, reasonUnsupported, http.StatusUnsupportedMediaType, err)
		return
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" && enc != string(remoteapi.SnappyBlockCompression) {
		h.refuse(w, reasonUnsupported, http.StatusUnsupportedMediaType, fmt.Errorf("content encoding %q is not supported, only snappy", enc))
		return
	}
	opts := h.opts.Load()
	if r.ContentLength > int64(opts.MaxBodyBytes) {
		h.refuse(w, reasonBodyTooLarge, http.StatusRequestEntityTooLarge, fmt.Errorf("%w: %d bytes, limit %d (remote_write.max_request_bytes)", decode.ErrBodyTooLarge, r.ContentLength, opts.MaxBodyBytes))
		return
	}
	if n := h.inflight.Add(1); n > int64(opts.MaxInflight) {
		h.inflight.Add(-1)
		w.Header().Set("Retry-After", "1")
		h.refuse(w, reasonThrottled, http.StatusTooManyRequests, fmt.Errorf("too many concurrent write requests (remote_write.max_inflight_requests=%d)", opts.MaxInflight))
		return
	}
	defer h.inflight.Add(-1)

	var (
		protocol string
		counters = &h.metrics.v1
		stats    Stats
	)
	switch msgType {
	case remoteapi.WriteV2MessageType:
		protocol, counters = "2.0", &h.metrics.v2
		err = decode.ParseV2(r.Body, opts.Limits, func(req *writev2.Request) (err error) {
			stats, err = h.ingest(r, func(in *ingester) error { return in.ingestV2(req) })
			return err
		})
	default:
		protocol = "1.0"
		// The request's label strings alias a pooled buffer: ingestion
		// copies what storage keeps before ParseV1 returns.
		err = decode.ParseV1(r.Body, opts.Limits, func(req *decode.WriteRequestV1) (err error) {
			stats, err = h.ingest(r, func(in *ingester) error { return in.ingestV1(req) })
			return err
		})
	}
	counters.bytes.Add(int(max(r.ContentLength, 0)))
	h.metrics.count(counters, &stats)

	if msgType == remoteapi.WriteV2MessageType {
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(stats.Samples))
		w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", strconv.Itoa(stats.Histograms))
		w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", strconv.Itoa(stats.Exemplars))
	}
	switch {
	case errors.Is(err, decode.ErrBodyTooLarge):
		h.refuse(w, reasonBodyTooLarge, http.StatusRequestEntityTooLarge, err)
	case errors.Is(err, ErrStorage):
		h.logger.Error("remote write failed", "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case err != nil:
		h.refuse(w, reasonUndecodable, http.StatusBadRequest, err)
	case stats.badRequest():
		h.logger.Debug("remote write partly rejected", "protocol", protocol, "err", stats.Error())
		http.Error(w, stats.Error(), http.StatusBadRequest)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// ingest runs fn in one storage transaction: everything valid is committed,
// whatever was rejected. Only storage failures roll back.
func (h *WriteHandler) ingest(r *http.Request, fn func(*ingester) error) (Stats, error) {
	in, err := newIngester(r.Context(), h.db, h.meta)
	if err != nil {
		return Stats{}, err
	}
	if err := fn(in); err != nil {
		in.rollback()
		return Stats{}, err
	}
	if err := in.commit(); err != nil {
		return Stats{}, err
	}
	return in.stats, nil
}

// refuse answers a request refused as a whole.
func (h *WriteHandler) refuse(w http.ResponseWriter, reason string, code int, err error) {
	h.metrics.refused[reason].Inc()
	h.logger.Debug("remote write refused", "reason", reason, "err", err)
	http.Error(w, err.Error(), code)
}
