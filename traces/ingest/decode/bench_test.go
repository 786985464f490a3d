package decode

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/meshlens/meshlens/traces"
)

// envoyRequest is a Zipkin JSON request of n spans like Envoy's (the
// fixture's spans with distinct ids).
func envoyRequest(b testing.TB, n int) []byte {
	b.Helper()
	var fixture []map[string]any
	if err := json.Unmarshal(readFixture(b, "envoy-zipkin.json"), &fixture); err != nil {
		b.Fatal(err)
	}
	spans := make([]map[string]any, 0, n)
	for i := range n {
		s := map[string]any{}
		for k, v := range fixture[i%len(fixture)] {
			s[k] = v
		}
		s["traceId"] = fmt.Sprintf("%016x%016x", i/4+1, 0x9f6413ad)
		s["id"] = fmt.Sprintf("%016x", i+1)
		spans = append(spans, s)
	}
	body, err := json.Marshal(spans)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkZipkinJSON decodes a 100-span Envoy request: ours (per-span
// decoding, translation, validation, conversion to traces.Span), the
// collector's translator alone on the whole list, and zipkin-go's model
// decoding alone.
func BenchmarkZipkinJSON(b *testing.B) {
	const n = 100
	body := envoyRequest(b, n)
	run := func(b *testing.B, f func() error) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "spans/s")
	}
	b.Run("decode.ZipkinJSON", func(b *testing.B) {
		run(b, func() error {
			bt, err := ZipkinJSON(body, Limits{MaxAttrValueBytes: 4096})
			if err == nil && len(bt.Spans) != n {
				err = fmt.Errorf("%d spans", len(bt.Spans))
			}
			return err
		})
	})
	b.Run("zipkinv2.JSONUnmarshaler", func(b *testing.B) {
		u := zipkinv2.NewJSONTracesUnmarshaler(false)
		run(b, func() error { _, err := u.UnmarshalTraces(body); return err })
	})
	b.Run("zipkinv2.JSONUnmarshaler+FromPdata", func(b *testing.B) {
		u := zipkinv2.NewJSONTracesUnmarshaler(false)
		run(b, func() error {
			td, err := u.UnmarshalTraces(body)
			traces.FromPdata(nil, td)
			return err
		})
	})
	b.Run("zipkin-go.model", func(b *testing.B) {
		run(b, func() error {
			var spans []*zipkinmodel.SpanModel
			return json.Unmarshal(body, &spans)
		})
	})
}

func BenchmarkZipkinProto(b *testing.B) {
	const n = 100
	body := zipkinProtoFromJSON(b, envoyRequest(b, n))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ZipkinProto(body, Limits{MaxAttrValueBytes: 4096}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "spans/s")
}

// otlpBenchRequest is the 100-span Envoy request as OTLP protobuf.
func otlpBenchRequest(b *testing.B, n int) []byte {
	bt, err := ZipkinJSON(envoyRequest(b, n), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	body, err := ptraceotlp.NewExportRequestFromTraces(traces.ToPdata(bt.Spans)).MarshalProto()
	if err != nil {
		b.Fatal(err)
	}
	return body
}

func benchOTLP(b *testing.B, dec func([]byte, Limits) (Batch, error)) {
	const n = 100
	body := otlpBenchRequest(b, n)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		bt, err := dec(body, Limits{MaxAttrValueBytes: 4096})
		if err != nil {
			b.Fatal(err)
		}
		if len(bt.Spans) != n {
			b.Fatalf("%d spans", len(bt.Spans))
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkOTLPProto decodes a 100-span request.
func BenchmarkOTLPProto(b *testing.B) { benchOTLP(b, OTLPProto) }

// BenchmarkOTLPProtoPdata decodes it through pdata (UnmarshalProto,
// Batch.add, traces.FromPdata), as OTLPProto did before its own decoder.
func BenchmarkOTLPProtoPdata(b *testing.B) { benchOTLP(b, otlpProtoPdata) }
