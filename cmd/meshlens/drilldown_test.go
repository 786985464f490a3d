package main

import (
	"fmt"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// TestDrilldown sends a simulated mesh's metrics and Zipkin spans into
// meshlens and drills down from istio_request_duration_milliseconds_bucket:
// the slowest exemplars come back in order of value with their traces,
// whole (every span meshsim sent), every exemplar's trace is stored
// (coverage 1), and the self time of the returned traces is split by edge.
func TestDrilldown(t *testing.T) {
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

	var d struct {
		Exemplars []struct {
			Series     map[string]string `json:"series"`
			Value      float64           `json:"value"`
			TraceID    string            `json:"trace_id"`
			TraceFound bool              `json:"trace_found"`
			Trace      *struct {
				RootService string   `json:"root_service"`
				DurationMS  float64  `json:"duration_ms"`
				SpanCount   int      `json:"span_count"`
				Services    []string `json:"services"`
				CriticalHop *struct {
					Service string  `json:"service"`
					SelfMS  float64 `json:"self_ms"`
				} `json:"critical_hop"`
			} `json:"trace"`
		} `json:"exemplars"`
		Coverage struct {
			WithTraceID int     `json:"with_trace_id"`
			Checked     int     `json:"checked"`
			Found       int     `json:"found"`
			Ratio       float64 `json:"ratio"`
			Truncated   bool    `json:"truncated"`
		} `json:"coverage"`
		CriticalPath struct {
			Traces int     `json:"traces"`
			SelfMS float64 `json:"self_ms"`
			Top    *struct {
				Caller, Callee string
				SelfMS         float64 `json:"self_ms"`
				Share          float64 `json:"share"`
			} `json:"top"`
		} `json:"critical_path"`
	}
	q := url.Values{"query": {"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket[5m])))"},
		"start": {fmt.Sprint(end.Add(-time.Hour).Unix())}, "end": {fmt.Sprint(end.Add(time.Minute).Unix())}, "limit": {"20"}}
	apiData(t, s, "/api/v1/drilldown?"+q.Encode(), &d)

	if len(d.Exemplars) == 0 {
		t.Fatal("no exemplars")
	}
	t.Logf("%d exemplars returned; coverage %+v; critical path %+v top %+v", len(d.Exemplars), d.Coverage, d.CriticalPath, d.CriticalPath.Top)
	for i, e := range d.Exemplars {
		if i > 0 && e.Value > d.Exemplars[i-1].Value {
			t.Errorf("exemplar %d (%g) is slower than exemplar %d (%g)", i, e.Value, i-1, d.Exemplars[i-1].Value)
		}
		if e.Series["__name__"] != "istio_request_duration_milliseconds_bucket" {
			t.Errorf("exemplar %d series %v", i, e.Series)
		}
		want, sent := counter.spans[e.TraceID]
		if !sent {
			t.Errorf("exemplar trace %s was never sent by meshsim", e.TraceID)
			continue
		}
		if !e.TraceFound || e.Trace == nil {
			t.Errorf("trace %s not found", e.TraceID)
			continue
		}
		tr := e.Trace
		if tr.SpanCount != want || tr.RootService == "" || len(tr.Services) == 0 || tr.DurationMS <= 0 ||
			tr.CriticalHop == nil || tr.CriticalHop.Service == "" || tr.CriticalHop.SelfMS <= 0 || tr.CriticalHop.SelfMS > tr.DurationMS {
			t.Errorf("trace %s (meshsim sent %d spans): %+v hop %+v", e.TraceID, want, tr, tr.CriticalHop)
		}
	}
	c := d.Coverage
	if c.WithTraceID == 0 || c.Checked != c.WithTraceID || c.Found != c.Checked || c.Ratio != 1 || c.Truncated {
		t.Errorf("coverage %+v, want every exemplar's trace found", c)
	}
	cp := d.CriticalPath
	if cp.Traces != len(d.Exemplars) || cp.SelfMS <= 0 || cp.Top == nil || cp.Top.Callee == "" || cp.Top.Share <= 0 || cp.Top.Share > 1 {
		t.Errorf("critical path %+v top %+v", cp, cp.Top)
	}
}

// TestDrilldownFindsTheSlowEdge drills down from the whole mesh's latency
// over the latency-edge scenario (calls from auth to billing 800ms slower):
// the slowest exemplars' traces all cross auth → billing with billing's
// span as their critical hop, and the aggregate critical path names that
// edge.
func TestDrilldownFindsTheSlowEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills a mesh; not in -short")
	}
	meshsim := buildMeshsim(t)
	s := startServer(t, "", "")
	end := time.Now().Truncate(time.Minute)
	cmd := exec.Command(meshsim, "backfill", "--url", s.URL+"/api/v1/write", "--traces-url", s.URL+"/api/v2/spans",
		"--scenario", "../../testdata/scenarios/latency-edge.yaml", "--hours", "0.25", "--trace-sampling", "0.01",
		"--end", end.Format(time.RFC3339), "--progress", "0")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshsim backfill: %v", err)
	}

	var d struct {
		Exemplars []struct {
			TraceID    string `json:"trace_id"`
			TraceFound bool   `json:"trace_found"`
			Trace      *struct {
				Services    []string `json:"services"`
				CriticalHop *struct {
					Service string `json:"service"`
				} `json:"critical_hop"`
			} `json:"trace"`
		} `json:"exemplars"`
		CriticalPath struct {
			Top *struct {
				Caller string  `json:"caller"`
				Callee string  `json:"callee"`
				Share  float64 `json:"share"`
			} `json:"top"`
		} `json:"critical_path"`
	}
	q := url.Values{"query": {"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket[5m])))"},
		"start": {fmt.Sprint(end.Add(-20 * time.Minute).Unix())}, "end": {fmt.Sprint(end.Add(time.Minute).Unix())}, "limit": {"10"}}
	apiData(t, s, "/api/v1/drilldown?"+q.Encode(), &d)
	// Spans name services with their namespace.
	const auth, billing = "auth.travel", "billing.platform"
	if len(d.Exemplars) < 5 {
		t.Fatalf("%d exemplars, want 10", len(d.Exemplars))
	}
	for _, e := range d.Exemplars {
		if !e.TraceFound || e.Trace == nil {
			t.Errorf("trace %s not found", e.TraceID)
			continue
		}
		if !slices.Contains(e.Trace.Services, auth) || !slices.Contains(e.Trace.Services, billing) ||
			e.Trace.CriticalHop == nil || e.Trace.CriticalHop.Service != billing {
			t.Errorf("trace %s: services %v, critical hop %+v; want auth and billing, billing's span the critical hop", e.TraceID, e.Trace.Services, e.Trace.CriticalHop)
		}
	}
	if top := d.CriticalPath.Top; top == nil || top.Caller != auth || top.Callee != billing || top.Share < 0.5 {
		t.Errorf("aggregate critical path %+v, want auth → billing with most of the self time", top)
	}
}
