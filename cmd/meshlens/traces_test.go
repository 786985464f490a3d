package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
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
