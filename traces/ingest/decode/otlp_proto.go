package decode

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
	"unsafe"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshlens/meshlens/traces"
)

// The OTLP protobuf decoder below reads an ExportTraceServiceRequest
// straight into traces.Spans, without building pdata first. It gives what
// pdata's UnmarshalProto, Batch.add and traces.FromPdata give together
// (FuzzOTLPProtoDifferential): the same spans, refusals, truncations and
// limits.
//
// It is stricter than pdata's decoder in a few corners that only corrupt or
// ancient input reaches: groups in unknown fields, varints past 64 bits,
// field numbers past 2^29-1, and the pre-1.0 field
// ResourceSpans.instrumentation_library_spans (1000) that pdata migrates.
// For those, and for every other failure, OTLPProto decodes the request
// again with pdata, so that the answer (spans or error) is pdata's.
//
// Ownership: the spans keep no reference to the request bytes, which the
// caller may reuse as soon as OTLPProto returns. Their strings are copied
// into one buffer per request (otlpDecoder.str) and their attributes carved
// out of shared arrays (otlpDecoder.attrSlice), so a request costs a few
// allocations instead of two per attribute; in exchange those arrays stay
// in memory until every span of the request that uses them is dropped.
// Nothing ever writes to a byte of them once a string covers it.

// errFallback means the request uses something only pdata's decoder reads.
var errFallback = errors.New("decoded by pdata")

// otlpDecoder holds the state of one request.
type otlpDecoder struct {
	b   *Batch
	lim Limits
	// total counts every span, kept or refused, for MaxSpansPerRequest.
	total int
	// strs holds the bytes of the spans' strings (see str).
	strs []byte
	// attrs is where span attributes are carved from (see attrSlice).
	attrs []traces.Attr
}

// str copies b into d.strs and returns it as a string. d.strs is as long as
// the request, and the strings copied are disjoint parts of the request (or
// shorter), so it is never outgrown; if it were, the string would be
// allocated on its own. Bytes of d.strs are written once, before the string
// over them exists, and never again.
func (d *otlpDecoder) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	n := len(d.strs)
	if cap(d.strs)-n < len(b) {
		return string(b)
	}
	d.strs = append(d.strs, b...)
	return unsafe.String(&d.strs[n], len(b))
}

// base64 is b's standard base64 encoding, in d.strs when it has room.
func (d *otlpDecoder) base64(b []byte) string {
	enc := base64.StdEncoding
	m := enc.EncodedLen(len(b))
	n := len(d.strs)
	if m == 0 || cap(d.strs)-n < m {
		return enc.EncodeToString(b)
	}
	d.strs = enc.AppendEncode(d.strs, b)
	return unsafe.String(&d.strs[n], m)
}

// attrSlice returns an empty slice of capacity n for a span's attributes,
// carved from a shared array: appending up to n attributes stays in it.
func (d *otlpDecoder) attrSlice(n int) []traces.Attr {
	if cap(d.attrs)-len(d.attrs) < n {
		d.attrs = make([]traces.Attr, 0, max(n, 256))
	}
	i := len(d.attrs)
	d.attrs = d.attrs[:i+n]
	return d.attrs[i : i : i+n]
}

// OTLPProto decodes an OTLP ExportTraceServiceRequest in protobuf (the body
// of OTLP/HTTP with Content-Type application/x-protobuf). The spans do not
// refer to data.
func OTLPProto(data []byte, lim Limits) (Batch, error) {
	if err := checkSize(data, lim); err != nil {
		return Batch{}, err
	}
	b, err := otlpProtoDirect(data, lim)
	if err == nil || errors.Is(err, ErrTooManySpans) {
		return b, err
	}
	// Corrupt (or pre-1.0) input: pdata decides, and says what is wrong.
	return otlpProtoPdata(data, lim)
}

// otlpProtoPdata is OTLPProto through pdata: UnmarshalProto, Traces.
func otlpProtoPdata(data []byte, lim Limits) (Batch, error) {
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(data); err != nil {
		return Batch{}, fmt.Errorf("%w: OTLP protobuf (%d bytes): %w", ErrUndecodable, len(data), err)
	}
	return Traces(req.Traces(), lim)
}

// otlpProtoDirect decodes data without pdata. Its errors other than
// ErrTooManySpans only say that pdata must decode the request.
func otlpProtoDirect(data []byte, lim Limits) (Batch, error) {
	var b Batch
	d := otlpDecoder{b: &b, lim: lim, strs: make([]byte, 0, len(data))}
	b.Spans = make([]traces.Span, 0, countSpans(data))
	// message ExportTraceServiceRequest {
	//   repeated opentelemetry.proto.trace.v1.ResourceSpans resource_spans = 1;
	// }
	for len(data) > 0 {
		num, typ, v, rest, err := nextField(data)
		if err != nil {
			return Batch{}, err
		}
		data = rest
		if num == 1 {
			if typ != protowire.BytesType {
				return Batch{}, errWireType
			}
			if err := d.resourceSpans(v); err != nil {
				return Batch{}, err
			}
		}
	}
	if err := checkSpanCount(d.total, lim); err != nil {
		return Batch{}, err
	}
	return b, nil
}

// countSpans counts the spans of a request, reading only the framing of
// its resource spans and scope spans; a malformed request counts what
// precedes the fault (decoding then fails).
func countSpans(data []byte) int {
	n := 0
	for len(data) > 0 {
		num, typ, rs, rest, err := nextField(data)
		if err != nil {
			return n
		}
		data = rest
		if num != 1 || typ != protowire.BytesType {
			continue
		}
		for len(rs) > 0 {
			num, typ, ss, rest, err := nextField(rs)
			if err != nil {
				return n
			}
			rs = rest
			if num != 2 || typ != protowire.BytesType {
				continue
			}
			for len(ss) > 0 {
				num, typ, _, rest, err := nextField(ss)
				if err != nil {
					return n
				}
				ss = rest
				if num == 2 && typ == protowire.BytesType {
					n++
				}
			}
		}
	}
	return n
}

var (
	errWireType = errors.New("wrong wire type")
	errIDLength = errors.New("invalid id length")
)

// nextField reads one field of a message: its number, wire type, its
// value's bytes for BytesType (else the encoded value) and what follows.
// Unknown fields are read the way pdata skips them; groups are refused
// (errFallback).
func nextField(b []byte) (protowire.Number, protowire.Type, []byte, []byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, nil, nil, protowire.ParseError(n)
	}
	b = b[n:]
	switch typ {
	case protowire.BytesType:
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return 0, 0, nil, nil, protowire.ParseError(m)
		}
		return num, typ, v, b[m:], nil
	case protowire.VarintType:
		_, m := protowire.ConsumeVarint(b)
		if m < 0 {
			return 0, 0, nil, nil, protowire.ParseError(m)
		}
		return num, typ, b[:m], b[m:], nil
	case protowire.Fixed64Type:
		if len(b) < 8 {
			return 0, 0, nil, nil, protowire.ParseError(-1)
		}
		return num, typ, b[:8], b[8:], nil
	case protowire.Fixed32Type:
		if len(b) < 4 {
			return 0, 0, nil, nil, protowire.ParseError(-1)
		}
		return num, typ, b[:4], b[4:], nil
	}
	return 0, 0, nil, nil, errFallback
}

func varint(v []byte) uint64 {
	x, _ := protowire.ConsumeVarint(v)
	return x
}

func fixed64(v []byte) uint64 {
	x, _ := protowire.ConsumeFixed64(v)
	return x
}

// wantType checks a known field's wire type, as pdata does.
func wantType(typ, want protowire.Type) error {
	if typ != want {
		return errWireType
	}
	return nil
}

func readID(dst []byte, v []byte) error {
	switch len(v) {
	case 0:
		clear(dst)
	case len(dst):
		copy(dst, v)
	default:
		return errIDLength
	}
	return nil
}

// resourceSpans decodes one ResourceSpans, appending its spans to d.b.
func (d *otlpDecoder) resourceSpans(buf []byte) error {
	// message ResourceSpans {
	//   reserved 1000;
	//   opentelemetry.proto.resource.v1.Resource resource = 1;
	//   repeated ScopeSpans scope_spans = 2;
	//   string schema_url = 3;
	// }
	//
	// The resource may follow the spans: they get it at the end. Its
	// attributes are truncated only when a span of it is kept.
	start := len(d.b.Spans)
	var resources [][]byte
	for len(buf) > 0 {
		num, typ, v, rest, err := nextField(buf)
		if err != nil {
			return err
		}
		buf = rest
		switch num {
		case 1:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			resources = append(resources, v)
		case 2:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			if err := d.scopeSpans(v); err != nil {
				return err
			}
		case 3:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
		case 1000:
			// instrumentation_library_spans, migrated by pdata.
			return errFallback
		}
	}
	spans := d.b.Spans[start:]
	limit := 0
	if len(spans) > 0 {
		limit = d.lim.MaxAttrValueBytes
	}
	var res []traces.Attr
	for _, r := range resources {
		// message Resource {
		//   repeated opentelemetry.proto.common.v1.KeyValue attributes = 1;
		//   uint32 dropped_attributes_count = 2;
		//   repeated EntityRef entity_refs = 3;
		// }
		for len(r) > 0 {
			num, typ, v, rest, err := nextField(r)
			if err != nil {
				return err
			}
			r = rest
			switch num {
			case 1:
				if err := wantType(typ, protowire.BytesType); err != nil {
					return err
				}
				if res, err = d.keyValue(res, v, limit); err != nil {
					return err
				}
			case 2:
				if err := wantType(typ, protowire.VarintType); err != nil {
					return err
				}
			case 3:
				if err := wantType(typ, protowire.BytesType); err != nil {
					return err
				}
				if err := validEntityRef(v); err != nil {
					return err
				}
			}
		}
	}
	if len(spans) == 0 {
		return nil
	}
	service := ""
	for _, a := range res {
		if a.Key == traces.ServiceNameKey {
			service = attrAsString(a)
			break
		}
	}
	for i := range spans {
		spans[i].Resource = res
		spans[i].Service = service
	}
	return nil
}

// validEntityRef checks an EntityRef's wire types, which pdata refuses when
// wrong; meshlens does not keep entity references.
func validEntityRef(buf []byte) error {
	// message EntityRef {
	//   string schema_url = 1;
	//   string type = 2;
	//   repeated string id_keys = 3;
	//   repeated string description_keys = 4;
	// }
	for len(buf) > 0 {
		num, typ, _, rest, err := nextField(buf)
		if err != nil {
			return err
		}
		buf = rest
		if num >= 1 && num <= 4 && typ != protowire.BytesType {
			return errWireType
		}
	}
	return nil
}

// scopeSpans decodes one ScopeSpans, appending its spans to d.b.
func (d *otlpDecoder) scopeSpans(buf []byte) error {
	// message ScopeSpans {
	//   opentelemetry.proto.common.v1.InstrumentationScope scope = 1;
	//   repeated Span spans = 2;
	//   string schema_url = 3;
	// }
	//
	// The scope may follow the spans: they get it at the end.
	start := len(d.b.Spans)
	var name, version string
	for len(buf) > 0 {
		num, typ, v, rest, err := nextField(buf)
		if err != nil {
			return err
		}
		buf = rest
		switch num {
		case 1:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			if err := d.scope(v, &name, &version); err != nil {
				return err
			}
		case 2:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			d.total++
			if err := d.span(v); err != nil {
				return err
			}
		case 3:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
		}
	}
	if name != "" || version != "" {
		spans := d.b.Spans[start:]
		for i := range spans {
			spans[i].ScopeName, spans[i].ScopeVersion = name, version
		}
	}
	return nil
}

// scope reads an InstrumentationScope's name and version; a later
// occurrence of a field replaces an earlier one, as in pdata.
func (d *otlpDecoder) scope(buf []byte, name, version *string) error {
	// message InstrumentationScope {
	//   string name = 1;
	//   string version = 2;
	//   repeated KeyValue attributes = 3;
	//   uint32 dropped_attributes_count = 4;
	// }
	for len(buf) > 0 {
		num, typ, v, rest, err := nextField(buf)
		if err != nil {
			return err
		}
		buf = rest
		switch num {
		case 1, 2:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			if num == 1 {
				*name = d.str(v)
			} else {
				*version = d.str(v)
			}
		case 3:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			// Scope attributes are not kept, only checked.
			if _, err := d.keyValue(nil, v, 0); err != nil {
				return err
			}
		case 4:
			if err := wantType(typ, protowire.VarintType); err != nil {
				return err
			}
		}
	}
	return nil
}

// span decodes one Span. A span with a zero trace or span id is refused
// (its attributes are still read: pdata fails a request whose refused span
// is malformed); a valid one is appended to d.b.Spans.
//
// The first pass reads the fixed fields and checks the framing of the
// others, the second decodes attributes, events and links, truncated only
// when the span is kept.
func (d *otlpDecoder) span(buf []byte) error {
	// message Span {
	//   bytes trace_id = 1;
	//   bytes span_id = 2;
	//   string trace_state = 3;
	//   bytes parent_span_id = 4;
	//   fixed32 flags = 16;
	//   string name = 5;
	//   SpanKind kind = 6;
	//   fixed64 start_time_unix_nano = 7;
	//   fixed64 end_time_unix_nano = 8;
	//   repeated opentelemetry.proto.common.v1.KeyValue attributes = 9;
	//   uint32 dropped_attributes_count = 10;
	//   repeated Event events = 11;
	//   uint32 dropped_events_count = 12;
	//   repeated Link links = 13;
	//   uint32 dropped_links_count = 14;
	//   Status status = 15;
	// }
	var (
		s                       traces.Span
		nAttrs, nEvents, nLinks int
		name, state, msg        []byte
	)
	for b := buf; len(b) > 0; {
		num, typ, v, rest, err := nextField(b)
		if err != nil {
			return err
		}
		b = rest
		switch num {
		case 1:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			if err := readID(s.TraceID[:], v); err != nil {
				return err
			}
		case 2, 4:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			dst := s.SpanID[:]
			if num == 4 {
				dst = s.ParentSpanID[:]
			}
			if err := readID(dst, v); err != nil {
				return err
			}
		case 3:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			state = v
		case 5:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			name = v
		case 6:
			if err := wantType(typ, protowire.VarintType); err != nil {
				return err
			}
			s.Kind = traces.Kind(int32(varint(v)))
		case 7, 8:
			if err := wantType(typ, protowire.Fixed64Type); err != nil {
				return err
			}
			if num == 7 {
				s.StartUnixNano = fixed64(v)
			} else {
				s.EndUnixNano = fixed64(v)
			}
		case 9, 11, 13:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			switch num {
			case 9:
				nAttrs++
			case 11:
				nEvents++
			default:
				nLinks++
			}
		case 10, 12, 14:
			if err := wantType(typ, protowire.VarintType); err != nil {
				return err
			}
		case 15:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return err
			}
			// message Status {
			//   reserved 1;
			//   string message = 2;
			//   StatusCode code = 3;
			// }
			for st := v; len(st) > 0; {
				num, typ, v, rest, err := nextField(st)
				if err != nil {
					return err
				}
				st = rest
				switch num {
				case 2:
					if err := wantType(typ, protowire.BytesType); err != nil {
						return err
					}
					msg = v
				case 3:
					if err := wantType(typ, protowire.VarintType); err != nil {
						return err
					}
					s.StatusCode = traces.StatusCode(int32(varint(v)))
				}
			}
		case 16:
			if err := wantType(typ, protowire.Fixed32Type); err != nil {
				return err
			}
		}
	}

	kept := true
	switch {
	case s.TraceID.IsZero():
		d.b.refuse(ReasonInvalidTraceID, "span %s (trace %s, span %s): zero trace id", quoteName(string(name)), s.TraceID, s.SpanID)
		kept = false
	case s.SpanID.IsZero():
		d.b.refuse(ReasonInvalidSpanID, "span %s (trace %s, span %s): zero span id", quoteName(string(name)), s.TraceID, s.SpanID)
		kept = false
	}
	limit := 0
	if kept {
		limit = d.lim.MaxAttrValueBytes
		s.Name = d.str(name)
		s.TraceState = d.str(state)
		s.StatusMessage = d.str(msg)
		if nAttrs > 0 {
			s.Attrs = d.attrSlice(nAttrs)
		}
		if nEvents > 0 {
			s.Events = make([]traces.Event, 0, nEvents)
		}
		if nLinks > 0 {
			s.Links = make([]traces.Link, 0, nLinks)
		}
	}
	for b := buf; len(b) > 0; {
		num, _, v, rest, _ := nextField(b) // checked by the first pass
		b = rest
		var err error
		switch num {
		case 9:
			s.Attrs, err = d.keyValue(s.Attrs, v, limit)
		case 11:
			var e traces.Event
			if e, err = d.event(v, limit); err == nil && kept {
				s.Events = append(s.Events, e)
			}
		case 13:
			var l traces.Link
			if l, err = d.link(v, limit); err == nil && kept {
				s.Links = append(s.Links, l)
			}
		}
		if err != nil {
			return err
		}
	}
	if kept {
		d.b.Spans = append(d.b.Spans, s)
	}
	return nil
}

func (d *otlpDecoder) event(buf []byte, limit int) (traces.Event, error) {
	// message Event {
	//   fixed64 time_unix_nano = 1;
	//   string name = 2;
	//   repeated opentelemetry.proto.common.v1.KeyValue attributes = 3;
	//   uint32 dropped_attributes_count = 4;
	// }
	var e traces.Event
	for len(buf) > 0 {
		num, typ, v, rest, err := nextField(buf)
		if err != nil {
			return e, err
		}
		buf = rest
		switch num {
		case 1:
			if err := wantType(typ, protowire.Fixed64Type); err != nil {
				return e, err
			}
			e.TimeUnixNano = fixed64(v)
		case 2:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return e, err
			}
			e.Name = d.str(v)
		case 3:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return e, err
			}
			if e.Attrs, err = d.keyValue(e.Attrs, v, limit); err != nil {
				return e, err
			}
		case 4:
			if err := wantType(typ, protowire.VarintType); err != nil {
				return e, err
			}
		}
	}
	return e, nil
}

func (d *otlpDecoder) link(buf []byte, limit int) (traces.Link, error) {
	// message Link {
	//   bytes trace_id = 1;
	//   bytes span_id = 2;
	//   string trace_state = 3;
	//   repeated opentelemetry.proto.common.v1.KeyValue attributes = 4;
	//   uint32 dropped_attributes_count = 5;
	//   fixed32 flags = 6;
	// }
	var l traces.Link
	for len(buf) > 0 {
		num, typ, v, rest, err := nextField(buf)
		if err != nil {
			return l, err
		}
		buf = rest
		switch num {
		case 1:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return l, err
			}
			if err := readID(l.TraceID[:], v); err != nil {
				return l, err
			}
		case 2:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return l, err
			}
			if err := readID(l.SpanID[:], v); err != nil {
				return l, err
			}
		case 3:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return l, err
			}
			l.TraceState = d.str(v)
		case 4:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return l, err
			}
			if l.Attrs, err = d.keyValue(l.Attrs, v, limit); err != nil {
				return l, err
			}
		case 5:
			if err := wantType(typ, protowire.VarintType); err != nil {
				return l, err
			}
		case 6:
			if err := wantType(typ, protowire.Fixed32Type); err != nil {
				return l, err
			}
		}
	}
	return l, nil
}

// Kinds of an AnyValue's oneof, as pdata's Value.Type sees them.
const (
	valEmpty = iota
	valStr
	valBool
	valInt
	valDouble
	valBytes
	valNested // an array or a map somewhere: pdata decodes the value
)

// keyValue decodes one KeyValue and appends it to dst as an Attr; string
// values longer than limit (zero: no limit) are cut and counted in
// d.b.Truncated.
func (d *otlpDecoder) keyValue(dst []traces.Attr, buf []byte, limit int) ([]traces.Attr, error) {
	// message KeyValue {
	//   string key = 1;
	//   AnyValue value = 2;
	//   int32 key_strindex = 3;
	// }
	// message AnyValue {
	//   oneof value {
	//     string string_value = 1;
	//     bool bool_value = 2;
	//     int64 int_value = 3;
	//     double double_value = 4;
	//     ArrayValue array_value = 5;
	//     KeyValueList kvlist_value = 6;
	//     bytes bytes_value = 7;
	//     int32 string_value_strindex = 8;
	//   }
	// }
	//
	// Repeated value fields merge, as pdata's decoder does: a later oneof
	// member replaces an earlier one. Arrays and maps (rare) are decoded by
	// pdata, from all the value fields, to get its JSON text exactly.
	var (
		key    []byte
		kind   = valEmpty
		raw    []byte // string or bytes value
		num64  uint64
		nested bool
	)
	for kv := buf; len(kv) > 0; {
		num, typ, v, rest, err := nextField(kv)
		if err != nil {
			return dst, err
		}
		kv = rest
		switch num {
		case 1:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return dst, err
			}
			key = v
		case 2:
			if err := wantType(typ, protowire.BytesType); err != nil {
				return dst, err
			}
			for len(v) > 0 {
				num, typ, fv, rest, err := nextField(v)
				if err != nil {
					return dst, err
				}
				v = rest
				want := protowire.BytesType
				switch num {
				case 1:
					kind, raw = valStr, fv
				case 2:
					want, kind, num64 = protowire.VarintType, valBool, varint(fv)
				case 3:
					want, kind, num64 = protowire.VarintType, valInt, varint(fv)
				case 4:
					want, kind, num64 = protowire.Fixed64Type, valDouble, fixed64(fv)
				case 5, 6:
					nested = true
				case 7:
					kind, raw = valBytes, fv
				case 8:
					want, kind = protowire.VarintType, valEmpty
				default:
					continue
				}
				if typ != want {
					return dst, errWireType
				}
			}
		case 3:
			if err := wantType(typ, protowire.VarintType); err != nil {
				return dst, err
			}
		}
	}
	a := traces.Attr{Key: d.str(key)}
	if nested {
		return d.nestedValue(dst, a.Key, buf, limit)
	}
	switch kind {
	case valStr:
		if limit > 0 && len(raw) > limit {
			raw = truncateUTF8Bytes(raw, limit)
			d.b.Truncated++
		}
		a.Type, a.Str = traces.TypeString, d.str(raw)
	case valBool:
		a.Type, a.Bool = traces.TypeBool, num64 != 0
	case valInt:
		a.Type, a.Int = traces.TypeInt, int64(num64)
	case valDouble:
		a.Type, a.Float = traces.TypeFloat, math.Float64frombits(num64)
	case valBytes:
		a.Type, a.Str = traces.TypeBytes, d.base64(raw)
	}
	return append(dst, a), nil
}

// nestedValue decodes the value fields of KeyValue kv with pdata: it wraps
// them in a request of one resource attribute (concatenated messages merge,
// as repeated fields do) and converts the attribute as FromPdata does,
// after truncating its strings as Batch.add does.
func (d *otlpDecoder) nestedValue(dst []traces.Attr, key string, kv []byte, limit int) ([]traces.Attr, error) {
	var value []byte
	for len(kv) > 0 {
		num, _, v, rest, _ := nextField(kv) // checked by keyValue
		kv = rest
		if num == 2 {
			value = protowire.AppendTag(value, 2, protowire.BytesType)
			value = protowire.AppendBytes(value, v)
		}
	}
	// ExportTraceServiceRequest.resource_spans(1) > ResourceSpans.resource(1)
	// > Resource.attributes(1) > KeyValue (value fields only).
	wrap := value
	for range 3 {
		wrap = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), wrap)
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(wrap); err != nil {
		return dst, err
	}
	attrs := req.Traces().ResourceSpans().At(0).Resource().Attributes()
	for _, v := range attrs.All() {
		if limit > 0 {
			d.b.Truncated += truncateValue(v, limit)
		}
		return append(dst, attrFromValue(key, v)), nil
	}
	return dst, errFallback
}

// attrFromValue is traces.FromPdata's conversion of one attribute.
func attrFromValue(k string, v pcommon.Value) traces.Attr {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return traces.Attr{Key: k, Type: traces.TypeString, Str: v.Str()}
	case pcommon.ValueTypeInt:
		return traces.Attr{Key: k, Type: traces.TypeInt, Int: v.Int()}
	case pcommon.ValueTypeDouble:
		return traces.Attr{Key: k, Type: traces.TypeFloat, Float: v.Double()}
	case pcommon.ValueTypeBool:
		return traces.Attr{Key: k, Type: traces.TypeBool, Bool: v.Bool()}
	case pcommon.ValueTypeBytes:
		return traces.Attr{Key: k, Type: traces.TypeBytes, Str: base64.StdEncoding.EncodeToString(v.Bytes().AsRaw())}
	case pcommon.ValueTypeMap, pcommon.ValueTypeSlice:
		return traces.Attr{Key: k, Type: traces.TypeJSON, Str: v.AsString()}
	}
	return traces.Attr{Key: k, Type: traces.TypeString}
}

// attrAsString is pdata's Value.AsString of a decoded attribute, for
// service.name.
func attrAsString(a traces.Attr) string {
	switch a.Type {
	case traces.TypeString, traces.TypeBytes, traces.TypeJSON:
		// Bytes are base64 and arrays and maps JSON, as AsString has them;
		// an empty value is an empty string.
		return a.Str
	case traces.TypeInt:
		return pcommon.NewValueInt(a.Int).AsString()
	case traces.TypeFloat:
		return pcommon.NewValueDouble(a.Float).AsString()
	case traces.TypeBool:
		return pcommon.NewValueBool(a.Bool).AsString()
	}
	return a.Str
}

// truncateUTF8Bytes is truncateUTF8 on bytes, without copying.
func truncateUTF8Bytes(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	i := n
	for i > 0 && i > n-utf8.UTFMax && !utf8.RuneStart(b[i]) {
		i--
	}
	return b[:i]
}
