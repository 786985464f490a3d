package decode

import (
	"bytes"
	"compress/gzip"
	"errors"
	"runtime"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/meshlens/meshlens/traces"
)

// testTraces is one resource with a valid root and child, a span with a
// zero trace id and one with a zero span id.
func testTraces() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("otel-go")
	add := func(name string, tid [16]byte, sid, parent [8]byte) ptrace.Span {
		s := ss.Spans().AppendEmpty()
		s.SetName(name)
		s.SetTraceID(tid)
		s.SetSpanID(sid)
		s.SetParentSpanID(parent)
		s.SetKind(ptrace.SpanKindServer)
		s.SetStartTimestamp(1e18)
		s.SetEndTimestamp(1e18 + 5e6)
		return s
	}
	tid := [16]byte{0xab, 15: 1}
	root := add("GET /cart", tid, [8]byte{1}, [8]byte{})
	root.Attributes().PutStr("http.route", "/cart")
	root.Status().SetCode(ptrace.StatusCodeError)
	add("SELECT cart", tid, [8]byte{2}, [8]byte{1}).SetKind(ptrace.SpanKindClient)
	add("no-trace", [16]byte{}, [8]byte{3}, [8]byte{})
	add("no-span", tid, [8]byte{}, [8]byte{1})
	return td
}

func TestOTLP(t *testing.T) {
	req := ptraceotlp.NewExportRequestFromTraces(testTraces())
	pb, err := req.MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	js, err := req.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		decode func([]byte, Limits) (Batch, error)
		body   []byte
	}{
		{"protobuf", OTLPProto, pb},
		{"JSON", OTLPJSON, js},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.decode(tc.body, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Spans) != 2 {
				t.Fatalf("%d spans kept, want 2", len(b.Spans))
			}
			root, child := b.Spans[0], b.Spans[1]
			if root.Name != "GET /cart" || root.TraceID.String() != "ab000000000000000000000000000001" || root.SpanID.String() != "0100000000000000" ||
				!root.IsRoot() || root.Kind != traces.KindServer || root.StatusCode != traces.StatusError || root.Service != "checkout" ||
				root.ScopeName != "otel-go" || attrText(&root, "http.route") != "/cart" || root.DurationNanos() != 5e6 {
				t.Errorf("root span: %+v", root)
			}
			if child.ParentSpanID != root.SpanID || child.Kind != traces.KindClient || child.TraceID != root.TraceID {
				t.Errorf("child span: %+v", child)
			}
			if b.Refused[ReasonInvalidTraceID] != 1 || b.Refused[ReasonInvalidSpanID] != 1 {
				t.Fatalf("refused %v", b.Refused)
			}
			want := `span "no-trace" (trace 00000000000000000000000000000000, span 0300000000000000): zero trace id`
			if b.FirstRefused != want {
				t.Errorf("first refused:\n got %s\nwant %s", b.FirstRefused, want)
			}
			if msg := b.RefusedMessage(); msg != "2 spans refused, the other 2 accepted; first: "+want {
				t.Errorf("message %q", msg)
			}
		})
	}
}

func TestOTLPUndecodable(t *testing.T) {
	for name, body := range map[string]string{"truncated proto": "\x0a\xff\x01", "JSON for proto": `{"resourceSpans":[]}`} {
		if _, err := OTLPProto([]byte(body), Limits{}); !errors.Is(err, ErrUndecodable) {
			t.Errorf("%s: error %v, want ErrUndecodable", name, err)
		}
	}
	for name, body := range map[string]string{"not JSON": "{", "bad trace id": `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}`} {
		if _, err := OTLPJSON([]byte(body), Limits{}); !errors.Is(err, ErrUndecodable) {
			t.Errorf("%s: error %v, want ErrUndecodable", name, err)
		}
	}
}

func TestLimits(t *testing.T) {
	td := testTraces()
	pb, _ := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	js, _ := ptraceotlp.NewExportRequestFromTraces(td).MarshalJSON()
	zjs := readFixture(t, "envoy-zipkin.json")
	zpb := zipkinProtoFromJSON(t, zjs)
	for _, tc := range []struct {
		name   string
		decode func([]byte, Limits) (Batch, error)
		body   []byte
		spans  int
	}{
		{"OTLP protobuf", OTLPProto, pb, 4},
		{"OTLP JSON", OTLPJSON, js, 4},
		{"Zipkin JSON", ZipkinJSON, zjs, 4},
		{"Zipkin protobuf", ZipkinProto, zpb, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.decode(tc.body, Limits{MaxDecodedBytes: len(tc.body) - 1}); !errors.Is(err, ErrTooLarge) {
				t.Errorf("one byte over MaxDecodedBytes: error %v", err)
			}
			if _, err := tc.decode(tc.body, Limits{MaxDecodedBytes: len(tc.body)}); err != nil {
				t.Errorf("at MaxDecodedBytes: %v", err)
			}
			_, err := tc.decode(tc.body, Limits{MaxSpansPerRequest: tc.spans - 1})
			if !errors.Is(err, ErrTooManySpans) || !strings.Contains(err.Error(), "limit 3") {
				t.Errorf("one span over MaxSpansPerRequest: error %v", err)
			}
			if _, err := tc.decode(tc.body, Limits{MaxSpansPerRequest: tc.spans}); err != nil {
				t.Errorf("at MaxSpansPerRequest: %v", err)
			}
		})
	}
}

func TestTruncateAttributes(t *testing.T) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout-service") // 16 bytes
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	for i := range 2 {
		s := spans.AppendEmpty()
		s.SetTraceID([16]byte{1})
		s.SetSpanID([8]byte{byte(i + 1)})
		s.Attributes().PutStr("short", "ok")
		s.Attributes().PutStr("utf8", "héllo wörld") // é spans bytes 1-2
		s.Attributes().PutInt("int", 1234567890123)
		sl := s.Attributes().PutEmptySlice("list")
		sl.AppendEmpty().SetStr("0123456789")
		s.Events().AppendEmpty().Attributes().PutStr("exception.stacktrace", strings.Repeat("x", 100))
	}
	b, err := Traces(td, Limits{MaxAttrValueBytes: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Per span: utf8, list[0], the event; and the shared resource once.
	if b.Truncated != 7 {
		t.Errorf("truncated %d values, want 7", b.Truncated)
	}
	s := &b.Spans[0]
	for k, want := range map[string]string{"short": "ok", "utf8": "h", "int": "1234567890123", "list": `["01"]`} {
		if got := attrText(s, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if s.Service != "ch" || s.Events[0].Attrs[0].Str != "xx" {
		t.Errorf("service %q, event attribute %q", s.Service, s.Events[0].Attrs[0].Str)
	}
}

func TestGunzip(t *testing.T) {
	plain := bytes.Repeat([]byte("span "), 1000)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(plain)
	zw.Close()
	gz := buf.Bytes()

	for _, tc := range []struct {
		name  string
		src   []byte
		limit int
		err   error
	}{
		{"no limit", gz, 0, nil},
		{"at limit", gz, len(plain), nil},
		{"over limit", gz, len(plain) - 1, ErrTooLarge},
		{"not gzip", plain, 0, ErrUndecodable},
		{"truncated", gz[:len(gz)/2], 0, ErrUndecodable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Gunzip(nil, tc.src, tc.limit)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if tc.err == nil && !bytes.Equal(out, plain) {
				t.Fatalf("got %d bytes, want %d", len(out), len(plain))
			}
			if tc.limit > 0 && len(out) > tc.limit+1 {
				t.Fatalf("held %d bytes for limit %d", len(out), tc.limit)
			}
		})
	}
}

// TestGunzipBomb: a small body declaring a huge size is stopped at the
// limit without allocating the declared size.
func TestGunzipBomb(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 64 {
		zw.Write(zeros)
	}
	zw.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Gunzip(nil, buf.Bytes(), 1<<20)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want ErrTooLarge", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
		t.Errorf("allocated %d bytes for 64 MiB declared, limit 1 MiB", n)
	}
}
