// Package peers builds, once per machine, the pinned real programs that the
// end-to-end tests run beside meshlens (Prometheus, Alertmanager, an S3
// server, Jaeger), and finds them for the tests.
//
// Each peer is built from its pinned module into a cache directory
// ($MESHLENS_PEERS_DIR, default $XDG_CACHE_HOME/meshlens-peers) outside the
// project's go.mod. When a peer cannot be built, tests skip locally and fail
// under CI=true, so a missing peer never passes unnoticed.
package peers

import (
	"bytes"
	"encoding/json"
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
	// Package is the package path of the main package, with its version:
	// "github.com/prometheus/prometheus/cmd/prometheus@v0.316.0".
	Package string
	// Module is the path of the module holding Package. Empty: the peer is
	// built with `go install Package`. Set: it is built with `go build`
	// inside a writable copy of the module, with the module's own go.mod
	// in force, replace directives included (which `go install pkg@version`
	// refuses).
	Module string
}

// The pinned peers.
var (
	Prometheus   = Peer{Name: "prometheus", Package: "github.com/prometheus/prometheus/cmd/prometheus@v0.316.0"}
	Promtool     = Peer{Name: "promtool", Package: "github.com/prometheus/prometheus/cmd/promtool@v0.316.0"}
	Alertmanager = Peer{Name: "alertmanager", Package: "github.com/prometheus/alertmanager/cmd/alertmanager@v0.31.1"}
	Amtool       = Peer{Name: "amtool", Package: "github.com/prometheus/alertmanager/cmd/amtool@v0.31.1"}
	Versitygw    = Peer{Name: "versitygw", Package: "github.com/versity/versitygw/cmd/versitygw@v1.8.0"}
	// Jaeger is Jaeger v2, the all-in-one binary built on the OpenTelemetry
	// collector (StartJaeger runs it with memory storage).
	Jaeger = Peer{Name: "jaeger", Package: "github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0", Module: "github.com/jaegertracing/jaeger"}
	// Tracegen generates spans and sends them with OTLP, for benchmarks.
	Tracegen = Peer{Name: "tracegen", Package: "github.com/jaegertracing/jaeger/cmd/tracegen@v1.75.0", Module: "github.com/jaegertracing/jaeger"}
)

// All lists every pinned peer, for the CI setup; the longest build first,
// so the build command's parallel builds end close together.
var All = []Peer{Jaeger, Tracegen, Prometheus, Promtool, Alertmanager, Amtool, Versitygw}

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

// Version is the pinned version, the part of Package after "@".
func (p Peer) Version() string { return p.Package[strings.LastIndex(p.Package, "@")+1:] }

// pkgPath is Package without its version.
func (p Peer) pkgPath() string { return p.Package[:strings.LastIndex(p.Package, "@")] }

// ModulePath is the peer's module: Module when set, otherwise Package's
// path up to its "/cmd/" element (every `go install`ed peer has one). Peers
// of one module share most of their build, so the build command builds
// them one after the other.
func (p Peer) ModulePath() string {
	if p.Module != "" {
		return p.Module
	}
	path := p.pkgPath()
	if i := strings.Index(path, "/cmd/"); i >= 0 {
		return path[:i]
	}
	return path
}

// versionDir keeps each pinned version apart, so a version bump rebuilds.
func (p Peer) versionDir(dir string) string {
	return filepath.Join(dir, p.Name+"-"+p.Version())
}

// locks serialise builds of one peer within the process; the lock file
// does so across processes. Different peers build in parallel.
var locks sync.Map // versionDir → *sync.Mutex

// Build builds the peer if it is not in the cache yet and returns its path.
// Concurrent test binaries serialise on a lock file per peer.
func Build(p Peer) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	vdir := p.versionDir(dir)
	m, _ := locks.LoadOrStore(vdir, new(sync.Mutex))
	m.(*sync.Mutex).Lock()
	defer m.(*sync.Mutex).Unlock()

	bin := filepath.Join(vdir, p.Name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(vdir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
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
	if p.Module != "" {
		return bin, buildInModule(p, vdir, bin)
	}
	cmd := exec.Command("go", "install", p.Package)
	// Outside any module, with the pinned module's own go.mod.
	cmd.Dir = vdir
	cmd.Env = goEnv("GOBIN=" + vdir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", p.Package, err, out)
	}
	return bin, nil
}

// goEnv is the environment of the go commands that build peers: module
// mode, no workspace, go.mod updated as needed.
func goEnv(extra ...string) []string {
	return append(os.Environ(), append([]string{"GOFLAGS=-mod=mod", "GO111MODULE=on", "GOWORK=off"}, extra...)...)
}

// buildInModule builds p's package inside a writable copy of its module
// (the module cache is read-only) and moves the binary to bin.
func buildInModule(p Peer, vdir, bin string) error {
	mod := p.Module + "@" + p.Version()
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = vdir
	cmd.Env = goEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var dl struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &dl); jerr == nil && dl.Error != "" {
		return fmt.Errorf("go mod download %s: %s", mod, dl.Error)
	}
	if err != nil {
		return fmt.Errorf("go mod download %s: %w\n%s%s", mod, err, out, stderr.Bytes())
	}
	if dl.Dir == "" {
		return fmt.Errorf("go mod download %s: no module directory in %q", mod, out)
	}

	src, err := os.MkdirTemp(vdir, "src-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	// CopyFS creates files writable by their owner, so the build may update
	// the copy's go.mod and go.sum and RemoveAll can delete it.
	if err := os.CopyFS(src, os.DirFS(dl.Dir)); err != nil {
		return fmt.Errorf("copy module %s: %w", mod, err)
	}
	rel := "." + strings.TrimPrefix(p.pkgPath(), p.Module)
	tmp := bin + ".tmp"
	cmd = exec.Command("go", "build", "-trimpath", "-o", tmp, rel)
	cmd.Dir = src
	cmd.Env = goEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in a copy of %s: %w\n%s", rel, mod, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return fmt.Errorf("install %s: %w", p.Name, err)
	}
	return nil
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
