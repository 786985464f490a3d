package forward

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshlens/meshlens/internal/peers"
)

// TestForwardToJaeger forwards spans to a real Jaeger, over both
// protocols, and reads them back through Jaeger's query API: what a user
// running meshlens in front of Jaeger sees.
func TestForwardToJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Jaeger")
	}
	j := peers.StartJaeger(t)
	cases := []struct {
		protocol, endpoint string
	}{
		{ProtocolHTTP, j.OTLPHTTP},
		{ProtocolGRPC, j.OTLPGRPC},
	}
	for i, tc := range cases {
		t.Run(tc.protocol, func(t *testing.T) {
			set := metrics.NewSet()
			f, stop := start(t, Options{Endpoint: tc.endpoint, Protocol: tc.protocol, Metrics: set})
			spans := testSpans(4)
			for k := range spans {
				spans[k].TraceID[1] = byte(0x10 + i) // a trace of its own per protocol
			}
			f.Append(t.Context(), spans)
			stop() // flushes

			if v := metric(set, sentSpans); v != 4 {
				t.Fatalf("%v spans sent, want 4", v)
			}
			for _, s := range spans {
				var got struct {
					Data []struct {
						Spans []struct {
							SpanID        string `json:"spanID"`
							OperationName string `json:"operationName"`
							ProcessID     string `json:"processID"`
							Tags          []struct {
								Key   string `json:"key"`
								Value any    `json:"value"`
							} `json:"tags"`
						} `json:"spans"`
						Processes map[string]struct {
							ServiceName string `json:"serviceName"`
						} `json:"processes"`
					} `json:"data"`
				}
				waitFor(t, "the trace in jaeger", func() bool {
					resp, err := http.Get(j.Query + "/api/traces/" + s.TraceID.String())
					if err != nil {
						return false
					}
					defer resp.Body.Close()
					return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&got) == nil && len(got.Data) == 1
				})
				found := false
				for _, js := range got.Data[0].Spans {
					if js.SpanID != s.SpanID.String() {
						continue
					}
					found = true
					if js.OperationName != s.Name || got.Data[0].Processes[js.ProcessID].ServiceName != s.Service {
						t.Errorf("span %s: %q of %q in jaeger, want %q of %q", s.SpanID, js.OperationName,
							got.Data[0].Processes[js.ProcessID].ServiceName, s.Name, s.Service)
					}
					tags := map[string]any{}
					for _, tag := range js.Tags {
						tags[tag.Key] = tag.Value
					}
					if tags["http.method"] != "GET" || tags["http.status_code"] != float64(503) {
						t.Errorf("span %s: tags %v, want http.method GET and http.status_code 503", s.SpanID, tags)
					}
				}
				if !found {
					t.Errorf("span %s of trace %s not in jaeger", s.SpanID, s.TraceID)
				}
			}
		})
	}
}
