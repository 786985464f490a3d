package peers

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// JaegerServer is a running Jaeger v2 all-in-one with memory storage, listening
// on loopback ports of its own.
type JaegerServer struct {
	// OTLPHTTP is the OTLP/HTTP traces URL: "http://127.0.0.1:PORT/v1/traces".
	OTLPHTTP string
	// OTLPGRPC is the OTLP/gRPC address: "127.0.0.1:PORT".
	OTLPGRPC string
	// Zipkin is the Zipkin v2 spans URL: "http://127.0.0.1:PORT/api/v2/spans".
	Zipkin string
	// Query is the base URL of the query service (UI and HTTP API:
	// /api/services, /api/traces/{id}, /api/v3/...): "http://127.0.0.1:PORT".
	Query string
	// QueryGRPC is the address of the query service's gRPC API (api_v2 and
	// api_v3).
	QueryGRPC string
	// Config is the path of the configuration Jaeger runs with.
	Config string
}

// jaegerConfig is the configuration of StartJaeger, after the all-in-one
// configuration embedded in Jaeger (cmd/jaeger/internal/all-in-one.yaml)
// with only what the tests use: OTLP and Zipkin receivers, memory storage,
// the query service, no batching (spans are stored as they arrive) and no
// telemetry listener. Jaeger's tracing of its own queries is off: it would
// send spans to an OTLP endpoint at localhost:4317 (meshlens's, in a test
// that runs both) and delay Jaeger's shutdown by ten seconds while it cannot
// reach one. The UI is a placeholder (the assets are not embedded in a
// plain go build); the API is complete. The placeholders are the storage
// backend, then the ports (see JaegerConfig).
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      store:
%[1]s
  jaeger_query:
    enable_tracing: false
    storage:
      traces: store
    http:
      endpoint: 127.0.0.1:%[5]d
    grpc:
      endpoint: 127.0.0.1:%[6]d

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%[2]d
      http:
        endpoint: 127.0.0.1:%[3]d
  zipkin:
    endpoint: 127.0.0.1:%[4]d

exporters:
  jaeger_storage_exporter:
    trace_storage: store
`

// Jaeger's storage backends for JaegerConfig: memory with the all-in-one's
// default max_traces, and badger on disk under dir with its defaults (no
// fsync per write).
const JaegerMemory = `        memory:
          max_traces: 100000`

// JaegerBadger is the badger backend keeping its data under dir.
func JaegerBadger(dir string) string {
	return fmt.Sprintf(`        badger:
          directories:
            keys: %[1]s/badger/keys
            values: %[1]s/badger/values
          ephemeral: false
          ttl:
            spans: 48h`, dir)
}

// JaegerConfig is Jaeger's configuration with the given storage backend
// (JaegerMemory, JaegerBadger) on the given loopback ports: OTLP gRPC,
// OTLP HTTP, Zipkin, query HTTP, query gRPC.
func JaegerConfig(backend string, ports [5]int) string {
	return fmt.Sprintf(jaegerConfig, backend, ports[0], ports[1], ports[2], ports[3], ports[4])
}

// StartJaeger runs Jaeger (building it first if needed, see Need) on free
// loopback ports, waits until it accepts spans and queries, and stops it
// when the test ends. Its log is printed if the test failed.
func StartJaeger(t testing.TB) *JaegerServer {
	t.Helper()
	bin := Need(t, Jaeger)
	dir := t.TempDir()
	var err error
	// A free port can be taken between finding it and Jaeger binding it:
	// try again with others.
	for attempt := 0; attempt < 3; attempt++ {
		var j *JaegerServer
		if j, err = startJaeger(t, bin, dir, attempt); err == nil {
			return j
		}
	}
	t.Fatalf("start jaeger: %v", err)
	return nil
}

func startJaeger(t testing.TB, bin, dir string, attempt int) (*JaegerServer, error) {
	ports, err := FreePorts(5)
	if err != nil {
		return nil, err
	}
	j := &JaegerServer{
		OTLPGRPC:  fmt.Sprintf("127.0.0.1:%d", ports[0]),
		OTLPHTTP:  fmt.Sprintf("http://127.0.0.1:%d/v1/traces", ports[1]),
		Zipkin:    fmt.Sprintf("http://127.0.0.1:%d/api/v2/spans", ports[2]),
		Query:     fmt.Sprintf("http://127.0.0.1:%d", ports[3]),
		QueryGRPC: fmt.Sprintf("127.0.0.1:%d", ports[4]),
		Config:    filepath.Join(dir, fmt.Sprintf("jaeger-%d.yaml", attempt)),
	}
	cfg := JaegerConfig(JaegerMemory, [5]int(ports))
	if err := os.WriteFile(j.Config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, fmt.Sprintf("jaeger-%d.log", attempt))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	cmd := exec.Command(bin, "--config", j.Config)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	logTail := func() string {
		b, _ := os.ReadFile(logPath)
		if len(b) > 8<<10 {
			b = b[len(b)-8<<10:]
		}
		return string(b)
	}

	if err := waitJaeger(j, exited); err != nil {
		stop()
		return nil, fmt.Errorf("%w\njaeger log:\n%s", err, logTail())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("jaeger log (%s):\n%s", logPath, logTail())
		}
	})
	return j, nil
}

// waitJaeger waits until Jaeger's query API answers and its receivers
// listen (the collector starts receivers last).
func waitJaeger(j *JaegerServer, exited <-chan struct{}) error {
	addrs := []string{j.OTLPGRPC, hostPort(j.OTLPHTTP), hostPort(j.Zipkin), j.QueryGRPC}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("jaeger exited while starting")
		default:
		}
		if ready(client, j.Query+"/api/services", addrs) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jaeger not ready after 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ready(client *http.Client, url string, addrs []string) bool {
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// hostPort is the host:port of an http:// URL.
func hostPort(url string) string {
	s := strings.TrimPrefix(url, "http://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return s
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
