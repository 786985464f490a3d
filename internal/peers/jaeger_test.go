package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// oneSpan is a trace of one server span of service svc.
func oneSpan(traceID [16]byte, svc, name string) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", svc)
	s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s.SetTraceID(traceID)
	s.SetSpanID([8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	s.SetName(name)
	s.SetKind(ptrace.SpanKindServer)
	now := time.Now()
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Millisecond)))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
	s.Attributes().PutStr("http.method", "GET")
	return td
}

// TestJaeger runs the pinned Jaeger and checks that a span sent to each of
// its receivers can be read back through its query API, as the end-to-end
// tests that compare meshlens with Jaeger rely on.
func TestJaeger(t *testing.T) {
	j := StartJaeger(t)
	cases := []struct {
		name string
		send func(t *testing.T, td ptrace.Traces)
	}{
		{"otlp http", func(t *testing.T, td ptrace.Traces) {
			body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
			if err != nil {
				t.Fatal(err)
			}
			post(t, j.OTLPHTTP, "application/x-protobuf", body)
		}},
		{"otlp grpc", func(t *testing.T, td ptrace.Traces) {
			conn, err := grpc.NewClient(j.OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := ptraceotlp.NewGRPCClient(conn).Export(ctx, ptraceotlp.NewExportRequestFromTraces(td)); err != nil {
				t.Fatalf("export: %v", err)
			}
		}},
		{"zipkin", func(t *testing.T, td ptrace.Traces) {
			s := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
			body := fmt.Sprintf(`[{"traceId":%q,"id":%q,"name":%q,"kind":"SERVER","timestamp":%d,"duration":1000,`+
				`"localEndpoint":{"serviceName":%q},"tags":{"http.method":"GET"}}]`,
				s.TraceID(), s.SpanID(), s.Name(), s.StartTimestamp().AsTime().UnixMicro(),
				serviceName(td))
			post(t, j.Zipkin, "application/json", []byte(body))
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := [16]byte{0xfe, 0xed, 15: byte(i + 1)}
			svc, name := "svc-"+fmt.Sprint(i), "GET /"+tc.name
			tc.send(t, oneSpan(id, svc, name))

			traceID := pcommon.TraceID(id).String()
			var got struct {
				Data []struct {
					TraceID string `json:"traceID"`
					Spans   []struct {
						OperationName string `json:"operationName"`
						ProcessID     string `json:"processID"`
					} `json:"spans"`
					Processes map[string]struct {
						ServiceName string `json:"serviceName"`
					} `json:"processes"`
				} `json:"data"`
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				resp, err := http.Get(j.Query + "/api/traces/" + traceID)
				if err != nil {
					t.Fatal(err)
				}
				err = json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && err == nil && len(got.Data) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("GET /api/traces/%s: %s, no trace after 10s", traceID, resp.Status)
				}
				time.Sleep(50 * time.Millisecond)
			}
			tr := got.Data[0]
			if tr.TraceID != traceID || len(tr.Spans) != 1 || tr.Spans[0].OperationName != name ||
				tr.Processes[tr.Spans[0].ProcessID].ServiceName != svc {
				t.Errorf("trace %s: %+v, want one span %q of service %q", traceID, tr, name, svc)
			}
		})
	}
}

func serviceName(td ptrace.Traces) string {
	v, _ := td.ResourceSpans().At(0).Resource().Attributes().Get("service.name")
	return v.Str()
}

func post(t *testing.T, url, contentType string, body []byte) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}
