package main

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// traceFilter forwards to next only the Zipkin spans of the traces that
// have a span of keep (a "<service>.<namespace>" Zipkin service name), as
// a collector that loses some traces would; all the spans of a trace come
// in one request from meshsim.
type traceFilter struct {
	next, keep string

	mu            sync.Mutex
	kept, dropped int // traces
}

func (f *traceFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var spans []json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&spans); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	byTrace := map[string][]json.RawMessage{}
	keep := map[string]bool{}
	for _, raw := range spans {
		var s struct {
			TraceID       string `json:"traceId"`
			LocalEndpoint struct {
				ServiceName string `json:"serviceName"`
			} `json:"localEndpoint"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		byTrace[s.TraceID] = append(byTrace[s.TraceID], raw)
		keep[s.TraceID] = keep[s.TraceID] || s.LocalEndpoint.ServiceName == f.keep
	}
	out := []json.RawMessage{}
	f.mu.Lock()
	for id, ss := range byTrace {
		if keep[id] {
			out = append(out, ss...)
			f.kept++
		} else {
			f.dropped++
		}
	}
	f.mu.Unlock()
	body, _ := json.Marshal(out)
	resp, err := http.Post(f.next, "application/json", bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	w.WriteHeader(resp.StatusCode)
	w.Write(msg)
}

// TestTraceCoverage runs a simulated mesh live into meshlens with a span
// collector in front that loses every trace not passing through order:
// the coverage series of order are 1 in every run, those of user (every
// trace passes through it) below 1 over the run, and the edge series are
// written too.
//
// meshsim's mesh of seed 1 with 4 services in one cluster is
// istio-ingressgateway → user → {order, risk, comment}, order → comment,
// risk → comment, all in namespace platform.
func TestTraceCoverage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a mesh live for 20s; not in -short")
	}
	meshsim := buildMeshsim(t)
	s := startServer(t, "traces:\n  coverage:\n    interval: 1s\n    lag: 3s\n", "")
	filter := &traceFilter{next: s.URL + "/api/v2/spans", keep: "order.platform"}
	proxy := httptest.NewServer(filter)
	defer proxy.Close()

	cmd := exec.Command(meshsim, "run", "--url", s.URL+"/api/v1/write", "--traces-url", proxy.URL+"/api/v2/spans",
		"--seed", "1", "--services", "4", "--clusters", "1", "--interval", "1s", "--trace-sampling", "0.2",
		"--batch-send-deadline", "1s", "--duration", "20s", "--progress", "0")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshsim run: %v", err)
	}
	filter.mu.Lock()
	kept, dropped := filter.kept, filter.dropped
	filter.mu.Unlock()
	t.Logf("collector kept %d traces, dropped %d", kept, dropped)
	if kept == 0 || dropped == 0 {
		t.Fatalf("collector kept %d traces and dropped %d: the mesh is not the one this test expects", kept, dropped)
	}
	// Every exemplar is in; the runs from Lag after now cover them all.
	runs := s.Main.metrics.GetOrCreateCounter("meshlens_exemplar_coverage_runs_total")
	after := runs.Get() + 5
	eventually(t, time.Minute, "5 more coverage runs", func() bool { return runs.Get() >= after })
	if n := s.Main.metrics.GetOrCreateCounter("meshlens_exemplar_coverage_run_failures_total").Get(); n != 0 {
		t.Errorf("%d coverage runs failed", n)
	}

	query := func(q string) map[string]float64 {
		t.Helper()
		var d struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		}
		apiData(t, s, "/api/v1/query?"+url.Values{"query": {q}}.Encode(), &d)
		out := map[string]float64{}
		for _, r := range d.Result {
			v, err := strconv.ParseFloat(r.Value[1].(string), 64)
			if err != nil {
				t.Fatal(err)
			}
			key := r.Metric["destination_service_name"]
			if sw := r.Metric["source_workload"]; sw != "" {
				key = sw + "->" + key
			}
			out[key] = v
		}
		t.Logf("%s: %v", q, out)
		return out
	}
	// The series of a service carry exactly its three labels.
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
		} `json:"result"`
	}
	apiData(t, s, "/api/v1/query?"+url.Values{"query": {`last_over_time(meshlens_exemplar_trace_coverage_ratio{destination_service_name="order"}[10m])`}}.Encode(), &d)
	want := map[string]string{"__name__": "meshlens_exemplar_trace_coverage_ratio", "cluster": "east",
		"destination_service_namespace": "platform", "destination_service_name": "order"}
	if len(d.Result) != 1 || !maps.Equal(d.Result[0].Metric, want) {
		t.Errorf("order's coverage series: %v, want one with labels %v", d.Result, want)
	}

	minRatio := query(`min_over_time(meshlens_exemplar_trace_coverage_ratio[10m])`)
	if v, ok := minRatio["order"]; !ok || v != 1 {
		t.Errorf("order: lowest coverage %v (present %v), want 1: every trace through order is stored", v, ok)
	}
	maxRatio := query(`max_over_time(meshlens_exemplar_trace_coverage_ratio[10m])`)
	if v, ok := maxRatio["user"]; !ok || v > 1 || v <= 0 {
		t.Errorf("user: highest coverage %v (present %v), want in (0, 1]", v, ok)
	}
	// Over the whole run, user's traces are stored as far as they pass
	// through order: some, not all.
	sum := query(`sum by (destination_service_name) (sum_over_time(meshlens_exemplar_traces_found[10m]))
		/ sum by (destination_service_name) (sum_over_time(meshlens_exemplar_traces_checked[10m]))`)
	if v := sum["user"]; !(v > 0 && v < 1) {
		t.Errorf("user: coverage %v over the run, want in (0, 1)", v)
	}
	if v := sum["order"]; v != 1 {
		t.Errorf("order: coverage %v over the run, want 1", v)
	}
	// The edge series: user's calls to order are all covered.
	edges := query(`min_over_time(meshlens_exemplar_edge_trace_coverage_ratio[10m])`)
	found := false
	for k, v := range edges {
		if strings.HasSuffix(k, "->order") {
			found = true
			if v != 1 {
				t.Errorf("edge %s: lowest coverage %v, want 1", k, v)
			}
		}
	}
	if !found {
		t.Errorf("no edge series to order: %v", edges)
	}
}
