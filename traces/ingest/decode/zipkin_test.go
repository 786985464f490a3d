package decode

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	"google.golang.org/protobuf/proto"

	"github.com/meshlens/meshlens/traces"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustTraceID(t testing.TB, s string) traces.TraceID {
	t.Helper()
	id, err := traces.ParseTraceID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func attrText(s *traces.Span, key string) string {
	a, ok := s.Attr(key)
	if !ok {
		return "<absent>"
	}
	return a.Text()
}

// bySpanID finds the spans of a batch by span id in hex.
func bySpanID(t testing.TB, spans []traces.Span) map[string]*traces.Span {
	t.Helper()
	m := map[string]*traces.Span{}
	for i := range spans {
		s := &spans[i]
		key := s.SpanID.String()
		if _, dup := m[key]; dup {
			t.Fatalf("span id %s twice in one batch", key)
		}
		m[key] = s
	}
	return m
}

// TestZipkinJSONEnvoy decodes spans as Istio's Envoy sends them: 64-bit and
// 128-bit ids in either case, a shared server span, Istio's tags.
func TestZipkinJSONEnvoy(t *testing.T) {
	b, err := ZipkinJSON(readFixture(t, "envoy-zipkin.json"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if n := b.RefusedSpans(); n != 0 {
		t.Fatalf("%d spans refused: %s", n, b.FirstRefused)
	}
	if len(b.Spans) != 4 {
		t.Fatalf("got %d spans, want 4", len(b.Spans))
	}
	// An exemplar's trace_id of either length finds the 64-bit trace.
	short := mustTraceID(t, "463ac35c9f6413ad")
	if short != mustTraceID(t, "0000000000000000463ac35c9f6413ad") {
		t.Fatal("short and padded trace ids differ")
	}
	spans := bySpanID(t, b.Spans)
	client := spans["463ac35c9f6413ad"]
	if client == nil {
		t.Fatalf("no client span 463ac35c9f6413ad among %v", keys(spans))
	}
	if client.TraceID != short || client.TraceID.String() != "0000000000000000463ac35c9f6413ad" {
		t.Errorf("client trace id %s", client.TraceID)
	}
	if client.Kind != traces.KindClient || client.Service != "istio-ingressgateway.istio-system" || !client.IsRoot() {
		t.Errorf("client span: kind %s, service %q, parent %s", client.Kind, client.Service, client.ParentSpanID)
	}
	if v, ok := client.ResourceAttr(traces.ServiceNameKey); !ok || v.Str != client.Service {
		t.Errorf("resource service.name %v, want %q", v, client.Service)
	}
	for k, want := range map[string]string{
		"http.status_code":        "200",
		"upstream_cluster":        "outbound|9080||productpage.default.svc.cluster.local",
		"istio.canonical_service": "istio-ingressgateway",
		"node_id":                 "router~10.44.0.5~istio-ingressgateway-7d8b9c6f5-x2x9q.istio-system~istio-system.svc.cluster.local",
		"response_flags":          "-",
	} {
		if got := attrText(client, k); got != want {
			t.Errorf("client attribute %s = %q, want %q", k, got, want)
		}
	}
	if client.StartUnixNano != 1700000000000000*1000 || client.DurationNanos() != 12500*1000 {
		t.Errorf("client start %d duration %d", client.StartUnixNano, client.DurationNanos())
	}

	// The shared server half has an id of its own, child of the client half.
	var server *traces.Span
	for _, s := range spans {
		if s.Kind == traces.KindServer && s.TraceID == short {
			server = s
		}
	}
	if server == nil {
		t.Fatal("no server span in trace 463ac35c9f6413ad")
	}
	if server.SpanID == client.SpanID || server.ParentSpanID != client.SpanID {
		t.Errorf("shared server span: id %s parent %s, want a new id with parent %s", server.SpanID, server.ParentSpanID, client.SpanID)
	}
	if server.Service != "productpage.default" || attrText(server, "istio.canonical_service") != "productpage" {
		t.Errorf("server span: service %q, canonical service %q", server.Service, attrText(server, "istio.canonical_service"))
	}
	if attrText(server, "shared") != "<absent>" {
		t.Error("shared became an attribute")
	}

	// Upper-case ids, a parent, an error tag and an annotation.
	call := spans["a1b2c3d4e5f60718"]
	if call == nil {
		t.Fatalf("upper-case span id A1B2C3D4E5F60718 not found among %v", keys(spans))
	}
	if call.TraceID != short || call.ParentSpanID != client.SpanID || call.Kind != traces.KindClient {
		t.Errorf("upper-case span: trace %s parent %s kind %s", call.TraceID, call.ParentSpanID, call.Kind)
	}
	if call.StatusCode != traces.StatusError {
		t.Errorf("span with error=true has status %s", call.StatusCode)
	}
	if len(call.Events) != 1 || call.Events[0].Name != "retry" || call.Events[0].TimeUnixNano != 1700000000002500*1000 {
		t.Errorf("annotation as event: %+v", call.Events)
	}
	if attrText(call, "http.status_code") != "503" || attrText(call, "response_flags") != "UF,URX" {
		t.Errorf("tags: %+v", call.Attrs)
	}

	long := spans["e457b5a2e4d86bd1"]
	if long == nil || long.TraceID.String() != "80f198ee56343ba864fe8b2a57d3eff7" || long.Kind != traces.KindServer {
		t.Errorf("128-bit trace: %+v", long)
	}
}

func keys(m map[string]*traces.Span) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestSharedSpanIDStable: a resent shared span gets the same id, so the
// store's deduplication by span id still works.
func TestSharedSpanIDStable(t *testing.T) {
	body := []byte(`[{"traceId":"463ac35c9f6413ad","id":"463ac35c9f6413ad","kind":"SERVER","shared":true,"name":"a"}]`)
	a, err := ZipkinJSON(body, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ZipkinJSON(body, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Spans[0].SpanID != b.Spans[0].SpanID {
		t.Fatalf("shared span got ids %s and %s", a.Spans[0].SpanID, b.Spans[0].SpanID)
	}
}

func TestZipkinJSONRefusesInvalidSpans(t *testing.T) {
	const valid = `{"traceId":"80f198ee56343ba864fe8b2a57d3eff7","id":"e457b5a2e4d86bd1","name":"ok","kind":"SERVER","localEndpoint":{"serviceName":"ratings"}}`
	for _, tc := range []struct {
		name, span, reason string
		inMessage          []string
	}{
		{"zero trace id", `{"traceId":"0000000000000000","id":"00000000000000aa","name":"zero-trace"}`, ReasonInvalidTraceID,
			[]string{`"zero-trace"`, "trace 00000000000000000000000000000000", "span 00000000000000aa", "zero trace id"}},
		{"zero span id", `{"traceId":"463ac35c9f6413ad","id":"0000000000000000","name":"zero-span"}`, ReasonInvalidSpanID,
			[]string{`"zero-span"`, "463ac35c9f6413ad", "0000000000000000", "zero span id"}},
		{"missing span id", `{"traceId":"463ac35c9f6413ad","name":"no-id"}`, ReasonInvalidSpanID,
			[]string{`"no-id"`, "463ac35c9f6413ad"}},
		{"non-hex trace id", `{"traceId":"xyz35c9f6413ad","id":"00000000000000aa","name":"bad-hex"}`, ReasonInvalidSpan,
			[]string{`"bad-hex"`, "xyz35c9f6413ad", "00000000000000aa"}},
		{"trace id too long", `{"traceId":"1463ac35c9f6413ad463ac35c9f6413ad","id":"00000000000000aa","name":"long"}`, ReasonInvalidSpan,
			[]string{`"long"`, "1463ac35c9f6413ad463ac35c9f6413ad"}},
		{"bad field type", `{"traceId":"463ac35c9f6413ad","id":"00000000000000aa","name":"typed","duration":"long"}`, ReasonInvalidSpan,
			[]string{`"typed"`}},
		{"null", `null`, ReasonInvalidSpan, []string{"null span"}},
		{"malformed annotation encoding", `{"traceId":"463ac35c9f6413ad","id":"00000000000000bb","name":"anno","annotations":[{"timestamp":1,"value":"a|{x|1"}]}`, ReasonInvalidSpan,
			[]string{`"anno"`, "0000000000000000463ac35c9f6413ad", "00000000000000bb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ZipkinJSON([]byte("["+valid+","+tc.span+"]"), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Spans) != 1 || b.Spans[0].Name != "ok" {
				t.Fatalf("valid span not kept: %+v", b.Spans)
			}
			if b.Refused[tc.reason] != 1 || b.RefusedSpans() != 1 {
				t.Fatalf("refused %v, want one %s", b.Refused, tc.reason)
			}
			for _, s := range tc.inMessage {
				if !strings.Contains(b.FirstRefused, s) {
					t.Errorf("message %q does not name %q", b.FirstRefused, s)
				}
			}
			if msg := b.RefusedMessage(); !strings.HasPrefix(msg, "1 span refused, the other 1 accepted; first: ") {
				t.Errorf("message %q", msg)
			}
		})
	}
}

func TestZipkinJSONUndecodable(t *testing.T) {
	for _, body := range []string{``, `{}`, `[{"traceId":`, `"spans"`} {
		if _, err := ZipkinJSON([]byte(body), Limits{}); !errors.Is(err, ErrUndecodable) {
			t.Errorf("%q: error %v, want ErrUndecodable", body, err)
		}
	}
}

// TestZipkinProtoMatchesJSON: the same spans as protobuf decode to what the
// JSON decodes to.
func TestZipkinProtoMatchesJSON(t *testing.T) {
	fixture := readFixture(t, "envoy-zipkin.json")
	fromJSON, err := ZipkinJSON(fixture, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	body := zipkinProtoFromJSON(t, fixture)
	fromProto, err := ZipkinProto(body, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if fromProto.RefusedSpans() != 0 {
		t.Fatalf("refused: %s", fromProto.FirstRefused)
	}
	want, got := bySpanID(t, fromJSON.Spans), bySpanID(t, fromProto.Spans)
	if len(got) != len(want) {
		t.Fatalf("proto gave %d spans, JSON %d", len(got), len(want))
	}
	for id, w := range want {
		g := got[id]
		if g == nil {
			t.Errorf("span %s missing from the protobuf decoding", id)
			continue
		}
		if g.TraceID != w.TraceID || g.ParentSpanID != w.ParentSpanID || g.Name != w.Name || g.Kind != w.Kind ||
			g.Service != w.Service || g.StartUnixNano != w.StartUnixNano || g.EndUnixNano != w.EndUnixNano ||
			g.StatusCode != w.StatusCode || len(g.Attrs) != len(w.Attrs) || len(g.Events) != len(w.Events) {
			t.Errorf("span %s:\nproto %+v\n json %+v", id, *g, *w)
		}
		for _, a := range w.Attrs {
			if ga, ok := g.Attr(a.Key); !ok || ga != a {
				t.Errorf("span %s attribute %s: proto %+v, JSON %+v", id, a.Key, ga, a)
			}
		}
	}
}

// zipkinProtoFromJSON encodes Zipkin JSON spans as a protobuf ListOfSpans
// with zipkin-go's serializer.
func zipkinProtoFromJSON(t testing.TB, body []byte) []byte {
	t.Helper()
	var models []*zipkinmodel.SpanModel
	if err := jsonUnmarshal(body, &models); err != nil {
		t.Fatal(err)
	}
	out, err := zipkin_proto3.SpanSerializer{}.Serialize(models)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestZipkinProtoIDs(t *testing.T) {
	id8 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	valid := &zipkin_proto3.Span{TraceId: append(id8(1), id8(2)...), Id: id8(3), Name: "ok", Kind: zipkin_proto3.Span_SERVER}
	for _, tc := range []struct {
		name      string
		span      *zipkin_proto3.Span
		reason    string // "" if the span is valid
		wantTrace string
	}{
		{"64-bit trace id", &zipkin_proto3.Span{TraceId: id8(0x463ac35c9f6413ad), Id: id8(4), Name: "short"}, "", "0000000000000000463ac35c9f6413ad"},
		{"128-bit trace id", &zipkin_proto3.Span{TraceId: append(id8(0x80f198ee56343ba8), id8(0x64fe8b2a57d3eff7)...), Id: id8(5), Name: "long"}, "", "80f198ee56343ba864fe8b2a57d3eff7"},
		{"zero trace id", &zipkin_proto3.Span{TraceId: make([]byte, 16), Id: id8(6), Name: "zero-trace"}, ReasonInvalidTraceID, ""},
		{"zero span id", &zipkin_proto3.Span{TraceId: id8(7), Id: id8(0), Name: "zero-span"}, ReasonInvalidSpanID, ""},
		{"4-byte trace id", &zipkin_proto3.Span{TraceId: []byte{1, 2, 3, 4}, Id: id8(8), Name: "odd-trace"}, ReasonInvalidSpan, ""},
		{"missing span id", &zipkin_proto3.Span{TraceId: id8(9), Name: "no-span"}, ReasonInvalidSpan, ""},
		{"7-byte parent id", &zipkin_proto3.Span{TraceId: id8(10), Id: id8(11), ParentId: make([]byte, 7), Name: "odd-parent"}, ReasonInvalidSpan, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := proto.Marshal(&zipkin_proto3.ListOfSpans{Spans: []*zipkin_proto3.Span{valid, tc.span}})
			if err != nil {
				t.Fatal(err)
			}
			b, err := ZipkinProto(body, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.reason == "" {
				if len(b.Spans) != 2 || b.RefusedSpans() != 0 {
					t.Fatalf("%d spans, refused %v (%s)", len(b.Spans), b.Refused, b.FirstRefused)
				}
				for _, s := range b.Spans {
					if s.Name == tc.span.Name && s.TraceID.String() != tc.wantTrace {
						t.Errorf("trace id %s, want %s", s.TraceID, tc.wantTrace)
					}
				}
				return
			}
			if len(b.Spans) != 1 || b.Spans[0].Name != "ok" {
				t.Fatalf("valid span not kept alone: %+v", b.Spans)
			}
			if b.Refused[tc.reason] != 1 {
				t.Fatalf("refused %v, want one %s", b.Refused, tc.reason)
			}
			if !strings.Contains(b.FirstRefused, `"`+tc.span.Name+`"`) {
				t.Errorf("message %q does not name span %q", b.FirstRefused, tc.span.Name)
			}
		})
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
