// Package peers builds, once per machine, the pinned real programs that the
// end-to-end tests run beside meshlens (Prometheus, Alertmanager, an S3
// server), and finds them for the tests.
//
// Each peer is `go install`ed from its pinned module into a cache directory
// ($MESHLENS_PEERS_DIR, default $XDG_CACHE_HOME/meshlens-peers) outside the
// project's go.mod. When a peer cannot be built, tests skip locally and fail
// under CI=true, so a missing peer never passes unnoticed.
package peers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Peer is a pinned program.
type Peer struct {
	// Name is the binary's name.
	Name string
	// Package is the `go install` argument, with its version.
	Package string
}

// The pinned peers.
var (
	Prometheus   = Peer{"prometheus", "github.com/prometheus/prometheus/cmd/prometheus@v0.316.0"}
	Promtool     = Peer{"promtool", "github.com/prometheus/prometheus/cmd/promtool@v0.316.0"}
	Alertmanager = Peer{"alertmanager", "github.com/prometheus/alertmanager/cmd/alertmanager@v0.31.1"}
	Amtool       = Peer{"amtool", "github.com/prometheus/alertmanager/cmd/amtool@v0.31.1"}
	Versitygw    = Peer{"versitygw", "github.com/versity/versitygw/cmd/versitygw@v1.8.0"}
)

// All lists every pinned peer, for the CI setup.
var All = []Peer{Prometheus, Promtool, Alertmanager, Amtool, Versitygw}

// Dir is the cache directory of built peers.
func Dir() (string, error) {
	if d := os.Getenv("MESHLENS_PEERS_DIR"); d != "" {
		return d, nil
	}
	c, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(c, "meshlens-peers"), nil
}

// versionDir keeps each pinned version apart, so a version bump rebuilds.
func (p Peer) versionDir(dir string) string {
	v := p.Package[strings.LastIndex(p.Package, "@")+1:]
	return filepath.Join(dir, p.Name+"-"+v)
}

var mu sync.Mutex

// Build installs the peer if it is not in the cache yet and returns its path.
// Concurrent test binaries serialise on a lock file.
func Build(p Peer) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	vdir := p.versionDir(dir)
	bin := filepath.Join(vdir, p.Name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("go", "install", p.Package)
	// Outside any module, with the pinned module's own go.mod.
	cmd.Dir = vdir
	cmd.Env = append(os.Environ(), "GOBIN="+vdir, "GOFLAGS=-mod=mod", "GO111MODULE=on", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", p.Package, err, out)
	}
	return bin, nil
}

// Need returns the peer's path for a test. If it cannot be built the test is
// skipped, or fails when CI=true.
func Need(t testing.TB, p Peer) string {
	t.Helper()
	bin, err := Build(p)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("peer %s is required under CI=true: %v", p.Name, err)
		}
		t.Skipf("peer %s not available (set CI=true to make this a failure): %v", p.Name, err)
	}
	return bin
}
