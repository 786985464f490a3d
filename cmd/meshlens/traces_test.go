package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// spanCounter sits between meshsim and meshlens: it counts the spans of
// every trace in the Zipkin JSON meshsim sends and passes the body on.
type spanCounter struct {
	next string

	mu    sync.Mutex
	spans map[string]int // trace id as sent -> spans
}

func (c *spanCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var spans []struct {
		TraceID string `json:"traceId"`
	}
	if err := json.Unmarshal(body, &spans); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, err := http.Post(c.next, r.Header.Get("Content-Type"), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusAccepted {
		c.mu.Lock()
		for _, s := range spans {
			c.spans[strings.ToLower(s.TraceID)]++
		}
		c.mu.Unlock()
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(msg)
}

// TestExemplarTracesResolve sends a simulated mesh's metrics and Zipkin
// spans into meshlens, as Istio's sidecars and Prometheus would: every
// trace id an exemplar of istio_request_duration_milliseconds_bucket carries
// must open its trace through the Tempo API (JSON and protobuf) and the
// Jaeger API, with every span the simulator sent for it.
func TestExemplarTracesResolve(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills a mesh; not in -short")
	}
	meshsim := buildMeshsim(t)
	s := startServer(t, "", "")
	counter := &spanCounter{next: s.URL + "/api/v2/spans", spans: map[string]int{}}
	proxy := httptest.NewServer(counter)
	defer proxy.Close()

	end := time.Now().Truncate(time.Minute)
	cmd := exec.Command(meshsim, "backfill", "--url", s.URL+"/api/v1/write", "--traces-url", proxy.URL+"/api/v2/spans",
		"--services", "3", "--clusters", "1", "--hours", "0.25", "--interval", "30s", "--trace-sampling", "0.02",
		"--end", end.Format(time.RFC3339), "--progress", "0")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshsim backfill: %v", err)
	}
	if len(counter.spans) == 0 {
		t.Fatal("meshsim sent no spans")
	}

	var ex struct {
		Data []struct {
			Exemplars []struct {
				Labels map[string]string `json:"labels"`
			} `json:"exemplars"`
		} `json:"data"`
	}
	q := url.Values{"query": {"istio_request_duration_milliseconds_bucket"},
		"start": {fmt.Sprint(end.Add(-time.Hour).Unix())}, "end": {fmt.Sprint(end.Add(time.Minute).Unix())}}
	apiData(t, s, "/api/v1/query_exemplars?"+q.Encode(), &ex.Data)
	ids := map[string]bool{}
	for _, series := range ex.Data {
		for _, e := range series.Exemplars {
			if id := e.Labels["trace_id"]; id != "" {
				ids[id] = true
			}
		}
	}
	if len(ids) == 0 {
		t.Fatal("no exemplar carries a trace_id")
	}
	t.Logf("%d exemplar trace ids, %d traces sent", len(ids), len(counter.spans))
	for id := range ids {
		want, ok := counter.spans[id]
		if !ok {
			t.Errorf("exemplar trace %s was never sent by meshsim", id)
			continue
		}
		if got := tempoSpanCount(t, s, "/api/traces/"+id, ""); got != want {
			t.Errorf("trace %s: Tempo API JSON has %d spans, meshsim sent %d", id, got, want)
		}
		if got := tempoSpanCount(t, s, "/api/traces/"+id, "application/protobuf"); got != want {
			t.Errorf("trace %s: Tempo API protobuf has %d spans, meshsim sent %d", id, got, want)
		}
		var jt []struct {
			Spans []json.RawMessage `json:"spans"`
		}
		jaegerData(t, s, "/jaeger/api/traces/"+id, &jt)
		if len(jt) != 1 || len(jt[0].Spans) != want {
			t.Errorf("trace %s: Jaeger API has %d traces (%v), meshsim sent %d spans", id, len(jt), jt, want)
		}
	}
}

// tempoSpanCount fetches a trace from the Tempo API and counts its spans.
func tempoSpanCount(t *testing.T, s *testServer, path, accept string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		return -1
	}
	var td ptrace.Traces
	if accept == "application/protobuf" {
		td, err = (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(body)
	} else if strings.HasPrefix(path, "/api/v2/") {
		// A TraceByIDResponse: {"trace": <OTLP JSON>, "status": ...}.
		var resp struct {
			Trace  json.RawMessage `json:"trace"`
			Status string          `json:"status"`
		}
		if err := json.Unmarshal(body, &resp); err != nil || resp.Status != "COMPLETE" {
			t.Fatalf("GET %s: %v %.200s", path, err, body)
		}
		td, err = (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(resp.Trace)
	} else {
		// Tempo names OTLP's resourceSpans "batches".
		body = bytes.Replace(body, []byte(`"batches"`), []byte(`"resourceSpans"`), 1)
		td, err = (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(body)
	}
	if err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
	return td.SpanCount()
}

// jaegerData decodes the data of a Jaeger query API answer.
func jaegerData(t *testing.T, s *testServer, path string, out any) {
	t.Helper()
	code, body := s.get(t, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	var env struct {
		Data   json.RawMessage `json:"data"`
		Errors []any           `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil || len(env.Errors) > 0 {
		t.Fatalf("GET %s: %v %s", path, err, body)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		t.Fatalf("GET %s data: %v", path, err)
	}
}

// TestOpenTelemetrySDKIntoServer exports spans with OpenTelemetry's own Go
// SDK over OTLP/gRPC (the listener configured in traces.otlp_grpc) and
// OTLP/HTTP, and finds them through every query API Grafana uses: by id,
// by TraceQL search, and in Jaeger's service and operation lists.
func TestOpenTelemetrySDKIntoServer(t *testing.T) {
	s := startServer(t, "traces:\n  otlp_grpc:\n    address: 127.0.0.1:0\n", "")
	grpcExp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(s.traces.otlpGRPCAddr()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	httpExp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(s.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		service string
		exp     sdktrace.SpanExporter
	}{{"checkout-grpc", grpcExp}, {"checkout-http", httpExp}} {
		t.Run(tc.service, func(t *testing.T) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tc.exp),
				sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", tc.service))))
			ctx, root := tp.Tracer("shop").Start(context.Background(), "GET /cart", oteltrace.WithSpanKind(oteltrace.SpanKindServer),
				oteltrace.WithAttributes(attribute.Int("http.response.status_code", 503)))
			_, child := tp.Tracer("shop").Start(ctx, "SELECT cart", oteltrace.WithSpanKind(oteltrace.SpanKindClient))
			child.SetStatus(otelcodes.Error, "timeout")
			child.End()
			root.End()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil {
				t.Fatalf("export: %v", err)
			}
			id := root.SpanContext().TraceID().String()
			if got := tempoSpanCount(t, s, "/api/v2/traces/"+id, ""); got != 2 {
				t.Errorf("trace %s: %d spans, want 2", id, got)
			}

			q := url.Values{"q": {fmt.Sprintf(`{resource.service.name = %q && status = error} && {span.http.response.status_code >= 500}`, tc.service)}}
			code, body := s.get(t, "/api/search?"+q.Encode())
			var res struct {
				Traces []struct {
					TraceID         string `json:"traceID"`
					RootServiceName string `json:"rootServiceName"`
					RootTraceName   string `json:"rootTraceName"`
				} `json:"traces"`
			}
			if err := json.Unmarshal([]byte(body), &res); code != http.StatusOK || err != nil {
				t.Fatalf("search: %d %v %s", code, err, body)
			}
			if len(res.Traces) != 1 || strings.TrimLeft(res.Traces[0].TraceID, "0") != strings.TrimLeft(id, "0") ||
				res.Traces[0].RootServiceName != tc.service || res.Traces[0].RootTraceName != "GET /cart" {
				t.Errorf("search found %+v, want trace %s of %s rooted at GET /cart", res.Traces, id, tc.service)
			}

			var services []string
			jaegerData(t, s, "/jaeger/api/services", &services)
			if !slices.Contains(services, tc.service) {
				t.Errorf("Jaeger services %v lack %s", services, tc.service)
			}
			var ops []string
			jaegerData(t, s, "/jaeger/api/services/"+tc.service+"/operations", &ops)
			if !slices.Equal(ops, []string{"GET /cart", "SELECT cart"}) {
				t.Errorf("Jaeger operations of %s: %v", tc.service, ops)
			}
		})
	}
}
