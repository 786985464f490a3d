package otlp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/meshlens/meshlens/internal/meshsim/sim"
	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

func simSpans(t *testing.T) []sim.Span {
	t.Helper()
	topo, err := topology.Generate(topology.Options{Seed: 1, Services: 10})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sim.New(sim.Options{Topology: topo, TraceSampling: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	spans := s.Step().Spans
	if len(spans) == 0 {
		t.Fatal("no spans")
	}
	return spans
}

// collector decodes OTLP/HTTP protobuf requests with the collector's
// pdata; answers gives the status of the first requests.
type collector struct {
	mu      sync.Mutex
	answers []int
	calls   int
	traces  []ptrace.Traces
	bad     string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if len(c.answers) > 0 {
		code := c.answers[0]
		c.answers = c.answers[1:]
		w.WriteHeader(code)
		return
	}
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		c.bad = r.URL.Path + " " + r.Header.Get("Content-Type")
	}
	body, _ := io.ReadAll(r.Body)
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		c.bad = err.Error()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	c.traces = append(c.traces, req.Traces())
	resp, _ := ptraceotlp.NewExportResponse().MarshalProto()
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

func TestSend(t *testing.T) {
	spans := simSpans(t)
	c := &collector{answers: []int{http.StatusServiceUnavailable}}
	srv := httptest.NewServer(c)
	defer srv.Close()
	if err := (&Sender{URL: srv.URL + "/v1/traces"}).Send(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	if c.bad != "" {
		t.Fatal(c.bad)
	}
	if c.calls != 2 || len(c.traces) != 1 {
		t.Fatalf("%d calls, %d decoded; want a retry after 503", c.calls, len(c.traces))
	}
	td := c.traces[0]
	if td.SpanCount() != len(spans) {
		t.Fatalf("%d spans decoded, sent %d", td.SpanCount(), len(spans))
	}
	byID := map[[8]byte]*sim.Span{}
	for i := range spans {
		byID[spans[i].ID] = &spans[i]
	}
	for i := range td.ResourceSpans().Len() {
		rs := td.ResourceSpans().At(i)
		svc, ok := rs.Resource().Attributes().Get("service.name")
		if !ok {
			t.Fatal("resource without service.name")
		}
		ss := rs.ScopeSpans().At(0).Spans()
		for j := range ss.Len() {
			sp := ss.At(j)
			want := byID[sp.SpanID()]
			if want == nil {
				t.Fatalf("span %s not sent", sp.SpanID())
			}
			if svc.Str() != want.LocalService || [16]byte(sp.TraceID()) != want.TraceID || [8]byte(sp.ParentSpanID()) != want.ParentID {
				t.Fatalf("span %s: service %s trace %s parent %s", sp.SpanID(), svc.Str(), sp.TraceID(), sp.ParentSpanID())
			}
			if int64(sp.StartTimestamp()) != want.Start*1000 || int64(sp.EndTimestamp()-sp.StartTimestamp()) != want.Duration*1000 {
				t.Fatalf("span %s: times %d-%d", sp.SpanID(), sp.StartTimestamp(), sp.EndTimestamp())
			}
			kind := map[string]ptrace.SpanKind{sim.SpanClient: ptrace.SpanKindClient, sim.SpanServer: ptrace.SpanKindServer}[want.Kind]
			if sp.Kind() != kind || sp.Name() != want.Name {
				t.Fatalf("span %s: kind %s name %s", sp.SpanID(), sp.Kind(), sp.Name())
			}
			if (sp.Status().Code() == ptrace.StatusCodeError) != want.Error {
				t.Fatalf("span %s: status %s, error %v", sp.SpanID(), sp.Status().Code(), want.Error)
			}
			for _, k := range []string{"istio.canonical_service", "istio.mesh_id", "istio.namespace", "istio.cluster_id",
				"http.method", "http.status_code", "http.url", "upstream_cluster", "response_flags", "node_id", "guid:x-request-id"} {
				if _, ok := sp.Attributes().Get(k); !ok {
					t.Fatalf("span %s without attribute %s", sp.SpanID(), k)
				}
			}
			if sp.Attributes().Len() != len(want.Tags) {
				t.Fatalf("span %s: %d attributes, %d tags", sp.SpanID(), sp.Attributes().Len(), len(want.Tags))
			}
		}
	}
}

func TestNoRetryOn400(t *testing.T) {
	c := &collector{answers: []int{http.StatusBadRequest}}
	srv := httptest.NewServer(c)
	defer srv.Close()
	err := (&Sender{URL: srv.URL + "/v1/traces"}).Send(context.Background(), simSpans(t))
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest || c.calls != 1 {
		t.Fatalf("err %v after %d calls; want one 400", err, c.calls)
	}
}
