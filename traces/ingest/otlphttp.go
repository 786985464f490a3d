package ingest

import (
	"fmt"
	"net/http"
	"strconv"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/ingest/decode"
)

const (
	ctProtobuf = "application/x-protobuf"
	ctJSON     = "application/json"
)

// otlpHandler receives OTLP/HTTP traces.
type otlpHandler struct {
	r *receiver
}

// NewOTLPHandler returns the handler of OTLP/HTTP's POST /v1/traces: an
// ExportTraceServiceRequest in protobuf (Content-Type
// application/x-protobuf) or OTLP JSON (application/json), gzip-encoded or
// not.
//
// As the OTLP/HTTP specification says, it answers 200 with an
// ExportTraceServiceResponse in the request's encoding, whose
// partial_success counts the refused spans (zero trace or span id) and
// names the first; the valid spans are stored. Refused requests carry a
// google.rpc.Status in the request's encoding: 400 when the body cannot be
// decoded or no span of it is valid, 413 over the size or span limits, 415
// for another encoding (a text body when the content type itself is
// unknown), 429 with Retry-After when the appender is overloaded (senders
// retry), 503 when it fails (nothing stored; senders retry).
func NewOTLPHandler(app traces.Appender, opts Options) http.Handler {
	return &otlpHandler{r: newReceiver(app, opts)}
}

func (h *otlpHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "traces are sent with POST", http.StatusMethodNotAllowed)
		return
	}
	ct := mediaType(req, "")
	var dec func([]byte, decode.Limits) (decode.Batch, error)
	switch ct {
	case ctProtobuf:
		dec = decode.OTLPProto
	case ctJSON:
		dec = decode.OTLPJSON
	default:
		err := fmt.Errorf("%w: content type %q, want %s or %s", errUnsupported, ct, ctProtobuf, ctJSON)
		h.r.refuse(protocolOTLPHTTP, classify(err), err)
		http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
		return
	}

	bb := getBody()
	body, err := h.r.readBody(req, bb)
	var b decode.Batch
	if err == nil {
		h.r.receivedBytes(protocolOTLPHTTP).Add(len(body))
		b, err = dec(body, h.r.opts.Limits)
	}
	// The spans and messages are copies: the body's buffers are free.
	putBody(bb)
	if err == nil && len(b.Spans) == 0 && b.RefusedSpans() > 0 {
		h.r.countDecoded(&b)
		h.r.refusedRequests(reasonInvalidSpans).Inc()
		h.writeStatus(w, ct, http.StatusBadRequest, codes.InvalidArgument, b.RefusedMessage())
		return
	}
	if err == nil {
		err = h.r.store(req.Context(), protocolOTLPHTTP, &b)
	}
	if err != nil {
		rf := classify(err)
		h.r.refuse(protocolOTLPHTTP, rf, err)
		code := codes.InvalidArgument
		switch rf.httpCode {
		case http.StatusTooManyRequests:
			code = codes.Unavailable
			w.Header().Set("Retry-After", strconv.Itoa(h.r.opts.retryAfterSeconds()))
		case http.StatusServiceUnavailable:
			code = codes.Unavailable
		}
		h.writeStatus(w, ct, rf.httpCode, code, err.Error())
		return
	}

	resp := ptraceotlp.NewExportResponse()
	if n := b.RefusedSpans(); n > 0 {
		h.r.logger.Debug("spans refused", "protocol", protocolOTLPHTTP, "refused", n, "accepted", len(b.Spans), "first", b.FirstRefused)
		resp.PartialSuccess().SetRejectedSpans(int64(n))
		resp.PartialSuccess().SetErrorMessage(b.RefusedMessage())
	}
	var out []byte
	if ct == ctJSON {
		out, err = resp.MarshalJSON()
	} else {
		out, err = resp.MarshalProto()
	}
	if err != nil {
		// The spans are stored; the sender only misses the details.
		h.r.logger.Error("encode OTLP response", "err", err)
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// writeStatus answers with a google.rpc.Status in the request's encoding,
// as OTLP/HTTP wants for failures.
func (h *otlpHandler) writeStatus(w http.ResponseWriter, ct string, httpCode int, code codes.Code, msg string) {
	st := status.New(code, msg).Proto()
	var (
		out []byte
		err error
	)
	if ct == ctJSON {
		out, err = protojson.Marshal(st)
	} else {
		out, err = proto.Marshal(st)
	}
	if err != nil {
		http.Error(w, msg, httpCode)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(httpCode)
	_, _ = w.Write(out)
}
