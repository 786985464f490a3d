package ingest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/meshlens/meshlens/traces"
)

// TestPooledBodyNotAliased: the body buffers are reused from one request to
// the next, and the spans stored from the first request do not change when
// the second overwrites them, whatever the encoding.
func TestPooledBodyNotAliased(t *testing.T) {
	newRequest := func(fill byte) ptraceotlp.ExportRequest {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", strings.Repeat(string(fill), 20))
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName(strings.Repeat(string(fill), 10))
		for i := range 20 {
			s := ss.Spans().AppendEmpty()
			s.SetName(strings.Repeat(string(fill), 30))
			s.SetTraceID([16]byte{fill, 15: byte(i)})
			s.SetSpanID([8]byte{fill, 7: byte(i + 1)})
			s.Attributes().PutStr(strings.Repeat(string(fill), 8), strings.Repeat(string(fill), 100))
			s.Attributes().PutEmptyBytes("bytes").FromRaw(bytes.Repeat([]byte{fill}, 9))
		}
		return ptraceotlp.NewExportRequestFromTraces(td)
	}
	for _, tc := range []struct {
		ct, enc string
		chunked bool
	}{
		{ctProtobuf, "", false}, {ctProtobuf, "gzip", false}, {ctProtobuf, "", true}, {ctJSON, "", false}, {ctJSON, "gzip", true},
	} {
		t.Run(fmt.Sprintf("%s %s chunked=%v", tc.ct, tc.enc, tc.chunked), func(t *testing.T) {
			rec := &recorder{}
			h := NewOTLPHandler(rec, Options{})
			for _, fill := range []byte{'a', 'b', 'c'} {
				req := newRequest(fill)
				var body []byte
				if tc.ct == ctJSON {
					body, _ = req.MarshalJSON()
				} else {
					body, _ = req.MarshalProto()
				}
				if tc.enc == "gzip" {
					body = gz(t, body)
				}
				if w := serve(h, request{ct: tc.ct, enc: tc.enc, body: body, chunked: tc.chunked}); w.Code != 200 {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			spans := rec.get()
			if len(spans) != 60 {
				t.Fatalf("%d spans stored, want 60", len(spans))
			}
			for i, s := range spans {
				fill := string(rune("abc"[i/20]))
				if s.Name != strings.Repeat(fill, 30) || s.Service != strings.Repeat(fill, 20) || s.ScopeName != strings.Repeat(fill, 10) ||
					s.Attrs[0].Key != strings.Repeat(fill, 8) || s.Attrs[0].Str != strings.Repeat(fill, 100) {
					t.Fatalf("span %d of request %q changed: %+v", i, fill, s)
				}
			}
		})
	}
}

// BenchmarkOTLPHandler serves 100-span OTLP protobuf requests, plain and
// gzip-encoded: reading the body, decoding, answering.
func BenchmarkOTLPHandler(b *testing.B) {
	td := ptrace.NewTraces()
	ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	for i := range 100 {
		s := ss.Spans().AppendEmpty()
		s.SetName("GET /api/v1/items")
		s.SetTraceID([16]byte{1, 15: byte(i)})
		s.SetSpanID([8]byte{1, 7: byte(i + 1)})
		for k := range 10 {
			s.Attributes().PutStr(fmt.Sprintf("attribute.%d", k), strings.Repeat("v", 40))
		}
	}
	body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		b.Fatal(err)
	}
	for _, enc := range []string{"", "gzip"} {
		b.Run("encoding="+enc, func(b *testing.B) {
			sent := body
			if enc == "gzip" {
				sent = gz(b, body)
			}
			h := NewOTLPHandler(nopAppender{}, Options{})
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if w := serve(h, request{ct: ctProtobuf, enc: enc, body: sent}); w.Code != 200 {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}

type nopAppender struct{}

func (nopAppender) Append(context.Context, []traces.Span) error { return nil }
