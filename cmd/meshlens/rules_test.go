package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// writeGauge remote-writes one sample of a series given as name and label
// pairs at t.
func writeGauge(t *testing.T, s *testServer, v float64, at time.Time, name string, pairs ...string) {
	t.Helper()
	ls := []prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i < len(pairs); i += 2 {
		ls = append(ls, prompb.Label{Name: pairs[i], Value: pairs[i+1]})
	}
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	body := v1BodyFor(t, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: v, Timestamp: at.UnixMilli()}}})
	if code := postRaw(t, s.URL+"/api/v1/write", body); code != http.StatusNoContent {
		t.Fatalf("remote write %s: status %d", name, code)
	}
}

// apiData GETs a Prometheus API path and decodes its data into out.
func apiData(t *testing.T, s *testServer, path string, out any) {
	t.Helper()
	code, body := s.get(t, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	env := struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}{}
	if err := json.Unmarshal([]byte(body), &env); err != nil || env.Status != "success" {
		t.Fatalf("GET %s: %v %s", path, err, body)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		t.Fatalf("GET %s data: %v", path, err)
	}
}

type apiRuleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		File  string `json:"file"`
		Rules []struct {
			Name   string `json:"name"`
			Type   string `json:"type"`
			Health string `json:"health"`
			Alerts []struct {
				Labels   map[string]string `json:"labels"`
				State    string            `json:"state"`
				ActiveAt time.Time         `json:"activeAt"`
			} `json:"alerts"`
		} `json:"rules"`
	} `json:"groups"`
}

type apiAlerts struct {
	Alerts []struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		State       string            `json:"state"`
		ActiveAt    time.Time         `json:"activeAt"`
		Value       string            `json:"value"`
	} `json:"alerts"`
}

const testRules = `groups:
  - name: test
    rules:
      - record: job:test_errors:max
        expr: max by (job) (test_errors)
      - alert: TestErrors
        expr: job:test_errors:max > 5
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.job }} has {{ $value }} errors"
`

// writeRuleFile writes a rule file into dir and returns its path.
func writeRuleFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAlertsReachAlertmanager runs a rule file and the built-in packs with a
// real Alertmanager: the alert fires in meshlens's API, reaches Alertmanager
// with external labels, annotations and a generator URL, and its resolution
// is notified.
func TestAlertsReachAlertmanager(t *testing.T) {
	am := startAlertmanager(t)
	dir := t.TempDir()
	writeRuleFile(t, dir, "test.rules.yml", testRules)
	s := startServer(t, fmt.Sprintf(`
global:
  external_labels: {region: eu-test}
  external_url: https://meshlens.example.org/
rules:
  evaluation_interval: 1s
  resend_delay: 1s
  files: [%q]
%s`, filepath.Join(dir, "*.rules.yml"), am.config()), dir)

	now := time.Now()
	writeGauge(t, s, 9, now, "test_errors", "job", "checkout", "instance", "a")
	writeGauge(t, s, 1, now, "test_errors", "job", "cart", "instance", "a")

	eventually(t, 30*time.Second, "TestErrors firing in /api/v1/alerts", func() bool {
		var a apiAlerts
		apiData(t, s, "/api/v1/alerts", &a)
		return len(a.Alerts) == 1 && a.Alerts[0].State == "firing"
	})
	var a apiAlerts
	apiData(t, s, "/api/v1/alerts", &a)
	if got := a.Alerts[0]; got.Labels["job"] != "checkout" || got.Annotations["summary"] != "checkout has 9 errors" {
		t.Errorf("alert = %+v, want job=checkout with its summary", got)
	}

	var got []amAlert
	eventually(t, 30*time.Second, "the alert in Alertmanager", func() bool {
		got = am.alerts(t)
		return len(got) > 0
	})
	if len(got) != 1 {
		t.Fatalf("alertmanager holds %d alerts, want 1: %+v", len(got), got)
	}
	al := got[0]
	want := map[string]string{"alertname": "TestErrors", "job": "checkout", "severity": "critical", "region": "eu-test"}
	for k, v := range want {
		if al.Labels[k] != v {
			t.Errorf("alertmanager alert label %s = %q, want %q (labels %v)", k, al.Labels[k], v, al.Labels)
		}
	}
	if al.Annotations["summary"] != "checkout has 9 errors" {
		t.Errorf("alertmanager annotations = %v", al.Annotations)
	}
	if !strings.HasPrefix(al.GeneratorURL, "https://meshlens.example.org/graph?g0.expr=") || !strings.Contains(al.GeneratorURL, "job%3Atest_errors%3Amax") {
		t.Errorf("generatorURL = %q, want a graph link to the rule's expression under the external URL", al.GeneratorURL)
	}

	// The recording rule's result is stored and queryable.
	eventually(t, 10*time.Second, "the recorded series", func() bool {
		var v struct {
			Result []json.RawMessage `json:"result"`
		}
		apiData(t, s, "/api/v1/query?query=job:test_errors:max", &v)
		return len(v.Result) == 2
	})

	// Alertmanager notifies the firing alert; once the condition clears it
	// is told the alert resolved and notifies that too.
	eventually(t, 30*time.Second, "the firing notification", func() bool {
		n := am.received()
		return len(n) > 0 && n[0].Status == "firing" && len(n[0].Alerts) == 1 && n[0].Alerts[0].Labels["job"] == "checkout"
	})
	writeGauge(t, s, 0, time.Now(), "test_errors", "job", "checkout", "instance", "a")
	eventually(t, 30*time.Second, "a resolved notification", func() bool {
		for _, n := range am.received() {
			if n.Status == "resolved" && len(n.Alerts) == 1 && n.Alerts[0].Labels["job"] == "checkout" {
				return true
			}
		}
		return false
	})
}

// TestRulesAPI checks /api/v1/rules lists rule files and the built-in packs,
// with Prometheus's filters and their unbracketed spellings.
func TestRulesAPI(t *testing.T) {
	dir := t.TempDir()
	writeRuleFile(t, dir, "test.rules.yml", testRules)
	s := startServer(t, fmt.Sprintf("rules:\n  evaluation_interval: 1s\n  files: [%q]\n", filepath.Join(dir, "*.rules.yml")), dir)

	var all apiRuleGroups
	apiData(t, s, "/api/v1/rules", &all)
	files := map[string]bool{}
	for _, g := range all.Groups {
		files[g.File] = true
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %+v has no name or rules", g)
		}
	}
	for _, f := range []string{filepath.Join(dir, "test.rules.yml"), "packs/golden.yml", "packs/recording.yml"} {
		if !files[f] {
			t.Errorf("/api/v1/rules lists files %v, want %s among them", files, f)
		}
	}

	for _, tc := range []struct {
		query string
		want  func(apiRuleGroups) bool
	}{
		{"type=record", func(r apiRuleGroups) bool {
			for _, g := range r.Groups {
				for _, ru := range g.Rules {
					if ru.Type != "recording" {
						return false
					}
				}
			}
			return len(r.Groups) > 0
		}},
		{"rule_group[]=test", oneGroup("test")},
		{"rule_group=test", oneGroup("test")},
		{"rule_name=TestErrors", func(r apiRuleGroups) bool {
			return len(r.Groups) == 1 && len(r.Groups[0].Rules) == 1 && r.Groups[0].Rules[0].Name == "TestErrors"
		}},
		{"file=" + filepath.Join(dir, "test.rules.yml"), oneGroup("test")},
	} {
		var r apiRuleGroups
		apiData(t, s, "/api/v1/rules?"+tc.query, &r)
		if !tc.want(r) {
			t.Errorf("/api/v1/rules?%s = %+v", tc.query, r)
		}
	}
}

func oneGroup(name string) func(apiRuleGroups) bool {
	return func(r apiRuleGroups) bool { return len(r.Groups) == 1 && r.Groups[0].Name == name }
}

// TestRuleReload changes rules with POST /-/reload; a broken rule file is
// refused with its file, line and reason, and the previous rules keep
// running.
func TestRuleReload(t *testing.T) {
	dir := t.TempDir()
	rf := writeRuleFile(t, dir, "test.rules.yml", testRules)
	s := startServer(t, fmt.Sprintf("rules:\n  evaluation_interval: 1s\n  files: [%q]\n", rf), dir)

	reload := func() (int, string) {
		resp, err := http.Post(s.URL+"/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ruleNames := func() []string {
		var r apiRuleGroups
		apiData(t, s, "/api/v1/rules?rule_group[]=test", &r)
		var names []string
		for _, g := range r.Groups {
			for _, ru := range g.Rules {
				names = append(names, ru.Name)
			}
		}
		return names
	}

	writeRuleFile(t, dir, "test.rules.yml", testRules+`      - alert: TestMore
        expr: job:test_errors:max > 50
`)
	if code, body := reload(); code != http.StatusOK {
		t.Fatalf("reload with a good file: %d %s", code, body)
	}
	if got := ruleNames(); len(got) != 3 || got[2] != "TestMore" {
		t.Fatalf("rules after reload = %v, want the added TestMore", got)
	}

	writeRuleFile(t, dir, "test.rules.yml", testRules+`      - alert: Broken
        expr: sum by (job (test_errors)
`)
	code, body := reload()
	if code != http.StatusInternalServerError {
		t.Errorf("reload with a broken file: status %d, want 500", code)
	}
	for _, want := range []string{rf, "13:", "Broken", "parse error"} {
		if !strings.Contains(body, want) {
			t.Errorf("reload error %q does not name %q", body, want)
		}
	}
	if got := ruleNames(); len(got) != 3 {
		t.Errorf("rules after a failed reload = %v, want the previous three", got)
	}
	var info struct {
		ReloadConfigSuccess bool `json:"reloadConfigSuccess"`
	}
	apiData(t, s, "/api/v1/status/runtimeinfo", &info)
	if info.ReloadConfigSuccess {
		t.Error("runtimeinfo reloadConfigSuccess = true after a failed reload")
	}
}

// TestPendingAlertSurvivesRestart stops meshlens while an alert is pending in
// its `for` and starts it again on the same data: the alert is restored from
// ALERTS_FOR_STATE and keeps its activeAt (moved by the downtime only, as
// Prometheus counts only running time towards `for`).
func TestPendingAlertSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	rf := writeRuleFile(t, dir, "pending.rules.yml", `groups:
  - name: pending
    rules:
      - alert: SlowBurn
        expr: test_queue_depth > 100
        for: 2h
`)
	cfg := fmt.Sprintf("rules:\n  evaluation_interval: 1s\n  files: [%q]\n", rf)
	s := startServer(t, cfg, dir)
	writeGauge(t, s, 500, time.Now(), "test_queue_depth", "queue", "orders")

	pending := func(s *testServer) (time.Time, bool) {
		var a apiAlerts
		apiData(t, s, "/api/v1/alerts", &a)
		if len(a.Alerts) != 1 || a.Alerts[0].State != "pending" {
			return time.Time{}, false
		}
		return a.Alerts[0].ActiveAt, true
	}
	var activeAt time.Time
	eventually(t, 30*time.Second, "SlowBurn pending", func() bool {
		var ok bool
		activeAt, ok = pending(s)
		return ok
	})
	// Let it stay pending for a while, so a reset would show.
	time.Sleep(10 * time.Second)
	stopped := time.Now()
	s.stop(t)
	restarted := time.Now()

	// The state is restored after the second evaluation (as in Prometheus,
	// so that recording rules have run); until then the alert is pending
	// from the restart.
	s2 := startServer(t, cfg, dir)
	// Prometheus keeps activeAt in whole seconds and counts the downtime
	// from the last ALERTS_FOR_STATE sample, an evaluation before the stop.
	down := restarted.Sub(stopped) + 4*time.Second
	var restored time.Time
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if at, ok := pending(s2); ok {
			restored = at
			if d := at.Sub(activeAt); d >= 0 && d <= down {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("activeAt before restart %s, after %s: moved by %s, want at most the downtime (%s)", activeAt, restored, restored.Sub(activeAt), down)
}
