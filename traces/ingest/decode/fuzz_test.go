package decode

import (
	"os"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// fuzzLimits are small enough that the limits themselves are exercised.
var fuzzLimits = Limits{MaxDecodedBytes: 1 << 20, MaxSpansPerRequest: 100, MaxAttrValueBytes: 16}

// checkBatch holds for every decoded request: every kept span has non-zero
// ids, nothing is kept and refused twice, and limits hold.
func checkBatch(t *testing.T, b Batch, err error) {
	t.Helper()
	if err != nil {
		if len(b.Spans) > 0 {
			t.Fatalf("error %v with %d spans kept", err, len(b.Spans))
		}
		return
	}
	if len(b.Spans)+b.RefusedSpans() > fuzzLimits.MaxSpansPerRequest {
		t.Fatalf("%d spans kept and %d refused, limit %d", len(b.Spans), b.RefusedSpans(), fuzzLimits.MaxSpansPerRequest)
	}
	for _, s := range b.Spans {
		if s.TraceID.IsZero() || s.SpanID.IsZero() {
			t.Fatalf("span %q kept with trace id %s span id %s", s.Name, s.TraceID, s.SpanID)
		}
		for _, a := range s.Attrs {
			if a.Type == 0 && len(a.Str) > fuzzLimits.MaxAttrValueBytes {
				t.Fatalf("attribute %q of %d bytes kept, limit %d", a.Key, len(a.Str), fuzzLimits.MaxAttrValueBytes)
			}
		}
	}
	if b.RefusedSpans() > 0 && b.FirstRefused == "" {
		t.Fatal("spans refused without a message")
	}
}

func FuzzOTLPProto(f *testing.F) {
	pb, err := ptraceotlp.NewExportRequestFromTraces(testTraces()).MarshalProto()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pb)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x12, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := OTLPProto(data, fuzzLimits)
		checkBatch(t, b, err)
	})
}

func FuzzOTLPJSON(f *testing.F) {
	js, err := ptraceotlp.NewExportRequestFromTraces(testTraces()).MarshalJSON()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(js)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"","spanId":"0102030405060708"}]}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := OTLPJSON(data, fuzzLimits)
		checkBatch(t, b, err)
	})
}

func FuzzZipkinJSON(f *testing.F) {
	fixture, err := os.ReadFile("../testdata/envoy-zipkin.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(fixture)
	f.Add([]byte(`[]`))
	f.Add([]byte(`[null,{"traceId":"0","id":"1"},{"traceId":"1","id":"1","annotations":[{"timestamp":1,"value":"a|{}|x"}]}]`))
	f.Add([]byte(`[{"traceId":"1","id":"1","tags":{"otlp.link.0":"zz|yy|||0"}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ZipkinJSON(data, fuzzLimits)
		checkBatch(t, b, err)
	})
}

func FuzzZipkinProto(f *testing.F) {
	fixture, err := os.ReadFile("../testdata/envoy-zipkin.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(zipkinProtoFromJSON(f, fixture))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ZipkinProto(data, fuzzLimits)
		checkBatch(t, b, err)
	})
}
