package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshlens/meshlens/internal/peers"
)

// alertmanager is a real Alertmanager (the pinned peer) whose only receiver
// is a webhook recording every notification.
type alertmanager struct {
	URL  string
	Addr string

	mu            sync.Mutex
	notifications []amNotification
}

// amAlert is an alert as Alertmanager's API v2 and webhook show it.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Status       json.RawMessage   `json:"status"`
}

// amNotification is the body of a webhook notification.
type amNotification struct {
	Status string    `json:"status"`
	Alerts []amAlert `json:"alerts"`
}

// startAlertmanager runs Alertmanager until the test ends. Notifications are
// grouped by alertname and sent after one second.
func startAlertmanager(t *testing.T) *alertmanager {
	t.Helper()
	bin := peers.Need(t, peers.Alertmanager)
	am := &alertmanager{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n amNotification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Errorf("webhook notification: %v", err)
		}
		am.mu.Lock()
		am.notifications = append(am.notifications, n)
		am.mu.Unlock()
	}))
	t.Cleanup(hook.Close)

	dir := t.TempDir()
	cfg := fmt.Sprintf(`
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: %s
        send_resolved: true
`, hook.URL)
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	am.Addr = freeAddr(t)
	am.URL = "http://" + am.Addr
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+am.Addr,
		"--cluster.listen-address=",
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	eventually(t, 30*time.Second, "alertmanager ready", func() bool {
		resp, err := http.Get(am.URL + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return am
}

// alerts returns the active alerts Alertmanager holds (GET /api/v2/alerts).
func (am *alertmanager) alerts(t *testing.T) []amAlert {
	t.Helper()
	resp, err := http.Get(am.URL + "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("alertmanager GET /api/v2/alerts: %d %s", resp.StatusCode, b)
	}
	var out []amAlert
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("alertmanager alerts: %v: %s", err, b)
	}
	return out
}

// received returns the notifications delivered to the webhook so far.
func (am *alertmanager) received() []amNotification {
	am.mu.Lock()
	defer am.mu.Unlock()
	return append([]amNotification(nil), am.notifications...)
}

// alertmanagingConfig is the meshlens alerting section that points at am.
func (am *alertmanager) config() string {
	return fmt.Sprintf(`
alerting:
  alertmanagers:
    - static_configs:
        - targets: [%q]
      timeout: 5s
`, am.Addr)
}
