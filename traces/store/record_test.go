package store

import (
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/tracestest"
)

// Every field of a span comes back from a WAL record, and spans of one
// resource share it again.
func TestRecordRoundTrip(t *testing.T) {
	spans := tracestest.Trace(1, 6, tracestest.T0)
	spans[0].TraceState = "rojo=00f067aa0ba902b7"
	spans[0].ScopeVersion = "1.2"
	spans[0].Attrs = append(spans[0].Attrs, traces.Float("ratio", 0.25), traces.Attr{Key: "b", Type: traces.TypeBytes, Str: "AQI="}, traces.Attr{Key: "j", Type: traces.TypeJSON, Str: `[1,2]`}, traces.Int("neg", -7))
	var e encoder
	rec := e.spans(spans)
	setSeq(rec, 42)
	got, err := decodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if got.typ != recSpans || got.seq != 42 {
		t.Fatalf("type %#x seq %d, want %#x 42", got.typ, got.seq, recSpans)
	}
	if g, w := fmtSpans(got.spans), fmtSpans(spans); g != w {
		t.Fatalf("decoded spans differ:\n got %s\nwant %s", g, w)
	}
	if &got.spans[1].Resource[0] != &got.spans[3].Resource[0] {
		t.Fatal("spans of one resource do not share it after decoding")
	}

	ids := []traces.TraceID{tracestest.ID(1), tracestest.ID(2)}
	cut, err := decodeRecord(cutRecord(7, ids))
	if err != nil {
		t.Fatal(err)
	}
	if cut.typ != recCut || cut.seq != 7 || len(cut.traces) != 2 || cut.traces[1] != ids[1] {
		t.Fatalf("cut record: %+v", cut)
	}
}

func fmtSpans(spans []traces.Span) string {
	var b []byte
	for _, s := range spans {
		b = append(b, []byte(fmtSpan(s))...)
	}
	return string(b)
}

func fmtSpan(s traces.Span) string {
	return time.Unix(0, int64(s.StartUnixNano)).String() + " " + s.TraceID.String() + " " + s.SpanID.String() + " " +
		s.ParentSpanID.String() + " " + s.Name + " " + s.Kind.String() + " " + s.Service + " " + s.TraceState + " " +
		s.ScopeName + " " + s.ScopeVersion + " " + s.StatusMessage + fmtAny(s.Attrs) + fmtAny(s.Resource) + fmtAny(s.Events) + fmtAny(s.Links) + "\n"
}

// FuzzWALRecord feeds arbitrary bytes to the WAL record decoder: it must
// not panic nor allocate beyond the record, and what it accepts must
// encode back to a record that decodes the same.
func FuzzWALRecord(f *testing.F) {
	var e encoder
	rec := e.spans(tracestest.Trace(1, 4, tracestest.T0))
	f.Add(append([]byte(nil), rec...))
	f.Add(cutRecord(3, []traces.TraceID{tracestest.ID(1)}))
	f.Add([]byte{recSpans, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil || r.typ != recSpans {
			return
		}
		var e encoder
		again, err := decodeRecord(e.spans(r.spans))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if g, w := fmtSpans(again.spans), fmtSpans(r.spans); g != w {
			t.Fatalf("re-encoded record differs:\n got %s\nwant %s", g, w)
		}
	})
}

// BenchmarkRecordEncoding compares the WAL's span encoding with OTLP's
// protobuf, per span, for a batch of 100 spans.
func BenchmarkRecordEncoding(b *testing.B) {
	spans := benchSpans(100)
	b.Run("wal/encode", func(b *testing.B) {
		var e encoder
		b.ReportAllocs()
		for b.Loop() {
			e.spans(spans)
		}
		b.ReportMetric(float64(len(e.spans(spans)))/float64(len(spans)), "bytes/span")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
	})
	b.Run("wal/decode", func(b *testing.B) {
		var e encoder
		rec := e.spans(spans)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeRecord(rec); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
	})
	var m ptrace.ProtoMarshaler
	b.Run("otlp/encode", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = m.MarshalTraces(traces.ToPdata(spans))
		}
		b.ReportMetric(float64(len(buf))/float64(len(spans)), "bytes/span")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
	})
	b.Run("otlp/decode", func(b *testing.B) {
		buf, _ := m.MarshalTraces(traces.ToPdata(spans))
		var u ptrace.ProtoUnmarshaler
		b.ReportAllocs()
		for b.Loop() {
			td, err := u.UnmarshalTraces(buf)
			if err != nil {
				b.Fatal(err)
			}
			traces.FromPdata(nil, td)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
	})
}
