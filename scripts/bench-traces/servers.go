package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshlens/meshlens/internal/peers"
	"github.com/meshlens/meshlens/internal/procstat"
)

// Receivers.
const (
	meshlensName     = "meshlens"
	jaegerMemoryName = "jaeger-memory"
	jaegerBadgerName = "jaeger-badger"
)

// server is a receiver running as a child process.
type server struct {
	name    string
	dir     string // data directory
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}

	// Span endpoints.
	otlpURL, zipkinURL string
	// base is the query API's base URL; meshlens's also serves /metrics.
	base string
	// lookupURL is the trace-by-id URL of a hex trace id.
	lookupURL func(id string) string
	accept    string
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) spanURL(format string) string {
	if format == "otlp" {
		return s.otlpURL
	}
	return s.zipkinURL
}

// stop ends the receiver gracefully (SIGTERM, then SIGKILL after a minute).
func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// logTail is the end of the receiver's log.
func (s *server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return string(b)
}

// run starts bin with args, output to dir/name.log (appended).
func run(name, dir, bin string, args ...string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &server{name: name, dir: dir, logPath: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	runningMu.Lock()
	running = append(running, s)
	runningMu.Unlock()
	return s, nil
}

// running are the receivers started, for stopAll.
var (
	runningMu sync.Mutex
	running   []*server
)

// stopAll stops every receiver still running.
func stopAll() {
	runningMu.Lock()
	defer runningMu.Unlock()
	for _, s := range running {
		select {
		case <-s.exited:
		default:
			s.stop()
		}
	}
}

// meshlensConfig is the configuration file of the latency runs: blocks cut
// soon after the load, and shipped blocks leave the local disk at the
// first retention pass after a restart.
const meshlensConfig = `traces:
  trace_idle: %s
  max_block_duration: %s
storage:
  local_retention: %s
`

// startMeshlens runs meshlens on dir with --log.level=warn; cfg, when not
// empty, is its configuration file's content.
func startMeshlens(bin, dir, cfg string) (*server, error) {
	addr, err := procstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"--listen=" + addr, "--data-dir=" + filepath.Join(dir, "data"), "--log.level=warn"}
	if cfg != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		path := filepath.Join(dir, "meshlens.yml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		args = append(args, "--config="+path)
	}
	s, err := run(meshlensName, dir, bin, args...)
	if err != nil {
		return nil, err
	}
	base := "http://" + addr
	s.base, s.otlpURL, s.zipkinURL = base, base+"/v1/traces", base+"/api/v2/spans"
	s.lookupURL = func(id string) string { return base + "/api/traces/" + id }
	s.accept = "application/protobuf"
	if err := waitUntil(s, time.Minute, func() bool { return httpOK(base + "/-/ready") }); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// startJaeger runs Jaeger with the named backend on free loopback ports.
func startJaeger(bin, name, dir string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	backend := peers.JaegerMemory
	if name == jaegerBadgerName {
		backend = peers.JaegerBadger(dir)
	}
	var lastErr error
	// A free port can be taken before Jaeger binds it: try others.
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := peers.FreePorts(5)
		if err != nil {
			return nil, err
		}
		cfg := filepath.Join(dir, "jaeger.yaml")
		if err := os.WriteFile(cfg, []byte(peers.JaegerConfig(backend, [5]int(ports))), 0o644); err != nil {
			return nil, err
		}
		s, err := run(name, dir, bin, "--config", cfg)
		if err != nil {
			return nil, err
		}
		s.otlpURL = fmt.Sprintf("http://127.0.0.1:%d/v1/traces", ports[1])
		s.zipkinURL = fmt.Sprintf("http://127.0.0.1:%d/api/v2/spans", ports[2])
		s.base = fmt.Sprintf("http://127.0.0.1:%d", ports[3])
		s.lookupURL = func(id string) string { return s.base + "/api/traces/" + id }
		s.accept = "application/json"
		addrs := []string{fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1]),
			fmt.Sprintf("127.0.0.1:%d", ports[2]), fmt.Sprintf("127.0.0.1:%d", ports[4])}
		err = waitUntil(s, time.Minute, func() bool { return httpOK(s.base+"/api/services") && listening(addrs) })
		if err == nil {
			return s, nil
		}
		s.stop()
		lastErr = err
	}
	return nil, lastErr
}

// waitUntil polls ok until it holds, the process exits or timeout passes.
func waitUntil(s *server, timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited; its log ends:\n%s", s.name, s.logTail())
		default:
		}
		if ok() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s; its log ends:\n%s", s.name, timeout, s.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var quickClient = &http.Client{Timeout: 5 * time.Second}

func httpOK(url string) bool {
	resp, err := quickClient.Get(url)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func listening(addrs []string) bool {
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// metrics reads meshlens's /metrics: the value of each series without
// labels.
func (s *server) metrics() (map[string]float64, error) {
	resp, err := quickClient.Get(s.base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", s.base, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		i := bytes.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(line[i+1:]), 64)
		if err != nil {
			continue
		}
		out[string(line[:i])] = v
	}
	return out, sc.Err()
}

// waitMetrics polls meshlens's metrics until ok holds.
func (s *server) waitMetrics(timeout time.Duration, what string, ok func(m map[string]float64) bool) error {
	var last map[string]float64
	err := waitUntil(s, timeout, func() bool {
		m, err := s.metrics()
		if err != nil {
			return false
		}
		last = m
		return ok(m)
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w (span store metrics: %s)", what, err, storeMetrics(last))
	}
	return nil
}

func storeMetrics(m map[string]float64) string {
	var parts []string
	for _, k := range []string{"meshlens_traces_head_spans", "meshlens_traces_blocks_cut_total", "meshlens_traces_blocks_shipped_total",
		"meshlens_traces_local_blocks", "meshlens_traces_bucket_blocks", "meshlens_traces_bucket_blocks_downloaded_total"} {
		parts = append(parts, fmt.Sprintf("%s=%g", strings.TrimPrefix(k, "meshlens_traces_"), m[k]))
	}
	return strings.Join(parts, " ")
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// peakRSS is the VmHWM of pid: the largest resident set it had.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}
