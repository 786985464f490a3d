package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	jsonStd "encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/ingest/decode"
)

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type request struct {
	method, ct, enc string
	body            []byte
	chunked         bool // no Content-Length
}

func serve(h http.Handler, r request) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodPost
	}
	var body io.Reader = bytes.NewReader(r.body)
	if r.chunked {
		body = io.MultiReader(body) // hides the length
	}
	req := httptest.NewRequest(r.method, "/", body)
	if r.chunked {
		req.ContentLength = -1
	}
	if r.ct != "" {
		req.Header.Set("Content-Type", r.ct)
	}
	if r.enc != "" {
		req.Header.Set("Content-Encoding", r.enc)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func envoyJSON(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/envoy-zipkin.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func envoyProto(t testing.TB) []byte {
	var models []*zipkinmodel.SpanModel
	if err := jsonUnmarshal(envoyJSON(t), &models); err != nil {
		t.Fatal(err)
	}
	b, err := zipkin_proto3.SpanSerializer{}.Serialize(models)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var errDiskFull = errors.New("write-ahead log: no space left on device")

// traceTooLarge is what the store answers when it kept every span but one,
// whose trace was at its limit.
var traceTooLarge = &traces.TraceTooLargeError{Refused: 1, Trace: traces.TraceID{15: 1}, Limit: 3}

// spansTooOld is what the store answers when it kept every span but one,
// which started before the retention.
var spansTooOld = &traces.SpansTooOldError{Refused: 1, Cutoff: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}

func TestZipkinHandler(t *testing.T) {
	js, pb := envoyJSON(t), envoyProto(t)
	bomb := gz(t, make([]byte, 4<<20))
	withInvalid := []byte(`[
		{"traceId":"80f198ee56343ba864fe8b2a57d3eff7","id":"e457b5a2e4d86bd1","name":"ok","kind":"SERVER"},
		{"traceId":"0000000000000000","id":"00000000000000aa","name":"zero-trace"},
		{"traceId":"463ac35c9f6413ad","id":"0000000000000000","name":"zero-span"}]`)
	for _, tc := range []struct {
		name     string
		req      request
		opts     Options
		appErr   error
		code     int
		appended int
		inBody   []string
	}{
		{"Envoy JSON", request{ct: "application/json", body: js}, Options{}, nil, 202, 4, nil},
		{"JSON with charset", request{ct: "application/json; charset=utf-8", body: js}, Options{}, nil, 202, 4, nil},
		{"no content type is JSON", request{body: js}, Options{}, nil, 202, 4, nil},
		{"JSON gzip", request{ct: "application/json", enc: "gzip", body: gz(t, js)}, Options{}, nil, 202, 4, nil},
		{"protobuf", request{ct: "application/x-protobuf", body: pb}, Options{}, nil, 202, 4, nil},
		{"protobuf gzip", request{ct: "application/x-protobuf", enc: "gzip", body: gz(t, pb)}, Options{}, nil, 202, 4, nil},
		{"empty list", request{body: []byte(`[]`)}, Options{}, nil, 202, 0, nil},
		{"invalid ids refused, valid kept", request{body: withInvalid}, Options{}, nil, 400, 1,
			[]string{"2 spans refused", "1 accepted", `"zero-trace"`, "00000000000000000000000000000000", "00000000000000aa"}},
		{"undecodable", request{body: []byte(`{"traceId":`)}, Options{}, nil, 400, 0, []string{"Zipkin JSON"}},
		{"bad gzip", request{enc: "gzip", body: js}, Options{}, nil, 400, 0, []string{"gzip"}},
		{"body over limit", request{body: js}, Options{MaxRequestBytes: 100}, nil, 413, 0, []string{"limit 100"}},
		{"chunked body over limit", request{body: js, chunked: true}, Options{MaxRequestBytes: 100}, nil, 413, 0, []string{"over 100 bytes"}},
		{"gzip over decoded limit", request{enc: "gzip", body: bomb}, Options{}, nil, 413, 0, nil},
		{"over decoded limit", request{body: js}, Options{Limits: decode.Limits{MaxDecodedBytes: 100}}, nil, 413, 0, []string{"limit 100"}},
		{"too many spans", request{body: js}, Options{Limits: decode.Limits{MaxSpansPerRequest: 3}}, nil, 413, 0, []string{"4 spans, limit 3"}},
		{"unsupported content type", request{ct: "application/thrift", body: js}, Options{}, nil, 415, 0, []string{"application/thrift"}},
		{"unsupported encoding", request{enc: "br", body: js}, Options{}, nil, 415, 0, []string{`"br"`}},
		{"overloaded", request{body: js}, Options{}, fmt.Errorf("head full: %w", traces.ErrOverloaded), 429, 0, nil},
		{"storage failure", request{body: js}, Options{}, errDiskFull, 503, 0, []string{"no space left"}},
		{"a trace at its span limit", request{body: js}, Options{}, traceTooLarge, 400, 4, []string{"1 span refused", "the other 3 accepted", "traces.max_spans_per_trace"}},
		{"a span older than the retention", request{body: js}, Options{}, spansTooOld, 400, 4, []string{"1 span refused", "the other 3 accepted", "older than traces.retention"}},
		{"both refusals", request{body: js}, Options{}, errors.Join(spansTooOld, traceTooLarge), 400, 4, []string{"2 spans refused", "the other 2 accepted"}},
		{"a refusal and a storage failure", request{body: js}, Options{}, errors.Join(spansTooOld, errDiskFull), 503, 0, []string{"no space left"}},
		{"GET", request{method: http.MethodGet}, Options{}, nil, 405, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Limits.MaxDecodedBytes == 0 {
				tc.opts.Limits.MaxDecodedBytes = 1 << 20
			}
			rec := &recorder{err: tc.appErr}
			w := serve(NewZipkinHandler(rec, tc.opts), tc.req)
			if w.Code != tc.code {
				t.Fatalf("status %d (%s), want %d", w.Code, w.Body, tc.code)
			}
			if n := len(rec.get()); n != tc.appended {
				t.Fatalf("appended %d spans, want %d", n, tc.appended)
			}
			for _, s := range tc.inBody {
				if !strings.Contains(w.Body.String(), s) {
					t.Errorf("body %q does not say %q", w.Body, s)
				}
			}
			if tc.code == 429 && w.Header().Get("Retry-After") != "1" {
				t.Errorf("Retry-After %q, want 1", w.Header().Get("Retry-After"))
			}
		})
	}
}

// otlpRequest has a valid root and child and, with invalid, a span with a
// zero trace id and one with a zero span id.
func otlpRequest(valid, invalid bool) ptraceotlp.ExportRequest {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	add := func(name string, tid [16]byte, sid [8]byte) {
		s := spans.AppendEmpty()
		s.SetName(name)
		s.SetTraceID(tid)
		s.SetSpanID(sid)
	}
	if valid {
		add("root", [16]byte{1}, [8]byte{1})
		add("child", [16]byte{1}, [8]byte{2})
	}
	if invalid {
		add("no-trace", [16]byte{}, [8]byte{3})
		add("no-span", [16]byte{1}, [8]byte{})
	}
	return ptraceotlp.NewExportRequestFromTraces(td)
}

func TestOTLPHandler(t *testing.T) {
	type encoding struct {
		ct      string
		marshal func(ptraceotlp.ExportRequest) []byte
		resp    func([]byte) (ptraceotlp.ExportResponse, error)
		status  func([]byte, *spb.Status) error
		garbage []byte
	}
	encodings := []encoding{
		{ctProtobuf, func(r ptraceotlp.ExportRequest) []byte { b, _ := r.MarshalProto(); return b },
			func(b []byte) (ptraceotlp.ExportResponse, error) {
				r := ptraceotlp.NewExportResponse()
				return r, r.UnmarshalProto(b)
			},
			func(b []byte, st *spb.Status) error { return proto.Unmarshal(b, st) }, []byte{0x0a, 0xff}},
		{ctJSON, func(r ptraceotlp.ExportRequest) []byte { b, _ := r.MarshalJSON(); return b },
			func(b []byte) (ptraceotlp.ExportResponse, error) {
				r := ptraceotlp.NewExportResponse()
				return r, r.UnmarshalJSON(b)
			},
			func(b []byte, st *spb.Status) error { return protojson.Unmarshal(b, st) }, []byte(`{"resourceSpans":`)},
	}
	for _, e := range encodings {
		partial, all, none := e.marshal(otlpRequest(true, true)), e.marshal(otlpRequest(true, false)), e.marshal(otlpRequest(false, true))
		for _, tc := range []struct {
			name       string
			req        request
			opts       Options
			appErr     error
			code       int
			appended   int
			rejected   int64
			statusCode codes.Code // of the google.rpc.Status body; OK when the answer is a response
			inMessage  string
		}{
			{"all valid", request{body: all}, Options{}, nil, 200, 2, 0, codes.OK, ""},
			{"all valid gzip", request{enc: "gzip", body: gz(t, all)}, Options{}, nil, 200, 2, 0, codes.OK, ""},
			{"partial success", request{body: partial}, Options{}, nil, 200, 2, 2, codes.OK,
				`2 spans refused, the other 2 accepted; first: span "no-trace" (trace 00000000000000000000000000000000, span 0300000000000000): zero trace id`},
			{"no valid span", request{body: none}, Options{}, nil, 400, 0, 0, codes.InvalidArgument, `span "no-trace"`},
			{"undecodable", request{body: e.garbage}, Options{}, nil, 400, 0, 0, codes.InvalidArgument, "OTLP"},
			{"body over limit", request{body: all}, Options{MaxRequestBytes: 10}, nil, 413, 0, 0, codes.InvalidArgument, "limit 10"},
			{"too many spans", request{body: all}, Options{Limits: decode.Limits{MaxSpansPerRequest: 1}}, nil, 413, 0, 0, codes.InvalidArgument, "2 spans, limit 1"},
			{"unsupported encoding", request{enc: "zstd", body: all}, Options{}, nil, 415, 0, 0, codes.InvalidArgument, `"zstd"`},
			{"overloaded", request{body: all}, Options{RetryAfter: 2500e6}, traces.ErrOverloaded, 429, 0, 0, codes.Unavailable, "overloaded"},
			{"storage failure", request{body: all}, Options{}, errDiskFull, 503, 0, 0, codes.Unavailable, "no space left"},
			{"a trace at its span limit", request{body: all}, Options{}, traceTooLarge, 200, 2, 1, codes.OK, "1 span refused, the other 1 accepted; first: " + traceTooLarge.Error()},
		} {
			t.Run(e.ct+"/"+tc.name, func(t *testing.T) {
				rec := &recorder{err: tc.appErr}
				tc.req.ct = e.ct
				w := serve(NewOTLPHandler(rec, tc.opts), tc.req)
				if w.Code != tc.code {
					t.Fatalf("status %d (%q), want %d", w.Code, w.Body, tc.code)
				}
				if ct := w.Header().Get("Content-Type"); ct != e.ct {
					t.Errorf("answer's Content-Type %q, want %q", ct, e.ct)
				}
				if n := len(rec.get()); n != tc.appended {
					t.Fatalf("appended %d spans, want %d", n, tc.appended)
				}
				if tc.code == 429 && w.Header().Get("Retry-After") != "3" {
					t.Errorf("Retry-After %q, want 3", w.Header().Get("Retry-After"))
				}
				if tc.statusCode == codes.OK {
					resp, err := e.resp(w.Body.Bytes())
					if err != nil {
						t.Fatalf("response: %v", err)
					}
					ps := resp.PartialSuccess()
					if ps.RejectedSpans() != tc.rejected || ps.ErrorMessage() != tc.inMessage {
						t.Errorf("partial success %d %q, want %d %q", ps.RejectedSpans(), ps.ErrorMessage(), tc.rejected, tc.inMessage)
					}
					return
				}
				var st spb.Status
				if err := e.status(w.Body.Bytes(), &st); err != nil {
					t.Fatalf("status body %q: %v", w.Body, err)
				}
				if codes.Code(st.Code) != tc.statusCode || !strings.Contains(st.Message, tc.inMessage) {
					t.Errorf("status %s %q, want %s containing %q", codes.Code(st.Code), st.Message, tc.statusCode, tc.inMessage)
				}
			})
		}
	}
	t.Run("unsupported content type", func(t *testing.T) {
		w := serve(NewOTLPHandler(&recorder{}, Options{}), request{ct: "text/plain", body: []byte("x")})
		if w.Code != 415 || !strings.Contains(w.Body.String(), "application/x-protobuf") {
			t.Fatalf("status %d (%q), want 415 naming the supported types", w.Code, w.Body)
		}
	})
}

func TestMetrics(t *testing.T) {
	set := metrics.NewSet()
	rec := &recorder{}
	opts := Options{Metrics: set, Limits: decode.Limits{MaxAttrValueBytes: 8}}
	zh, oh := NewZipkinHandler(rec, opts), NewOTLPHandler(rec, opts)
	serve(zh, request{body: envoyJSON(t)})
	b, _ := otlpRequest(true, true).MarshalProto()
	serve(oh, request{ct: ctProtobuf, body: b})
	serve(oh, request{ct: "text/plain"})
	serve(zh, request{body: []byte("[")})

	var out bytes.Buffer
	set.WritePrometheus(&out)
	for _, want := range []string{
		`meshlens_traces_received_spans_total{protocol="zipkin"} 4`,
		`meshlens_traces_received_spans_total{protocol="otlp_http"} 2`,
		`meshlens_traces_received_spans_total{protocol="otlp_grpc"} 0`,
		`meshlens_traces_refused_spans_total{reason="invalid_trace_id"} 1`,
		`meshlens_traces_refused_spans_total{reason="invalid_span_id"} 1`,
		`meshlens_traces_refused_spans_total{reason="invalid_span"} 0`,
		`meshlens_traces_refused_requests_total{reason="unsupported_media_type"} 1`,
		`meshlens_traces_refused_requests_total{reason="undecodable_request"} 1`,
		`meshlens_traces_refused_requests_total{reason="overloaded"} 0`,
	} {
		if !strings.Contains(out.String(), want+"\n") {
			t.Errorf("no %s in\n%s", want, out.String())
		}
	}
	if !strings.Contains(out.String(), "meshlens_traces_truncated_attributes_total ") || strings.Contains(out.String(), "meshlens_traces_truncated_attributes_total 0\n") {
		t.Errorf("no truncations counted (Envoy's long tags over 8 bytes):\n%s", out.String())
	}
}

func jsonUnmarshal(b []byte, v any) error { return jsonStd.Unmarshal(b, v) }

func TestOTLPGRPCStatus(t *testing.T) {
	for _, tc := range []struct {
		name      string
		req       ptraceotlp.ExportRequest
		opts      Options
		appErr    error
		code      codes.Code
		appended  int
		rejected  int64
		inMessage string
		retry     bool // RetryInfo detail expected
	}{
		{"all valid", otlpRequest(true, false), Options{}, nil, codes.OK, 2, 0, "", false},
		{"partial success", otlpRequest(true, true), Options{}, nil, codes.OK, 2, 2, `first: span "no-trace" (trace 00000000000000000000000000000000, span 0300000000000000): zero trace id`, false},
		{"no valid span", otlpRequest(false, true), Options{}, nil, codes.InvalidArgument, 0, 0, `span "no-trace"`, false},
		{"too many spans", otlpRequest(true, true), Options{Limits: decode.Limits{MaxSpansPerRequest: 3}}, nil, codes.InvalidArgument, 0, 0, "4 spans, limit 3", false},
		{"over message size", otlpRequest(true, true), Options{Limits: decode.Limits{MaxDecodedBytes: 16}}, nil, codes.ResourceExhausted, 0, 0, "", false},
		{"overloaded", otlpRequest(true, false), Options{}, traces.ErrOverloaded, codes.Unavailable, 0, 0, "overloaded", true},
		{"storage failure", otlpRequest(true, false), Options{}, errDiskFull, codes.Unavailable, 0, 0, "no space left", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{err: tc.appErr}
			addr := serveGRPC(t, rec, tc.opts)
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			resp, err := ptraceotlp.NewGRPCClient(cc).Export(context.Background(), tc.req)
			st := status.Convert(err)
			if st.Code() != tc.code {
				t.Fatalf("code %s (%s), want %s", st.Code(), st.Message(), tc.code)
			}
			if err != nil && !strings.Contains(st.Message(), tc.inMessage) {
				t.Errorf("message %q does not say %q", st.Message(), tc.inMessage)
			}
			if n := len(rec.get()); n != tc.appended {
				t.Fatalf("appended %d spans, want %d", n, tc.appended)
			}
			hasRetry := false
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() == DefaultRetryAfter {
					hasRetry = true
				}
			}
			if hasRetry != tc.retry {
				t.Errorf("RetryInfo of %s: %v, want %v", DefaultRetryAfter, hasRetry, tc.retry)
			}
			if err == nil {
				ps := resp.PartialSuccess()
				if ps.RejectedSpans() != tc.rejected || !strings.Contains(ps.ErrorMessage(), tc.inMessage) {
					t.Errorf("partial success %d %q, want %d with %q", ps.RejectedSpans(), ps.ErrorMessage(), tc.rejected, tc.inMessage)
				}
			}
		})
	}
}
