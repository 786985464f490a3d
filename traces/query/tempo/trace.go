package tempo

import (
	"bytes"
	"fmt"
	"net/http"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshlens/meshlens/traces"
)

// Tempo's Trace message is
//
//	message Trace { repeated opentelemetry.proto.trace.v1.ResourceSpans resourceSpans = 1; }
//
// wire-identical to OTLP's ExportTraceServiceRequest (and TracesData), so
// pdata's ProtoMarshaler writes it. Its v1 JSON names the field "batches";
// v2 wraps it:
//
//	message TraceByIDResponse {
//	  Trace trace = 1;
//	  TraceByIDMetrics metrics = 2;
//	  enum PartialStatus { COMPLETE = 0; PARTIAL = 1; }
//	  PartialStatus status = 3;
//	  string message = 4;
//	}
const (
	traceByIDTraceField = 1
	contentTypeProtobuf = "application/protobuf"
	contentTypeJSON     = "application/json"
)

// readTrace parses the id and time range and reads the trace; it answers
// the request itself when it returns false.
func (h *handler) readTrace(w http.ResponseWriter, r *http.Request) (ptrace.Traces, bool) {
	id, err := traces.ParseTraceID(r.PathValue("id"))
	if err != nil {
		badRequest(w, err)
		return ptrace.Traces{}, false
	}
	tr, err := h.timeRange(r, true)
	if err != nil {
		badRequest(w, err)
		return ptrace.Traces{}, false
	}
	spans, err := h.reader.Trace(r.Context(), id, tr)
	if err != nil {
		h.fail(w, r, fmt.Errorf("read trace %s: %w", id, err))
		return ptrace.Traces{}, false
	}
	return traces.ToPdata(spans), true
}

func (h *handler) traceV1(w http.ResponseWriter, r *http.Request) {
	td, ok := h.readTrace(w, r)
	if !ok {
		return
	}
	if acceptsProtobuf(r) {
		b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		h.write(w, r, contentTypeProtobuf, b, err)
		return
	}
	b, err := traceJSON(td, "batches")
	h.write(w, r, contentTypeJSON, b, err)
}

func (h *handler) traceV2(w http.ResponseWriter, r *http.Request) {
	td, ok := h.readTrace(w, r)
	if !ok {
		return
	}
	if acceptsProtobuf(r) {
		b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		if err == nil {
			// status = COMPLETE is proto3's default and so not written.
			b = protowire.AppendBytes(protowire.AppendTag(nil, traceByIDTraceField, protowire.BytesType), b)
		}
		h.write(w, r, contentTypeProtobuf, b, err)
		return
	}
	b, err := traceJSON(td, "resourceSpans")
	if err == nil {
		var buf bytes.Buffer
		buf.WriteString(`{"trace":`)
		buf.Write(b)
		buf.WriteString(`,"status":"COMPLETE"}`)
		b = buf.Bytes()
	}
	h.write(w, r, contentTypeJSON, b, err)
}

// traceJSON is OTLP JSON with the top-level field named field.
func traceJSON(td ptrace.Traces, field string) ([]byte, error) {
	b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	if err != nil {
		return nil, err
	}
	const otlpField = `{"resourceSpans":`
	if field != "resourceSpans" && bytes.HasPrefix(b, []byte(otlpField)) {
		b = append([]byte(`{"`+field+`":`), b[len(otlpField):]...)
	}
	return b, nil
}

func (h *handler) write(w http.ResponseWriter, r *http.Request, contentType string, b []byte, err error) {
	if err != nil {
		h.fail(w, r, fmt.Errorf("encode trace: %w", err))
		return
	}
	w.Header().Set("Content-Type", contentType)
	_, _ = w.Write(b)
}
