// Command bench-rules measures the evaluation of the built-in mesh rule packs
// on a simulated mesh: it starts a receiver, fills a few minutes of the
// mesh, keeps meshsim sending in real time, and reads each rule group's
// evaluation time from /api/v1/rules — for meshlens storing every series,
// meshlens with the stream aggregation of config/testdata/large-mesh.good.yml
// and, in the same run on the same machine, Prometheus evaluating the same
// packs (rendered with their defaults) over the same remote-written data.
//
// The default sender is meshsim backfill, then meshsim run (Prometheus's
// own remote-write queue). -sender load uses meshsim load over every series
// of the mesh instead (built with -tags dedupelabels, encoding per request):
// the only sender that holds a 10,000-service mesh on this machine. Its
// counters grow at constant per-series rates, so the history is the
// warm-up itself.
//
//	go run ./scripts/bench-rules [-services 100] [-clusters 2] [-history 6m] [-measure 3m] [-only meshlens,prometheus]
//	go run ./scripts/bench-rules -sender load -services 10000 -interval 60s -only meshlens-aggregated
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshlens/meshlens/internal/peers"
	"github.com/meshlens/meshlens/internal/procstat"
	"github.com/meshlens/meshlens/rules/packs"
)

type result struct {
	Receiver    string
	Series      float64
	Groups      int
	Rules       int
	EvalSeconds float64 // sum over groups of one evaluation, averaged over samples
	Slowest     float64 // slowest group's evaluation
	SlowestName string
	CPUPerIntvl float64 // receiver CPU-seconds per evaluation interval (ingest included)
	RSSBytes    int64
}

func main() {
	services := flag.Int("services", 100, "simulated services")
	clusters := flag.Int("clusters", 2, "simulated clusters")
	history := flag.Duration("history", 6*time.Minute, "history backfilled before measuring (rate windows need 5m)")
	measure := flag.Duration("measure", 3*time.Minute, "real-time measuring window")
	only := flag.String("only", "", "comma-separated receivers to run: meshlens, meshlens-aggregated, prometheus (default all)")
	sender := flag.String("sender", "run", "run (meshsim backfill, then meshsim run) or load (meshsim load over the whole mesh)")
	scrape := flag.Duration("interval", 15*time.Second, "scrape interval of the simulated Prometheus servers")
	evalInterval := flag.Duration("evaluation-interval", 30*time.Second, "rule evaluation interval")
	flag.Parse()
	interval := *evalInterval
	aggregation, err := os.ReadFile(filepath.Join("config", "testdata", "large-mesh.good.yml"))
	check(err)

	dir, err := os.MkdirTemp("", "bench-rules")
	check(err)
	defer os.RemoveAll(dir)
	meshlens, meshsim, err := procstat.BuildCommands(dir)
	check(err)
	if *sender == "load" {
		meshsim, err = procstat.BuildCompactMeshsim(dir)
		check(err)
	}
	rulesDir := filepath.Join(dir, "rules")
	check(os.MkdirAll(rulesDir, 0o755))
	for _, name := range packs.Names() {
		b, err := packs.Render(name, nil, "")
		check(err)
		check(os.WriteFile(filepath.Join(rulesDir, name+".yml"), b, 0o644))
	}

	var results []result
	for _, rc := range []struct {
		name string
		args func(addr, data string) []string
		bin  func() string
	}{
		{"meshlens", meshlensArgs(interval, ""), func() string { return meshlens }},
		{"meshlens-aggregated", meshlensArgs(interval, string(aggregation)), func() string { return meshlens }},
		{"prometheus v0.316.0", func(addr, data string) []string {
			cfg := filepath.Join(data, "prometheus.yml")
			check(os.MkdirAll(data, 0o755))
			check(os.WriteFile(cfg, []byte(fmt.Sprintf("global:\n  evaluation_interval: %s\nrule_files: [%q]\n", interval, filepath.Join(rulesDir, "*.yml"))), 0o644))
			return []string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(data, "tsdb"),
				"--web.listen-address=" + addr, "--web.enable-remote-write-receiver", "--log.level=warn"}
		}, func() string {
			bin, err := peers.Build(peers.Prometheus)
			check(err)
			return bin
		}},
	} {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), strings.Fields(rc.name)[0]) {
			continue
		}
		addr := procstat.Must(procstat.FreeAddr())
		data := filepath.Join(dir, strings.Fields(rc.name)[0]+"-data")
		cmd := exec.Command(rc.bin(), rc.args(addr, data)...)
		cmd.Stderr = os.Stderr
		check(cmd.Start())
		check(procstat.WaitReady("http://"+addr+"/-/ready", time.Minute))
		url := "http://" + addr + "/api/v1/write"
		mesh := []string{"--services=" + strconv.Itoa(*services), "--clusters=" + strconv.Itoa(*clusters), "--url=" + url, "--progress=0"}

		var live *exec.Cmd
		if *sender == "load" {
			fmt.Fprintf(os.Stderr, "== %s: every series of %d services once per %s, %s of warm-up\n", rc.name, *services, *scrape, *history)
			live = exec.Command(meshsim, "load", "--url="+url, "--series=0", "--services="+strconv.Itoa(*services),
				"--clusters="+strconv.Itoa(*clusters), "--mix=all", "--interval="+scrape.String(), "--concurrency=4",
				"--duration="+(*history+*measure+10*time.Minute).String(), "--progress=1m")
			live.Stderr = os.Stderr
			check(live.Start())
			for headSeries("http://"+addr) == 0 { // the mesh is being built
				time.Sleep(time.Second)
			}
			time.Sleep(*history)
		} else {
			fmt.Fprintf(os.Stderr, "== %s: backfilling %s of %d services\n", rc.name, *history, *services)
			backfill := exec.Command(meshsim, append([]string{"backfill", "--interval=" + scrape.String(), "--hours=" + strconv.FormatFloat(history.Hours(), 'f', -1, 64)}, mesh...)...)
			backfill.Stderr = os.Stderr
			check(backfill.Run())

			fmt.Fprintf(os.Stderr, "== %s: measuring for %s\n", rc.name, *measure)
			live = exec.Command(meshsim, append([]string{"run", "--interval=" + scrape.String(), "--duration=" + measure.String()}, mesh...)...)
			live.Stderr = os.Stderr
			check(live.Start())
		}
		time.Sleep(2 * interval) // every group evaluates over live data
		cpu0, start := procstat.Must(procstat.CPUSeconds(cmd.Process.Pid)), time.Now()
		var r result
		samples := 0
		for time.Since(start) < *measure-3*interval {
			time.Sleep(interval)
			g := ruleGroups("http://" + addr)
			var sum float64
			slowest, slowestName := 0.0, ""
			r.Groups, r.Rules = len(g), 0
			for _, gr := range g {
				sum += gr.EvaluationTime
				r.Rules += len(gr.Rules)
				if gr.EvaluationTime > slowest {
					slowest, slowestName = gr.EvaluationTime, gr.Name
				}
			}
			r.EvalSeconds += sum
			if slowest > r.Slowest {
				r.Slowest, r.SlowestName = slowest, slowestName
			}
			samples++
		}
		r.Receiver = rc.name
		r.EvalSeconds /= float64(max(samples, 1))
		r.CPUPerIntvl = (procstat.Must(procstat.CPUSeconds(cmd.Process.Pid)) - cpu0) / (time.Since(start).Seconds() / interval.Seconds())
		r.RSSBytes = procstat.Must(procstat.RSSBytes(cmd.Process.Pid))
		r.Series = headSeries("http://" + addr)
		if *sender == "load" {
			_ = live.Process.Signal(os.Interrupt)
		}
		_ = live.Wait()
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		results = append(results, r)
	}

	fmt.Printf("%d services, %d clusters, scrape interval %s, evaluation interval %s, sender meshsim %s\n\n", *services, *clusters, *scrape, interval, *sender)
	fmt.Printf("| receiver | head series | groups | rules | evaluation time per interval (sum of groups) | slowest group | receiver CPU-s per interval (ingest included) | RSS |\n")
	fmt.Printf("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Printf("| %s | %.0f | %d | %d | %.3f s | %.3f s (%s) | %.2f | %.0f MiB |\n", r.Receiver, r.Series, r.Groups, r.Rules,
			r.EvalSeconds, r.Slowest, r.SlowestName, r.CPUPerIntvl, float64(r.RSSBytes)/(1<<20))
	}
	for _, r := range results[:max(len(results)-1, 0)] {
		if p := results[len(results)-1]; strings.HasPrefix(p.Receiver, "prometheus") {
			fmt.Printf("\n%s / %s: evaluation time %.2fx, CPU %.2fx, RSS %.2fx", r.Receiver, p.Receiver,
				r.EvalSeconds/p.EvalSeconds, r.CPUPerIntvl/p.CPUPerIntvl, float64(r.RSSBytes)/float64(p.RSSBytes))
		}
	}
	fmt.Println()
}

// meshlensArgs returns the command line of a meshlens evaluating rules every
// interval, with extra appended to its configuration.
func meshlensArgs(interval time.Duration, extra string) func(addr, data string) []string {
	return func(addr, data string) []string {
		cfg := filepath.Join(data, "meshlens.yml")
		check(os.MkdirAll(data, 0o755))
		check(os.WriteFile(cfg, []byte(fmt.Sprintf("rules:\n  evaluation_interval: %s\n%s", interval, extra)), 0o644))
		return []string{"--listen=" + addr, "--data-dir=" + data, "--config=" + cfg, "--log.level=warn"}
	}
}

type group struct {
	Name           string            `json:"name"`
	EvaluationTime float64           `json:"evaluationTime"`
	Rules          []json.RawMessage `json:"rules"`
}

func ruleGroups(base string) []group {
	var env struct {
		Data struct {
			Groups []group `json:"groups"`
		} `json:"data"`
	}
	getJSON(base+"/api/v1/rules?exclude_alerts=true", &env)
	return env.Data.Groups
}

func headSeries(base string) float64 {
	var env struct {
		Data struct {
			HeadStats struct {
				NumSeries float64 `json:"numSeries"`
			} `json:"headStats"`
		} `json:"data"`
	}
	getJSON(base+"/api/v1/status/tsdb", &env)
	return env.Data.HeadStats.NumSeries
}

func getJSON(url string, v any) {
	resp, err := http.Get(url)
	check(err)
	defer resp.Body.Close()
	check(json.NewDecoder(resp.Body).Decode(v))
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-rules: "+format+"\n", args...)
	os.Exit(1)
}
