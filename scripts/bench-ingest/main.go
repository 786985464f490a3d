// Command bench-ingest measures remote-write ingestion end to end: it starts
// a receiver, drives it with `meshsim load` (Istio-shaped series), and
// reports accepted samples/s, receiver CPU-seconds per million samples and
// receiver RSS per active series — for meshlens and, in the same run on the
// same machine, for Prometheus's own receiver.
//
//	go run ./scripts/bench-ingest [-series 100000] [-duration 60s] [-protocol 1.0] [-rate 0]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshlens/meshlens/internal/peers"
	"github.com/meshlens/meshlens/internal/procstat"
)

type result struct {
	Receiver        string
	SamplesPerSec   float64
	CPUPerMillion   float64
	RSSBytes        int64
	RSSPerSeries    float64
	Accepted        float64
	LatencyP99      float64
	FailedRequests  float64
	CPUSecondsTotal float64
}

func main() {
	series := flag.Int("series", 100000, "active series")
	duration := flag.Duration("duration", 60*time.Second, "load duration per receiver")
	protocol := flag.String("protocol", "1.0", "remote-write protocol: 1.0 or 2.0")
	perRequest := flag.Int("samples-per-request", 2000, "samples per request")
	concurrency := flag.Int("concurrency", 2, "requests in flight")
	only := flag.String("only", "", "run only this receiver (meshlens or prometheus)")
	rate := flag.Float64("rate", 0, "samples/s to send (0: as fast as each receiver accepts); a fixed rate compares memory at equal load")
	flag.Parse()

	dir, err := os.MkdirTemp("", "bench-ingest")
	check(err)
	defer os.RemoveAll(dir)
	meshlens, meshsim, err := procstat.BuildCommands(dir)
	check(err)
	prometheus, err := peers.Build(peers.Prometheus)
	check(err)

	var results []result
	for _, rc := range []struct {
		name string
		args func(addr, data string) []string
		bin  string
		path string
	}{
		{"meshlens", func(addr, data string) []string {
			return []string{"--listen=" + addr, "--data-dir=" + data, "--log.level=warn"}
		}, meshlens, "/api/v1/write"},
		{"prometheus v0.316.0", func(addr, data string) []string {
			cfg := filepath.Join(data, "prometheus.yml")
			os.MkdirAll(data, 0o755)
			check(os.WriteFile(cfg, []byte("global: {}\n"), 0o644))
			return []string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(data, "tsdb"),
				"--web.listen-address=" + addr, "--web.enable-remote-write-receiver", "--log.level=warn"}
		}, prometheus, "/api/v1/write"},
	} {
		if *only != "" && !strings.HasPrefix(rc.name, *only) {
			continue
		}
		addr := procstat.Must(procstat.FreeAddr())
		data := filepath.Join(dir, strings.Fields(rc.name)[0]+"-data")
		cmd := exec.Command(rc.bin, rc.args(addr, data)...)
		cmd.Stderr = os.Stderr
		check(cmd.Start())
		check(procstat.WaitReady("http://"+addr+"/-/ready", time.Minute))
		cpu0 := procstat.Must(procstat.CPUSeconds(cmd.Process.Pid))

		fmt.Fprintf(os.Stderr, "== %s: %d series, %s, protocol %s\n", rc.name, *series, *duration, *protocol)
		load := exec.Command(meshsim, "load", "--url=http://"+addr+rc.path, "--series="+strconv.Itoa(*series),
			"--samples-per-request="+strconv.Itoa(*perRequest), "--protocol="+*protocol,
			"--concurrency="+strconv.Itoa(*concurrency), "--duration="+duration.String(), "--json",
			"--rate="+strconv.FormatFloat(*rate, 'f', -1, 64))
		var out bytes.Buffer
		load.Stdout, load.Stderr = &out, os.Stderr
		check(load.Run())
		cpu := procstat.Must(procstat.CPUSeconds(cmd.Process.Pid)) - cpu0
		rss := procstat.Must(procstat.RSSBytes(cmd.Process.Pid))
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()

		var sum map[string]any
		check(json.Unmarshal(out.Bytes(), &sum))
		accepted := num(sum["samples_accepted"])
		results = append(results, result{
			Receiver:        rc.name,
			SamplesPerSec:   num(sum["accepted_samples_per_second"]),
			Accepted:        accepted,
			CPUSecondsTotal: cpu,
			CPUPerMillion:   cpu / accepted * 1e6,
			RSSBytes:        rss,
			RSSPerSeries:    float64(rss) / float64(*series),
			LatencyP99:      num(sum["request_latency_p99_ms"]),
			FailedRequests:  num(sum["requests_failed"]),
		})
	}

	fmt.Printf("| receiver | accepted samples/s | receiver CPU-s per 1M samples | samples per CPU-s | RSS | RSS per active series | p99 request ms | failed requests |\n")
	fmt.Printf("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Printf("| %s | %.0f | %.2f | %.0f | %.0f MiB | %.0f B | %.1f | %.0f |\n", r.Receiver, r.SamplesPerSec, r.CPUPerMillion,
			1e6/r.CPUPerMillion, float64(r.RSSBytes)/(1<<20), r.RSSPerSeries, r.LatencyP99, r.FailedRequests)
	}
	if len(results) == 2 {
		a, b := results[0], results[1]
		fmt.Printf("\nmeshlens / prometheus: CPU per sample %.2fx, RSS per series %.2fx, throughput %.2fx\n",
			a.CPUPerMillion/b.CPUPerMillion, a.RSSPerSeries/b.RSSPerSeries, a.SamplesPerSec/b.SamplesPerSec)
	}
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-ingest: "+format+"\n", args...)
	os.Exit(1)
}
