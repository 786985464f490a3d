package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
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
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
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

// TestAcknowledgedSpansSurviveSIGKILL sends OTLP/HTTP span requests to a
// meshlens child process, kills it with SIGKILL mid-stream, restarts on the
// same data directory and checks that every trace of every request answered
// 200 before the kill is found with all its spans.
func TestAcknowledgedSpansSurviveSIGKILL(t *testing.T) {
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
	eventually(t, 30*time.Second, "child meshlens ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// Request i holds 4 traces of 5 spans each; their ids encode i.
	const tracesPerReq, spansPerTrace = 4, 5
	traceID := func(req, n int) pcommon.TraceID {
		var id pcommon.TraceID
		binary.BigEndian.PutUint64(id[0:8], 0x6d6573686c656e73) // never zero
		binary.BigEndian.PutUint32(id[8:12], uint32(req))
		binary.BigEndian.PutUint32(id[12:16], uint32(n))
		return id
	}
	now := time.Now()
	acked := 0
	killed := make(chan struct{})
	go func() {
		time.Sleep(1500 * time.Millisecond)
		child.Process.Signal(syscall.SIGKILL)
		close(killed)
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 1; ; i++ {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "durable")
		ss := rs.ScopeSpans().AppendEmpty()
		for n := range tracesPerReq {
			for k := range spansPerTrace {
				sp := ss.Spans().AppendEmpty()
				sp.SetTraceID(traceID(i, n))
				sp.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, byte(n), byte(k + 1)})
				if k > 0 {
					sp.SetParentSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, byte(n), 1})
				}
				sp.SetName(fmt.Sprintf("op-%d", k))
				sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(k) * time.Millisecond)))
				sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(k+1) * time.Millisecond)))
			}
		}
		b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Post("http://"+addr+"/v1/traces", "application/x-protobuf", bytes.NewReader(b))
		if err != nil {
			break // the child is gone
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
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
	for i := 1; i <= acked; i++ {
		for n := range tracesPerReq {
			id := hex.EncodeToString(func() []byte { x := traceID(i, n); return x[:] }())
			if got := tempoSpanCount(t, s, "/api/traces/"+id, "application/protobuf"); got != spansPerTrace {
				t.Fatalf("request %d of %d acknowledged: trace %s has %d spans after restart, want %d", i, acked, id, got, spansPerTrace)
			}
		}
	}
	t.Logf("%d requests (%d spans) acknowledged before SIGKILL, all present after restart", acked, acked*tracesPerReq*spansPerTrace)
}
