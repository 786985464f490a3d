package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/meshlens/meshlens/internal/peers"
)

// TestRealPrometheusRemoteWrite runs the pinned Prometheus, which scrapes a
// fixture of Istio-shaped metrics and remote-writes it to two meshlens
// servers, one with protocol 1.0 and one with 2.0. Both must then answer
// queries for the scraped series.
func TestRealPrometheusRemoteWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real Prometheus; not in -short")
	}
	bin := peers.Need(t, peers.Prometheus)
	target := istioTarget(t)

	v1, v2 := startServer(t, "", ""), startServer(t, "", "")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
global:
  scrape_interval: 1s
  external_labels:
    cluster: east
scrape_configs:
  - job_name: istio-mesh
    static_configs:
      - targets: [%q]
remote_write:
  - url: %s/api/v1/write
    protobuf_message: prometheus.WriteRequest
    queue_config: {batch_send_deadline: 500ms}
    metadata_config: {send_interval: 1s}
  - url: %s/api/v1/push
    protobuf_message: io.prometheus.write.v2.Request
    queue_config: {batch_send_deadline: 500ms}
`, target.Listener.Addr().String(), v1.URL, v2.URL)
	runPrometheus(t, bin, dir, cfg)

	for _, s := range []struct {
		name string
		srv  *testServer
	}{{"1.0", v1}, {"2.0", v2}} {
		c, err := promapi.NewClient(promapi.Config{Address: s.srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		api := promv1.NewAPI(c)
		query := func(q string) model.Vector {
			v, _, _, err := api.Query(context.Background(), q, time.Now())
			if err != nil {
				t.Fatalf("%s: query %s: %v", s.name, q, err)
			}
			return v.(model.Vector)
		}
		eventually(t, 60*time.Second, s.name+" series from Prometheus", func() bool {
			return len(query(`pilot_xds{cluster="east",job="istio-mesh"}`)) == 1
		})
		vec := query(`istio_requests_total{cluster="east",response_flags="UO"}`)
		if len(vec) != 1 || vec[0].Value != 7 || vec[0].Metric["destination_principal"] != "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews" {
			t.Errorf("%s: istio_requests_total{response_flags=UO} = %v, want 7 with all Istio labels", s.name, vec)
		}
		vec = query(`histogram_quantile(0.5, sum by (le) (istio_request_duration_milliseconds_bucket{cluster="east"}))`)
		if len(vec) != 1 || vec[0].Value <= 5 || vec[0].Value > 25 {
			t.Errorf("%s: median latency = %v, want within the (5,25] bucket", s.name, vec)
		}
		if s.name == "1.0" {
			eventually(t, 30*time.Second, "metadata from Prometheus", func() bool {
				md, err := api.Metadata(context.Background(), "istio_request_duration_milliseconds", "")
				return err == nil && len(md["istio_request_duration_milliseconds"]) == 1 && md["istio_request_duration_milliseconds"][0].Type == promv1.MetricTypeHistogram
			})
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runPrometheus runs the Prometheus binary bin with the configuration cfg,
// its data in dir, until the test ends.
func runPrometheus(t *testing.T, bin, dir, cfg string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+freeAddr(t),
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
}

// istioTarget serves testdata/istio_metrics.prom for Prometheus to scrape,
// until the test ends.
func istioTarget(t *testing.T) *httptest.Server {
	t.Helper()
	fixture, err := os.ReadFile(filepath.Join("..", "..", "testdata", "istio_metrics.prom"))
	if err != nil {
		t.Fatal(err)
	}
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Write(fixture)
	}))
	t.Cleanup(target.Close)
	return target
}
