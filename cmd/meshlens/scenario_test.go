package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/internal/scenario"
	"github.com/meshlens/meshlens/rules"
	"github.com/meshlens/meshlens/tsdb"
)

// buildMeshsim builds the simulator once per test binary run.
func buildMeshsim(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshsim")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/meshlens/meshlens/cmd/meshsim")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build meshsim: %v\n%s", err, out)
	}
	return bin
}

// TestScenarioAlerts replays every scenario of testdata/scenarios through
// meshlens and a real Alertmanager: meshsim backfills the scenario up to the
// end of its fault (so the fault is in force now), meshlens evaluates the
// built-in packs over that history at every evaluation interval with its
// notifier sending to Alertmanager, and Alertmanager's own API must then hold
// exactly the alerts the scenario expects (and none for the healthy
// baseline). Replayed alerts carry backtest="true", apart from what the live
// engine sends about the same (by then stale) data. Every alert that fired during the replay must be an expected
// one, and none may fire before its fault began.
func TestScenarioAlerts(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills every scenario; not in -short")
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "scenarios", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	meshsim := buildMeshsim(t)
	am := startAlertmanager(t)
	for _, f := range files {
		sc, err := scenario.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, meshsim, am, f, sc, "")
		})
	}
}

// TestScenarioAlertsAggregated replays the scenarios whose alerts read Istio
// and Envoy request series with the stream aggregation of a large mesh
// (config/testdata/large-mesh.good.yml): only the sums are stored, and the
// same alerts fire.
func TestScenarioAlertsAggregated(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills scenarios; not in -short")
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "testdata", "large-mesh.good.yml"))
	if err != nil {
		t.Fatal(err)
	}
	meshsim := buildMeshsim(t)
	am := startAlertmanager(t)
	for _, name := range []string{"healthy-baseline", "latency", "latency-edge", "error-rate", "circuit-breaker", "retry-storm", "mtls-plaintext"} {
		f := filepath.Join("..", "..", "testdata", "scenarios", name+".yaml")
		sc, err := scenario.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, meshsim, am, f, sc, string(b))
		})
	}
}

// runScenario backfills the scenario into a meshlens configured with the
// rules, Alertmanager and extra (YAML appended to the configuration), and
// checks what fires.
func runScenario(t *testing.T, meshsim string, am *alertmanager, file string, sc *scenario.Scenario, extra string) {
	// The history ends where the first fault ends, so every fault is in
	// force at the last evaluation.
	span := sc.Duration.D()
	for _, f := range sc.Faults {
		if f.Duration > 0 {
			span = min(span, f.Start.D()+f.Duration.D())
		}
	}
	end := time.Now().Truncate(time.Second)
	start := end.Add(-span)

	dir := t.TempDir()
	s := startServer(t, fmt.Sprintf(`
global:
  external_labels: {scenario: %q}
remote_write:
  max_inflight_requests: 256
rules:
  evaluation_interval: 30s
%s
%s`, sc.Name, am.config(), extra), dir)

	cmd := exec.Command(meshsim, "backfill",
		"--url", s.URL+"/api/v1/write",
		"--scenario", file,
		"--hours", fmt.Sprintf("%.10f", span.Hours()),
		"--end", end.Format(time.RFC3339),
		"--interval", "30s", // the scenario scrapes every 15s; half the samples keep the test quick
		"--progress", "0")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshsim backfill: %v", err)
	}

	if extra != "" {
		// Only the sums are stored: no Istio request series of a pod.
		for q, want := range map[string]int{`count(istio_requests_total)`: 1, `count(istio_requests_total{pod!=""})`: 0, `count(istio_request_duration_milliseconds_bucket{response_code!=""})`: 0} {
			var res struct {
				Result []json.RawMessage `json:"result"`
			}
			apiData(t, s, "/api/v1/query?query="+url.QueryEscape(q)+"&time="+strconv.FormatInt(end.Add(-2*time.Minute).Unix(), 10), &res)
			if len(res.Result) != want {
				t.Fatalf("%s: %d results, want %d", q, len(res.Result), want)
			}
		}
	}

	scratch, err := tsdb.Open(t.TempDir(), tsdb.Options{MinBlockDuration: 2 * time.Hour, MaxBlockDuration: 2 * time.Hour}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer scratch.Close()
	fired, err := s.rules.Backtest(context.Background(), rules.BacktestOptions{
		Start: start, End: end, Scratch: scratch, Notify: true, Labels: labels.FromStrings("backtest", "true"),
	})
	if err != nil {
		t.Fatal(err)
	}

	expected := func(ls labels.Labels) *scenario.Alert {
		for i, a := range sc.Expect.Alerts {
			if ls.Get("alertname") != a.Alertname {
				continue
			}
			ok := true
			for k, v := range a.Labels {
				ok = ok && ls.Get(k) == v
			}
			if ok {
				return &sc.Expect.Alerts[i]
			}
		}
		return nil
	}
	for _, f := range fired {
		a := expected(f.Labels)
		if a == nil {
			t.Errorf("unexpected alert fired at +%s: %s", f.FiredAt.Sub(start), f.Labels)
			continue
		}
		if f.FiredAt.Before(start.Add(a.After.D())) {
			t.Errorf("%s fired at +%s, before its fault began at +%s", f.Labels, f.FiredAt.Sub(start), a.After.D())
		}
	}
	for i, a := range sc.Expect.Alerts {
		if !slices.ContainsFunc(fired, func(f rules.FiredAlert) bool { return expected(f.Labels) == &sc.Expect.Alerts[i] }) {
			t.Errorf("expected alert %s %v never fired; fired: %v", a.Alertname, a.Labels, firedNames(fired))
		}
	}

	// Alertmanager holds what is firing at the end of the fault, and nothing
	// else of this scenario.
	var held []amAlert
	deadline := time.Now().Add(20 * time.Second)
	for {
		held = held[:0]
		for _, a := range am.alerts(t) {
			if a.Labels["scenario"] == sc.Name && a.Labels["backtest"] == "true" {
				held = append(held, a)
			}
		}
		if covered(sc, held) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if sc.Expect.NoAlerts && len(held) > 0 {
		t.Errorf("healthy baseline: alertmanager holds %d alerts: %v", len(held), amNames(held))
	}
	if !covered(sc, held) {
		t.Errorf("alertmanager holds %v, want the expected %v", amNames(held), sc.Expect.Alerts)
	}
	for _, a := range held {
		if expected(labels.FromMap(a.Labels)) == nil {
			t.Errorf("alertmanager holds an unexpected alert: %v", a.Labels)
		}
	}
}

// covered reports whether every expected alert of sc is among held.
func covered(sc *scenario.Scenario, held []amAlert) bool {
	for _, a := range sc.Expect.Alerts {
		if !slices.ContainsFunc(held, func(h amAlert) bool {
			if h.Labels["alertname"] != a.Alertname {
				return false
			}
			for k, v := range a.Labels {
				if h.Labels[k] != v {
					return false
				}
			}
			return true
		}) {
			return false
		}
	}
	return true
}

func firedNames(fired []rules.FiredAlert) string {
	var b strings.Builder
	for _, f := range fired {
		fmt.Fprintf(&b, "%s ", f.Labels)
	}
	return b.String()
}

func amNames(held []amAlert) []string {
	var out []string
	for _, a := range held {
		out = append(out, labels.FromMap(a.Labels).String())
	}
	return out
}
