package ingest

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/ingest/decode"
)

// zipkinHandler receives Zipkin v2 spans.
type zipkinHandler struct {
	r *receiver
}

// NewZipkinHandler returns the handler of Zipkin's POST /api/v2/spans:
// a JSON list of spans (Content-Type application/json, the default) or a
// protobuf ListOfSpans (application/x-protobuf), gzip-encoded or not.
//
// It answers 202 when every span was stored, as Zipkin does; 400 when some
// spans were refused (the valid ones are stored) or the body cannot be
// decoded; 413 over the size or span limits; 415 for another content type
// or encoding; 429 with Retry-After when the appender is overloaded; 503
// when it fails (nothing stored; senders retry). Error bodies are plain text.
func NewZipkinHandler(app traces.Appender, opts Options) http.Handler {
	return &zipkinHandler{r: newReceiver(app, opts)}
}

func (h *zipkinHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "spans are sent with POST", http.StatusMethodNotAllowed)
		return
	}
	b, err := h.decode(req)
	if err == nil {
		err = h.r.store(req.Context(), protocolZipkin, &b)
	}
	if err != nil {
		rf := classify(err)
		h.r.refuse(protocolZipkin, rf, err)
		if rf.httpCode == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", strconv.Itoa(h.r.opts.retryAfterSeconds()))
		}
		http.Error(w, err.Error(), rf.httpCode)
		return
	}
	if msg := b.RefusedMessage(); msg != "" {
		h.r.logger.Debug("spans refused", "protocol", protocolZipkin, "refused", b.RefusedSpans(), "accepted", len(b.Spans), "first", b.FirstRefused)
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (h *zipkinHandler) decode(req *http.Request) (decode.Batch, error) {
	var dec func([]byte, decode.Limits) (decode.Batch, error)
	switch ct := mediaType(req, "application/json"); ct {
	case "application/json":
		dec = decode.ZipkinJSON
	case "application/x-protobuf", "application/protobuf":
		dec = decode.ZipkinProto
	default:
		return decode.Batch{}, fmt.Errorf("%w: content type %q, want application/json or application/x-protobuf", errUnsupported, ct)
	}
	bb := getBody()
	defer putBody(bb) // the spans are copies: the body's buffers are free
	body, err := h.r.readBody(req, bb)
	if err != nil {
		return decode.Batch{}, err
	}
	h.r.receivedBytes(protocolZipkin).Add(len(body))
	return dec(body, h.r.opts.Limits)
}
