package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshlens/meshlens/tsdb"
)

// TestLifecycleReadyAfterReplay holds the TSDB's opening (WAL replay) and
// checks that the server answers 503 to /-/ready, queries and writes until
// it is open, as Prometheus does, and serves /-/healthy and /metrics
// meanwhile.
func TestLifecycleReadyAfterReplay(t *testing.T) {
	m := NewMain()
	m.Listen = "127.0.0.1:0"
	m.DataDir = t.TempDir()
	m.LogLevel = "warn"
	m.Stderr = testLog{t}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	open, release := m.openDB, make(chan struct{})
	m.openDB = func() (*tsdb.DB, error) { <-release; return open() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	s := &testServer{Main: m, URL: "http://" + m.Addr(), cancel: cancel, done: done}
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
		s.stop(t)
	})

	for _, p := range []string{"/-/ready", "/api/v1/query?query=1", "/api/v1/labels", "/api/v1/metadata"} {
		if code, _ := s.get(t, p); code != http.StatusServiceUnavailable {
			t.Errorf("GET %s during replay: %d, want 503", p, code)
		}
	}
	for _, p := range []string{"/api/v1/write", "/api/v1/read"} {
		if code := postRaw(t, s.URL+p, []byte("x")); code != http.StatusServiceUnavailable {
			t.Errorf("POST %s during replay: %d, want 503", p, code)
		}
	}
	if code, _ := s.get(t, "/-/healthy"); code != http.StatusOK {
		t.Errorf("/-/healthy during replay: %d, want 200", code)
	}
	if code, b := s.get(t, "/metrics"); code != http.StatusOK || !strings.Contains(b, "meshlens_build_info") {
		t.Errorf("/metrics during replay: %d", code)
	}

	close(release)
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := m.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/-/ready", "/api/v1/query?query=1"} {
		if code, _ := s.get(t, p); code != http.StatusOK {
			t.Errorf("GET %s once open: %d, want 200", p, code)
		}
	}
}
