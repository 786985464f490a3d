package decode

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meshlens/meshlens/traces"
)

// Zipkin v2 spans are read into zipkin-go's model one span at a time (so
// one bad span does not fail the request, which zipkin-go's list decoding
// and the collector's unmarshalers would), then converted with the
// collector's translator, which maps
//
//	localEndpoint.serviceName -> resource service.name
//	kind CLIENT/SERVER/PRODUCER/CONSUMER -> span kind (else unspecified)
//	tags -> span attributes, as strings; resource conventions (k8s.*,
//	        host.*, ...) -> resource attributes; error -> status error;
//	        otel.status_code/-description -> status
//	annotations -> events
//	remoteEndpoint -> peer.service, net.peer.ip, net.peer.port
//	timestamp, duration (µs) -> start and end; a missing timestamp gives
//	        start 0 and the attribute otel.zipkin.absentField.startTime
//
// 64-bit trace ids become 128-bit ids with eight leading zero bytes, as
// traces.TraceID keeps them. The translator ignores "shared"; see unshare.
var toTranslator = zipkinv2.ToTranslator{ParseStringTags: false}

// ZipkinJSON decodes a Zipkin v2 JSON list of spans (the body of POST
// /api/v2/spans with Content-Type application/json). Ids are hex, either
// case; trace ids 16 or 32 digits.
func ZipkinJSON(data []byte, lim Limits) (Batch, error) {
	if err := checkSize(data, lim); err != nil {
		return Batch{}, err
	}
	// Most requests are valid and decode as a whole; only when that fails
	// is the list decoded span by span to tell the bad spans from the rest.
	// Either way spans are refused in the order of the request.
	var b Batch
	var models []*zipkinmodel.SpanModel
	if err := json.Unmarshal(data, &models); err == nil {
		if err := checkSpanCount(len(models), lim); err != nil {
			return Batch{}, err
		}
		models = slices.DeleteFunc(models, func(m *zipkinmodel.SpanModel) bool { return !b.validZipkin(m) })
	} else {
		var raws []json.RawMessage
		if err := json.Unmarshal(data, &raws); err != nil {
			return Batch{}, fmt.Errorf("%w: Zipkin JSON (%d bytes): %w", ErrUndecodable, len(data), err)
		}
		if err := checkSpanCount(len(raws), lim); err != nil {
			return Batch{}, err
		}
		models = make([]*zipkinmodel.SpanModel, 0, len(raws))
		for _, raw := range raws {
			m := new(zipkinmodel.SpanModel)
			if err := json.Unmarshal(raw, m); err != nil {
				b.refuseZipkinJSON(raw, err)
				continue
			}
			if b.validZipkin(m) {
				models = append(models, m)
			}
		}
	}
	b.addZipkin(models, lim)
	return b, nil
}

// validZipkin refuses a null span or one with a zero trace id (zipkin-go
// refuses zero span ids itself).
func (b *Batch) validZipkin(m *zipkinmodel.SpanModel) bool {
	switch {
	case m == nil:
		b.refuse(ReasonInvalidSpan, "null span")
		return false
	case m.TraceID.Empty():
		b.refuse(ReasonInvalidTraceID, "span %s (trace %s, span %s): zero trace id", quoteName(m.Name), traceIDOf(m), traces.SpanID(idBytes(uint64(m.ID))))
		return false
	case m.ID == 0:
		b.refuse(ReasonInvalidSpanID, "span %s (trace %s, span %s): zero span id", quoteName(m.Name), traceIDOf(m), traces.SpanID{})
		return false
	}
	return true
}

func (b *Batch) refuseZipkinJSON(raw []byte, err error) {
	var id struct {
		TraceID any `json:"traceId"`
		ID      any `json:"id"`
		Name    any `json:"name"`
	}
	_ = json.Unmarshal(raw, &id)
	if errors.Is(err, zipkinmodel.ErrValidIDRequired) {
		b.refuse(ReasonInvalidSpanID, "span %s (trace %v, span %v): zero span id", quoteName(fmt.Sprint(id.Name)), id.TraceID, id.ID)
		return
	}
	b.refuse(ReasonInvalidSpan, "span %s (trace %v, span %v): %v", quoteName(fmt.Sprint(id.Name)), id.TraceID, id.ID, err)
}

// ZipkinProto decodes a Zipkin v2 protobuf ListOfSpans (the body of POST
// /api/v2/spans with Content-Type application/x-protobuf). Trace ids are 8
// or 16 bytes, as zipkin.proto allows.
func ZipkinProto(data []byte, lim Limits) (Batch, error) {
	if err := checkSize(data, lim); err != nil {
		return Batch{}, err
	}
	n, err := countProtoField(data, 1)
	if err != nil {
		return Batch{}, fmt.Errorf("%w: Zipkin protobuf (%d bytes): %w", ErrUndecodable, len(data), err)
	}
	if err := checkSpanCount(n, lim); err != nil {
		return Batch{}, err
	}
	var list zipkin_proto3.ListOfSpans
	if err := proto.Unmarshal(data, &list); err != nil {
		return Batch{}, fmt.Errorf("%w: Zipkin protobuf (%d bytes): %w", ErrUndecodable, len(data), err)
	}
	var b Batch
	models := make([]*zipkinmodel.SpanModel, 0, len(list.Spans))
	for _, ps := range list.GetSpans() {
		m, err := modelFromProto(ps)
		if err != nil {
			b.refuse(ReasonInvalidSpan, "span %s (trace %x, span %x): %v", quoteName(ps.GetName()), ps.GetTraceId(), ps.GetId(), err)
			continue
		}
		if b.validZipkin(m) {
			models = append(models, m)
		}
	}
	b.addZipkin(models, lim)
	return b, nil
}

// countProtoField counts the occurrences of a top-level field, without
// decoding them.
func countProtoField(b []byte, field protowire.Number) (int, error) {
	n := 0
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return n, protowire.ParseError(l)
		}
		b = b[l:]
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return n, protowire.ParseError(l)
		}
		b = b[l:]
		if num == field {
			n++
		}
	}
	return n, nil
}

// modelFromProto converts one protobuf span as zipkin-go's ParseSpans does,
// but accepting 8-byte trace ids and failing for this span only.
func modelFromProto(s *zipkin_proto3.Span) (*zipkinmodel.SpanModel, error) {
	var tid zipkinmodel.TraceID
	switch id := s.GetTraceId(); len(id) {
	case 16:
		tid.High, tid.Low = binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:])
	case 8:
		tid.Low = binary.BigEndian.Uint64(id)
	default:
		return nil, fmt.Errorf("trace id of %d bytes, want 8 or 16", len(id))
	}
	if len(s.GetId()) != 8 {
		return nil, fmt.Errorf("span id of %d bytes, want 8", len(s.GetId()))
	}
	m := &zipkinmodel.SpanModel{
		SpanContext: zipkinmodel.SpanContext{TraceID: tid, ID: zipkinmodel.ID(binary.BigEndian.Uint64(s.GetId()))},
		Name:        s.GetName(),
		Duration:    time.Duration(min(s.GetDuration(), maxMicros)) * time.Microsecond,
		Shared:      s.GetShared(),
		Tags:        s.GetTags(),
	}
	switch p := s.GetParentId(); len(p) {
	case 0:
	case 8:
		pid := zipkinmodel.ID(binary.BigEndian.Uint64(p))
		m.ParentID = &pid
	default:
		return nil, fmt.Errorf("parent id of %d bytes, want 8", len(p))
	}
	switch s.GetKind() {
	case zipkin_proto3.Span_CLIENT:
		m.Kind = zipkinmodel.Client
	case zipkin_proto3.Span_SERVER:
		m.Kind = zipkinmodel.Server
	case zipkin_proto3.Span_PRODUCER:
		m.Kind = zipkinmodel.Producer
	case zipkin_proto3.Span_CONSUMER:
		m.Kind = zipkinmodel.Consumer
	}
	if ts := s.GetTimestamp(); ts > 0 {
		m.Timestamp = microsToTime(ts)
	}
	m.LocalEndpoint = endpointFromProto(s.GetLocalEndpoint())
	m.RemoteEndpoint = endpointFromProto(s.GetRemoteEndpoint())
	for _, a := range s.GetAnnotations() {
		if a != nil {
			m.Annotations = append(m.Annotations, zipkinmodel.Annotation{Timestamp: microsToTime(a.GetTimestamp()), Value: a.GetValue()})
		}
	}
	return m, nil
}

// maxMicros keeps microsecond times within time.Duration and int64 nanoseconds.
const maxMicros = uint64(1<<63-1) / 1000

func microsToTime(us uint64) time.Time {
	return time.Unix(0, int64(min(us, maxMicros))*1000).UTC()
}

func endpointFromProto(e *zipkin_proto3.Endpoint) *zipkinmodel.Endpoint {
	if e == nil {
		return nil
	}
	ep := &zipkinmodel.Endpoint{ServiceName: e.GetServiceName(), Port: uint16(e.GetPort())}
	// zipkin-go's own encoder writes an IPv4 address parsed from text
	// in its 16-byte form.
	if ip := net.IP(e.GetIpv4()).To4(); ip != nil {
		ep.IPv4 = ip
	}
	if ip := e.GetIpv6(); len(ip) == net.IPv6len {
		ep.IPv6 = net.IP(ip)
	}
	if ep.Empty() {
		return nil
	}
	return ep
}

// addZipkin translates decoded Zipkin spans and adds the valid ones to b.
// The translator fails a whole list for one span's malformed annotation or
// link tag; then each span is translated alone and only the failing ones
// are refused.
func (b *Batch) addZipkin(models []*zipkinmodel.SpanModel, lim Limits) {
	for _, m := range models {
		unshare(m)
	}
	td, err := toTranslator.ToTraces(models)
	if err == nil {
		b.add(td, lim)
		return
	}
	for _, m := range models {
		td, err := toTranslator.ToTraces([]*zipkinmodel.SpanModel{m})
		if err != nil {
			b.refuse(ReasonInvalidSpan, "span %s (trace %s, span %s): %v", quoteName(m.Name), traceIDOf(m), traces.SpanID(idBytes(uint64(m.ID))), err)
			continue
		}
		b.add(td, lim)
	}
}

func traceIDOf(m *zipkinmodel.SpanModel) traces.TraceID {
	var id traces.TraceID
	binary.BigEndian.PutUint64(id[:8], m.TraceID.High)
	binary.BigEndian.PutUint64(id[8:], m.TraceID.Low)
	return id
}

func idBytes(v uint64) (b [8]byte) {
	binary.BigEndian.PutUint64(b[:], v)
	return b
}

// unshare gives the server half of a shared span its own span id.
//
// With B3 propagation a server may join the client's span (Zipkin's
// "shared": true; Envoy does so unless shared_span_context is off): both
// halves carry the same span id. The span store keeps one span per id, and
// the service graph pairs a server span with its client parent, so the
// server half gets an id derived from the trace and the shared id (the same
// for every retry of a request) and the client half as its parent, as
// Jaeger's query service does. Spans that name the shared id as their
// parent stay children of the client half.
func unshare(m *zipkinmodel.SpanModel) {
	if !m.Shared || m.ID == 0 {
		return
	}
	var buf [25]byte
	binary.BigEndian.PutUint64(buf[0:], m.TraceID.High)
	binary.BigEndian.PutUint64(buf[8:], m.TraceID.Low)
	binary.BigEndian.PutUint64(buf[16:], uint64(m.ID))
	buf[24] = 's'
	id := zipkinmodel.ID(xxhash.Sum64(buf[:]))
	if id == 0 || id == m.ID {
		id ^= 1 << 63
	}
	parent := m.ID
	m.ParentID = &parent
	m.ID = id
	m.Shared = false
}
