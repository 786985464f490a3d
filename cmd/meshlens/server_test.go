package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testServer is a meshlens started in-process on a free port.
type testServer struct {
	*Main
	URL string

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan error
}

// stop shuts the server down and waits for it, as at the end of the test.
func (s *testServer) stop(t *testing.T) {
	s.stopOnce.Do(func() {
		s.cancel()
		if err := <-s.done; err != nil {
			t.Errorf("meshlens run: %v", err)
		}
	})
}

// startServer runs meshlens with the given YAML configuration (none when
// empty) in dir (a new temporary directory when empty), until the test ends.
func startServer(t *testing.T, yaml, dir string) *testServer {
	t.Helper()
	return startMain(t, yaml, dir, nil)
}

// startServerFlags is startServer with command-line flags.
func startServerFlags(t *testing.T, yaml, dir string, flags ...string) *testServer {
	t.Helper()
	return startMain(t, yaml, dir, func(m *Main) {
		if err := m.ParseFlags(flags); err != nil {
			t.Fatal(err)
		}
	})
}

// startMain is startServer with setup changing the Main (its flags)
// before it opens; with a web configuration file the URL is https.
func startMain(t *testing.T, yaml, dir string, setup func(m *Main)) *testServer {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	m := NewMain()
	m.Listen = "127.0.0.1:0"
	m.DataDir = dir
	m.LogLevel = "warn"
	m.Stderr = testLog{t}
	if setup != nil {
		setup(m)
	}
	if yaml != "" {
		m.ConfigFile = filepath.Join(dir, "meshlens.yml")
		if err := os.WriteFile(m.ConfigFile, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	scheme := "http://"
	if m.WebConfigFile != "" {
		scheme = "https://"
	}
	s := &testServer{Main: m, URL: scheme + m.Addr(), cancel: cancel, done: done}
	t.Cleanup(func() { s.stop(t) })
	// Queries and writes are answered once the TSDB replayed its WAL.
	ready := make(chan error, 1)
	go func() { ready <- m.WaitReady(ctx) }()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-done:
		done <- err // for stop
		t.Fatalf("meshlens stopped before it was ready: %v", err)
	}
	return s
}

// get returns the status and body of a GET.
func (s *testServer) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(s.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(string(p))
	return len(p), nil
}

// eventually polls cond until it is true or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
