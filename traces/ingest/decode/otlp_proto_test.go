package decode

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshlens/meshlens/traces"
)

// richTraces uses every field the decoder reads: resources with and
// without service.name (one an int), scopes, every attribute type, nested
// arrays and maps, long and multi-byte strings, events, links, status,
// trace state, and spans that are refused.
func richTraces() ptrace.Traces {
	td := ptrace.NewTraces()
	putAll := func(m pcommon.Map, long string) {
		m.PutStr("str", "value")
		m.PutStr("long", long)
		m.PutStr("utf8", "héllo wörld, ünïcödé")
		m.PutInt("int", -1234567890123)
		m.PutDouble("double", 3.25)
		m.PutBool("bool", true)
		m.PutEmptyBytes("bytes").FromRaw([]byte{0, 1, 2, 0xff})
		m.PutEmpty("empty")
		sl := m.PutEmptySlice("list")
		sl.AppendEmpty().SetStr(long)
		sl.AppendEmpty().SetInt(7)
		sl.AppendEmpty().SetEmptyMap().PutDouble("x", 1.5)
		mp := m.PutEmptyMap("map")
		mp.PutStr("k", "héllo héllo héllo")
		mp.PutEmptySlice("inner").AppendEmpty().SetBool(false)
		m.PutStr("dup", "first")
	}
	for r := range 3 {
		rs := td.ResourceSpans().AppendEmpty()
		rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.24.0")
		switch r {
		case 0:
			rs.Resource().Attributes().PutStr("service.name", "checkout-service-with-a-long-name")
			putAll(rs.Resource().Attributes(), strings.Repeat("r", 40))
		case 1:
			rs.Resource().Attributes().PutInt("service.name", 42)
		}
		for sc := range 2 {
			ss := rs.ScopeSpans().AppendEmpty()
			if sc == 0 {
				ss.Scope().SetName("otel-go")
				ss.Scope().SetVersion("1.2.3")
				ss.Scope().Attributes().PutStr("scope.attr", "x")
			}
			for i := range 4 {
				s := ss.Spans().AppendEmpty()
				s.SetName(fmt.Sprintf("span %d/%d/%d ünï", r, sc, i))
				tid := [16]byte{byte(r + 1), 15: byte(i)}
				sid := [8]byte{byte(sc), 7: byte(i + 1)}
				if r == 2 && i == 1 {
					tid = [16]byte{}
				}
				if i == 3 {
					sid = [8]byte{}
				}
				s.SetTraceID(tid)
				s.SetSpanID(sid)
				if i > 0 {
					s.SetParentSpanID([8]byte{7: 1})
				}
				s.TraceState().FromRaw("vendor=abc")
				s.SetKind(ptrace.SpanKind(i % 6))
				s.SetStartTimestamp(pcommon.Timestamp(1e18 + uint64(i)))
				s.SetEndTimestamp(pcommon.Timestamp(1e18 + 5e6))
				s.SetFlags(1)
				s.Status().SetCode(ptrace.StatusCode(i % 3))
				s.Status().SetMessage("status message")
				s.SetDroppedAttributesCount(2)
				putAll(s.Attributes(), strings.Repeat("ß", 30))
				s.Attributes().PutStr("dup", "second")
				e := s.Events().AppendEmpty()
				e.SetName("exception")
				e.SetTimestamp(1e18 + 1)
				e.Attributes().PutStr("exception.stacktrace", strings.Repeat("at x\n", 20))
				s.Events().AppendEmpty().SetName("bare")
				l := s.Links().AppendEmpty()
				l.SetTraceID([16]byte{9})
				l.SetSpanID([8]byte{9})
				l.TraceState().FromRaw("k=v")
				l.Attributes().PutStr("link.long", strings.Repeat("l", 50))
				s.Links().AppendEmpty()
			}
		}
	}
	return td
}

// otlpFixtures are the request bodies the differential test and the fuzz
// target start from.
func otlpFixtures(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, td := range []ptrace.Traces{testTraces(), richTraces(), ptrace.NewTraces()} {
		pb, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pb)
	}
	// The Envoy fixture as OTLP (the benchmark's request).
	bt, err := ZipkinJSON(envoyRequest(t, 20), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := ptraceotlp.NewExportRequestFromTraces(traces.ToPdata(bt.Spans)).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, pb)

	// Hand-made encodings pdata's marshaller does not produce.
	msg := func(fields ...[]byte) []byte { return []byte(strings.Join(byteStrings(fields), "")) }
	lenField := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	varintField := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	fixed64Field := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
	}
	tid := lenField(1, []byte{1, 15: 2})
	sid := lenField(2, []byte{3, 7: 4})
	kv := func(k string, values ...[]byte) []byte {
		f := [][]byte{lenField(1, []byte(k))}
		for _, v := range values {
			f = append(f, lenField(2, v))
		}
		return msg(f...)
	}
	str := func(s string) []byte { return lenField(1, []byte(s)) }
	span := msg(
		lenField(9, kv("a", str("x"), varintField(3, 5))),                                    // merged value: int wins
		lenField(9, kv("b", lenField(5, lenField(1, str("in array"))), str("scalar after"))), // nested then scalar
		lenField(9, kv("c", lenField(6, lenField(1, kv("k", str("v")))), msg())),             // map, then an empty value
		lenField(9, kv("d", varintField(8, 3))),                                              // strindex: empty
		lenField(9, msg(lenField(2, str("no key")), lenField(1, []byte("late key")))),
		tid, sid, lenField(5, []byte("first")), lenField(5, []byte("second")),
		varintField(6, 1<<40|2), fixed64Field(7, 10), fixed64Field(8, 20),
		lenField(15, msg(varintField(3, 2))), lenField(15, msg(lenField(2, []byte("merged")))),
		varintField(99, 1), lenField(100, []byte("unknown")),
	)
	scope := lenField(1, msg(lenField(1, []byte("late scope")), lenField(2, []byte("v1"))))
	resource := lenField(1, msg(lenField(1, kv("service.name", str("late-service")))))
	out = append(out,
		// Scope after its spans, resource after its scope spans, repeated
		// and merged fields.
		lenField(1, msg(lenField(2, msg(lenField(2, span), scope, lenField(2, span))), resource, resource)),
		// A service.name that is a double.
		lenField(1, msg(lenField(1, msg(lenField(1, kv("service.name", fixed64Field(4, 0x400921fb54442d18))))), lenField(2, lenField(2, span)))),
		// The pre-1.0 instrumentation_library_spans.
		lenField(1, msg(lenField(1000, lenField(2, span)))),
		// A group in an unknown field; a bad id length; a wrong wire type.
		append(lenField(1, lenField(2, lenField(2, span))), 0xa3, 0x01, 0xa4, 0x01),
		lenField(1, lenField(2, lenField(2, msg(lenField(1, []byte{1, 2, 3}), sid)))),
		lenField(1, lenField(2, lenField(2, msg(tid, sid, varintField(5, 1))))),
		// A malformed attribute in a refused span.
		lenField(1, lenField(2, lenField(2, msg(sid, lenField(9, msg(varintField(1, 1))))))),
	)
	return out
}

func byteStrings(bs [][]byte) []string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = string(b)
	}
	return s
}

// sameBatch compares two decodings; NaN attribute values compare by their
// printing.
func sameBatch(a, b Batch) bool {
	return reflect.DeepEqual(a, b) || fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b)
}

// checkDifferential decodes data with OTLPProto and with pdata (the former
// implementation: UnmarshalProto, Batch.add, traces.FromPdata) and fails
// unless both give equal Batches or both fail alike.
func checkDifferential(t *testing.T, data []byte, lim Limits) {
	t.Helper()
	want, wantErr := otlpProtoPdata(data, lim)
	direct, directErr := otlpProtoDirect(data, lim)
	if directErr == nil || errors.Is(directErr, ErrTooManySpans) {
		// Where the direct decoder answers, it answers as pdata does.
		if (wantErr == nil) != (directErr == nil) || !sameBatch(direct, want) {
			t.Fatalf("direct decoder: error %v, pdata: error %v\ndirect %#v\n pdata %#v", directErr, wantErr, direct, want)
		}
	}
	got, err := OTLPProto(data, lim)
	if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
		t.Fatalf("OTLPProto error %v, pdata error %v", err, wantErr)
	}
	if !sameBatch(got, want) {
		t.Fatalf("OTLPProto and pdata differ:\nOTLPProto %#v\n    pdata %#v", got, want)
	}
}

func TestOTLPProtoDifferential(t *testing.T) {
	for i, body := range otlpFixtures(t) {
		for _, lim := range []Limits{{}, fuzzLimits, {MaxAttrValueBytes: 3}, {MaxSpansPerRequest: 2}} {
			t.Run(fmt.Sprintf("fixture %d limits %+v", i, lim), func(t *testing.T) {
				checkDifferential(t, body, lim)
			})
		}
	}
	// The direct decoder reads the common fixtures itself.
	for i, body := range otlpFixtures(t)[:6] {
		if _, err := otlpProtoDirect(body, Limits{}); err != nil {
			t.Errorf("fixture %d: direct decoder: %v", i, err)
		}
	}
}

// TestOTLPProtoSharesResource: the spans of one resource share its
// attributes, as traces.FromPdata's do.
func TestOTLPProtoSharesResource(t *testing.T) {
	pb, err := ptraceotlp.NewExportRequestFromTraces(richTraces()).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	b, err := OTLPProto(pb, Limits{MaxAttrValueBytes: 8})
	if err != nil {
		t.Fatal(err)
	}
	first := b.Spans[0].Resource
	n := 0
	for _, s := range b.Spans {
		if len(s.Resource) > 0 && &s.Resource[0] == &first[0] {
			n++
		}
	}
	if n != 6 || b.Spans[0].Service != "checkout" {
		t.Errorf("%d spans share the first resource, want 6; service %q", n, b.Spans[0].Service)
	}
}

func FuzzOTLPProtoDifferential(f *testing.F) {
	for _, body := range otlpFixtures(f) {
		f.Add(body)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x12, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDifferential(t, data, fuzzLimits)
		checkDifferential(t, data, Limits{})
	})
}
