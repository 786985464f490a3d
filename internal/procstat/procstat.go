// Package procstat reads what the benchmark commands report about the
// processes they measure: CPU time and resident memory (Linux /proc); it
// waits for a server to become ready and builds the commands they run.
package procstat

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPUSeconds returns the user+system CPU time pid has used.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	const clkTck = 100 // USER_HZ on Linux
	return (utime + stime) / clkTck, nil
}

// RSSBytes returns the resident set size of pid.
func RSSBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// WaitReady polls url until it answers 200 or timeout passes.
func WaitReady(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s", url, timeout)
}

// FreeAddr returns a local TCP address nobody listens on.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Must returns v, or ends the benchmark command when err is not nil.
func Must[T any](v T, err error) T {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return v
}

// BuildCommands builds meshlens and meshsim from the module in the working
// directory into dir and returns their paths.
func BuildCommands(dir string) (meshlens, meshsim string, err error) {
	out, err := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/meshlens", "./cmd/meshsim").CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("go build ./cmd/meshlens ./cmd/meshsim: %w\n%s", err, out)
	}
	return filepath.Join(dir, "meshlens"), filepath.Join(dir, "meshsim"), nil
}

// BuildCompactMeshsim builds meshsim with -tags dedupelabels into dir: its
// label sets share one symbol table, so a mesh of 10,000 services (tens of
// millions of series) fits in a few GiB.
func BuildCompactMeshsim(dir string) (string, error) {
	bin := filepath.Join(dir, "meshsim-compact")
	out, err := exec.Command("go", "build", "-tags", "dedupelabels", "-o", bin, "./cmd/meshsim").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build -tags dedupelabels ./cmd/meshsim: %w\n%s", err, out)
	}
	return bin, nil
}
