package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/meshlens/meshlens/internal/scenario"
	"github.com/meshlens/meshlens/rules"
	"github.com/meshlens/meshlens/tsdb"
)

// TestAlertTraces replays the latency scenario (the config service becomes
// ten times slower) with its spans through meshlens and a real
// Alertmanager: the latency alert about config that Alertmanager holds
// names, in its annotations, the trace ids of slow requests to config, links
// to them under the external URL that resolve to the stored traces, and a
// blamed edge into config; each of those traces spends most of its time in
// config.
func TestAlertTraces(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills a scenario with spans; not in -short")
	}
	file := filepath.Join("..", "..", "testdata", "scenarios", "latency.yaml")
	sc, err := scenario.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	const faulty = "config"
	meshsim := buildMeshsim(t)
	am := startAlertmanager(t)

	// The history ends where the fault ends, so it is in force at the last
	// evaluation.
	f := sc.Faults[0]
	if f.Service != faulty {
		t.Fatalf("scenario %s: the fault is on %q, want %q", file, f.Service, faulty)
	}
	span := f.Start.D() + f.Duration.D()
	end := time.Now().Truncate(time.Second)
	start := end.Add(-span)
	const ext = "https://meshlens.example.org/mesh/"
	s := startServer(t, fmt.Sprintf(`
global:
  external_labels: {scenario: alert-traces}
  external_url: %s
remote_write:
  max_inflight_requests: 256
rules:
  evaluation_interval: 30s
  alert_traces: 3
%s`, ext, am.config()), "")

	cmd := exec.Command(meshsim, "backfill",
		"--url", s.URL+"/api/v1/write",
		"--traces-url", s.URL+"/api/v2/spans",
		"--scenario", file,
		"--hours", fmt.Sprintf("%.10f", span.Hours()),
		"--end", end.Format(time.RFC3339),
		"--interval", "30s",
		"--progress", "0")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshsim backfill: %v", err)
	}

	scratch, err := tsdb.Open(t.TempDir(), tsdb.Options{MinBlockDuration: 2 * time.Hour, MaxBlockDuration: 2 * time.Hour}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer scratch.Close()
	if _, err := s.rules.Backtest(context.Background(), rules.BacktestOptions{
		Start: start, End: end, Scratch: scratch, Notify: true, Labels: labels.FromStrings("backtest", "true"),
	}); err != nil {
		t.Fatal(err)
	}

	// The latency alerts about config firing at the end, as Alertmanager
	// holds them: the service's (golden pack) and its callers' (edges).
	var held []amAlert
	deadline := time.Now().Add(20 * time.Second)
	for {
		held = held[:0]
		service := false
		for _, a := range am.alerts(t) {
			if a.Labels["backtest"] == "true" && a.Labels["alertname"] == "IstioHighRequestLatency" && a.Labels["destination_service_name"] == faulty {
				held = append(held, a)
				service = service || a.Labels["source_workload"] == ""
			}
		}
		if service || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(held) == 0 {
		t.Fatalf("alertmanager holds no IstioHighRequestLatency alert about %s: %v", faulty, amNames(am.alerts(t)))
	}

	sawService := false
	for _, a := range held {
		an := a.Annotations
		t.Logf("%v: trace_ids %s blamed_edge %q", a.Labels, an["trace_ids"], an["blamed_edge"])
		if _, ok := an["meshlens_exemplars"]; ok {
			t.Errorf("%v: the request annotation reached alertmanager: %v", a.Labels, an)
		}
		if a.Labels["source_workload"] == "" {
			sawService = true
		}
		ids := strings.Split(an["trace_ids"], ",")
		urls := strings.Split(an["trace_urls"], ",")
		if an["trace_ids"] == "" || len(ids) > 3 || len(urls) != len(ids) {
			t.Errorf("%v: trace_ids %q, trace_urls %q: want 1 to 3 ids with a link each", a.Labels, an["trace_ids"], an["trace_urls"])
			continue
		}
		// The blamed edge is a call into config.
		if _, callee, ok := strings.Cut(an["blamed_edge"], " -> "); !ok || !strings.HasPrefix(callee, faulty+".") {
			t.Errorf("%v: blamed_edge %q, want a call into %s", a.Labels, an["blamed_edge"], faulty)
		}
		for i, id := range ids {
			path, ok := strings.CutPrefix(urls[i], ext)
			if !ok || path != "api/traces/"+id {
				t.Errorf("trace %s: link %q, want %sapi/traces/%s", id, urls[i], ext, id)
				continue
			}
			tr := getTrace(t, s, "/"+path)
			if tr.SpanCount() == 0 {
				t.Errorf("trace %s: no spans", id)
				continue
			}
			// The critical path runs through config: of all services, config
			// spends the most time in the trace (self time: a span's time not
			// covered by its children).
			self := selfTimes(tr)
			var top string
			for svc, d := range self {
				if top == "" || d > self[top] {
					top = svc
				}
			}
			if !strings.HasPrefix(top, faulty+".") {
				t.Errorf("trace %s: %s spends the most time (%s), not %s (%s); self times %v", id, top, self[top], faulty, self[faulty+"."+a.Labels["destination_service_namespace"]], self)
			}
		}
	}
	// And the notification Alertmanager sent on carries them.
	eventually(t, 30*time.Second, "a notification of the latency alert with its traces", func() bool {
		for _, n := range am.received() {
			for _, a := range n.Alerts {
				if a.Labels["scenario"] == "alert-traces" && a.Labels["destination_service_name"] == faulty && a.Annotations["trace_ids"] != "" {
					return true
				}
			}
		}
		return false
	})
	if !sawService {
		t.Errorf("alertmanager holds no service-level latency alert about %s (only the edges'): %v", faulty, amNames(held))
	}
}

// getTrace reads a trace by the Tempo API, in OTLP protobuf.
func getTrace(t *testing.T, s *testServer, path string) ptrace.Traces {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
	req.Header.Set("Accept", "application/protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(body)
	if err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
	return td
}

// selfTimes returns the self time of each service (service.name) in the
// trace: the time of its spans not covered by their children's.
func selfTimes(td ptrace.Traces) map[string]time.Duration {
	type interval struct{ start, end time.Time }
	type span struct {
		service string
		interval
	}
	spans := map[pcommon.SpanID]span{}
	children := map[pcommon.SpanID][]interval{}
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		name, _ := rs.Resource().Attributes().Get("service.name")
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			ss := sss.At(j).Spans()
			for k := range ss.Len() {
				sp := ss.At(k)
				iv := interval{sp.StartTimestamp().AsTime(), sp.EndTimestamp().AsTime()}
				spans[sp.SpanID()] = span{name.Str(), iv}
				if !sp.ParentSpanID().IsEmpty() {
					children[sp.ParentSpanID()] = append(children[sp.ParentSpanID()], iv)
				}
			}
		}
	}
	self := map[string]time.Duration{}
	for id, sp := range spans {
		cs := children[id]
		slices.SortFunc(cs, func(a, b interval) int { return a.start.Compare(b.start) })
		d := sp.end.Sub(sp.start)
		cur := sp.start // covered up to here
		for _, c := range cs {
			s, e := c.start, c.end
			if s.Before(cur) {
				s = cur
			}
			if e.After(sp.end) {
				e = sp.end
			}
			if e.After(s) {
				d -= e.Sub(s)
				cur = e
			}
		}
		self[sp.service] += d
	}
	return self
}
