package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
)

// TestAcknowledgedSamplesSurviveSIGKILL writes to a meshlens child process,
// kills it with SIGKILL mid-stream, restarts on the same data directory and
// checks that every sample answered with 2xx before the kill is queryable.
func TestAcknowledgedSamplesSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a child process; not in -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "meshlens")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build meshlens: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	data := filepath.Join(dir, "data")
	child := exec.Command(bin, "--listen="+addr, "--data-dir="+data, "--log.level=warn")
	child.Stderr = testLog{t}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr + "/api/v1/write"
	eventually(t, 30*time.Second, "child meshlens ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// Each request carries one new sample for each of 50 series; request i
	// has value i. Requests go out back to back until the kill.
	const nSeries = 50
	start := time.Now().Add(-time.Minute).UnixMilli()
	acked := 0
	killed := make(chan struct{})
	go func() {
		time.Sleep(1500 * time.Millisecond)
		child.Process.Signal(syscall.SIGKILL)
		close(killed)
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 1; ; i++ {
		req := &prompb.WriteRequest{}
		for s := 0; s < nSeries; s++ {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "durable"}, {Name: "series", Value: fmt.Sprint(s)}},
				Samples: []prompb.Sample{{Timestamp: start + int64(i), Value: float64(i)}},
			})
		}
		b, _ := req.Marshal()
		hreq, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(snappy.Encode(nil, b)))
		hreq.Header.Set("Content-Type", "application/x-protobuf")
		hreq.Header.Set("Content-Encoding", "snappy")
		resp, err := client.Do(hreq)
		if err != nil {
			break // the child is gone
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		acked = i
	}
	<-killed
	child.Wait()
	if acked < 10 {
		t.Fatalf("only %d requests acknowledged before the kill; the test needs more to mean anything", acked)
	}

	s := startServer(t, "", data)
	c, _ := promapi.NewClient(promapi.Config{Address: s.URL})
	v, _, _, err := promv1.NewAPI(c).Query(context.Background(), `count_over_time(durable[10m])`, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	vec := v.(model.Vector)
	if len(vec) != nSeries {
		t.Fatalf("after restart %d series, want %d", len(vec), nSeries)
	}
	for _, smp := range vec {
		// Requests after the last acknowledged one may or may not have been
		// stored; none before it may be missing.
		if int(smp.Value) < acked {
			t.Errorf("series %s: %v samples after restart, %d acknowledged", smp.Metric["series"], smp.Value, acked)
		}
	}
	t.Logf("%d requests (%d samples) acknowledged before SIGKILL, all present after restart", acked, acked*nSeries)
}
