// Command bench-bucket measures the life of metric data in the bucket on a
// simulated mesh: it starts meshlens with a short storage.local_retention,
// backfills days of the mesh with `meshsim backfill`, waits until every
// block cut from the head is shipped, stops meshlens and runs
// `meshlens compact --once` until a pass changes nothing, then restarts
// meshlens with an empty bucket cache and times golden-signal range
// queries over the whole history, cold (first query) and warm (median of
// repeats). It reports ingest rate, bucket bytes per sample before and
// after compaction, compaction throughput and query latency.
//
//	go run ./scripts/bench-bucket [-services 2] [-clusters 1] [-days 7] [-interval 1m]
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshlens/meshlens/internal/procstat"
)

// blockRange is the range of the blocks the head cuts
// (storage.tsdb.min_block_duration, left at its default).
const blockRange = 2 * time.Hour

// queries are the golden signals read back over the whole history. The
// last uses a window long enough for 5m-resolution data (which queries
// with a step of 25m or more read), to tell the data of downsampled blocks
// apart from what a 5m window makes of it.
var queries = []struct{ name, expr string }{
	{"request rate", `sum by (destination_service_name) (rate(istio_requests_total{reporter="destination"}[5m]))`},
	{"p99 latency", `histogram_quantile(0.99, sum by (le, destination_service_name) (rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[5m])))`},
	{"request rate, 1h window", `sum by (destination_service_name) (rate(istio_requests_total{reporter="destination"}[1h]))`},
}

var steps = []time.Duration{time.Hour, 5 * time.Minute}

var (
	bin     struct{ meshlens, meshsim string }
	dataDir string
	cfgFile string
	server  *exec.Cmd // The running meshlens, stopped by fatalf too.
	workDir string
	keep    bool
)

func main() {
	services := flag.Int("services", 2, "simulated services")
	clusters := flag.Int("clusters", 1, "simulated clusters")
	days := flag.Float64("days", 7, "days of history to backfill")
	interval := flag.Duration("interval", time.Minute, "scrape interval of the simulated Prometheus servers")
	// 2.0 by default: meshsim spends almost twice the CPU encoding 1.0, and
	// on two cores that makes the backfill of the default week take about
	// 13 minutes instead of 8 (52K against 85K samples/s on 12h of 2
	// services).
	protocol := flag.String("protocol", "2.0", "remote-write protocol of the backfill: 1.0 or 2.0")
	warm := flag.Int("warm", 5, "warm repeats of each query (the median is reported)")
	flag.BoolVar(&keep, "keep", false, "keep the data directory (printed at the end) for inspection")
	flag.Parse()
	cmdline := "go run ./scripts/bench-bucket " + strings.Join(os.Args[1:], " ")
	if len(os.Args) == 1 {
		cmdline = fmt.Sprintf("go run ./scripts/bench-bucket -services %d -clusters %d -days %g -interval %s", *services, *clusters, *days, shortDur(*interval))
	}

	var err error
	workDir, err = os.MkdirTemp("", "bench-bucket")
	check(err)
	defer cleanup()
	bin.meshlens, bin.meshsim, err = procstat.BuildCommands(workDir)
	check(err)
	dataDir = filepath.Join(workDir, "data")
	check(os.MkdirAll(dataDir, 0o755))
	cfgFile = filepath.Join(workDir, "meshlens.yml")
	// Blocks leave local disk an hour after their end once shipped, so
	// queries of the history read the bucket. compact.New reads a
	// delete_delay of 0 as 48h; 1ms deletes what a pass marked at the
	// end of that pass.
	check(os.WriteFile(cfgFile, []byte("storage:\n  local_retention: 1h\ncompactor:\n  delete_delay: 1ms\n"), 0o644))

	span := time.Duration(*days * 24 * float64(time.Hour))
	end := time.Now().Truncate(*interval)
	start := end.Add(-span)

	// 1. Ingest.
	addr := startServer()
	base := "http://" + addr
	m0 := scrape(base)
	cpu0 := procstat.Must(procstat.CPUSeconds(server.Process.Pid))
	progress("ingest: backfilling %s of %d services in %d clusters every %s (%s .. %s)", span, *services, *clusters, *interval,
		start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339))
	backfill := exec.Command(bin.meshsim, "backfill", "--url="+base+"/api/v1/write",
		"--services="+strconv.Itoa(*services), "--clusters="+strconv.Itoa(*clusters),
		"--hours="+strconv.FormatFloat(span.Hours(), 'f', -1, 64), "--interval="+interval.String(),
		"--end="+end.UTC().Format(time.RFC3339), "--protocol="+*protocol,
		// With the default 5s the queues wait for partial batches and
		// both processes idle part of the time (45K against 70K
		// samples/s on 6h of 2 services).
		"--batch-send-deadline=200ms",
		"--progress=1m")
	backfill.Stdout, backfill.Stderr = os.Stderr, os.Stderr
	t0 := time.Now()
	check(backfill.Run())
	ingestWall := time.Since(t0)
	m1 := scrape(base)
	load := map[string]string{"ingest": loadAvg()}
	ingestCPU := procstat.Must(procstat.CPUSeconds(server.Process.Pid)) - cpu0
	ingestRSS := procstat.Must(procstat.RSSBytes(server.Process.Pid))
	samples := m1["prometheus_tsdb_head_samples_appended_total"] - m0["prometheus_tsdb_head_samples_appended_total"]
	rejected := m1["prometheus_tsdb_out_of_order_samples_total"] + m1["prometheus_tsdb_too_old_samples_total"]
	senderCPU := cpuOf(backfill.ProcessState)
	progress("ingest: %.0f samples in %s (%.0f/s), %.0f head series", samples, round(ingestWall), samples/ingestWall.Seconds(), m1["prometheus_tsdb_head_series"])

	// 2. Ship: every block the head has cut is in the bucket.
	t0 = time.Now()
	shippedAtEnd := m1["meshlens_shipper_uploads_total"]
	waitShipped(base, 10*time.Minute)
	shipWait := time.Since(t0)
	m2 := scrape(base)
	load["ship"] = loadAvg()
	progress("ship: all cut blocks in the bucket %s after the backfill (%.0f uploads during it, %.0f after)",
		round(shipWait), shippedAtEnd, m2["meshlens_shipper_uploads_total"]-shippedAtEnd)
	headSpan := time.Duration(m2["prometheus_tsdb_head_max_time"]-m2["prometheus_tsdb_head_min_time"]) * time.Millisecond
	stopServer()
	before := inspect()
	b0 := summarize(before)
	diskBefore := dirBytes(filepath.Join(dataDir, "bucket"))

	// 3. Compact until a pass changes nothing.
	type passResult struct {
		wall                         time.Duration
		cpu                          float64
		maxRSS                       int64
		compacted, downsampled, dels int
		compactTime, downsampleTime  time.Duration
		problems                     []string
	}
	var passes []passResult
	ids := blockIDs(before)
	for i := 1; i <= 5; i++ {
		logFile := filepath.Join(workDir, fmt.Sprintf("compact-%d.log", i))
		f, err := os.Create(logFile)
		check(err)
		c := exec.Command(bin.meshlens, "compact", "--once", "--data-dir="+dataDir, "--config="+cfgFile, "--log.level=info")
		c.Stderr = f
		t0 := time.Now()
		err = c.Run()
		wall := time.Since(t0)
		f.Close()
		if err != nil {
			b, _ := os.ReadFile(logFile)
			fatalf("meshlens compact --once (pass %d): %v\n%s", i, err, b)
		}
		p := passResult{wall: wall, cpu: cpuOf(c.ProcessState)}
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			p.maxRSS = ru.Maxrss << 10
		}
		p.compacted, p.downsampled, p.dels, p.compactTime, p.downsampleTime, p.problems = readCompactLog(logFile)
		progress("compact: pass %d took %s: %d compactions (%s), %d downsamplings (%s), %d deletions", i, round(wall),
			p.compacted, round(p.compactTime), p.downsampled, round(p.downsampleTime), p.dels)
		for _, l := range p.problems {
			progress("compact: pass %d: %s", i, l)
		}
		passes = append(passes, p)
		now := blockIDs(inspect())
		if slices.Equal(now, ids) {
			break
		}
		ids = now
	}
	load["compact"] = loadAvg()
	after := inspect()
	b1 := summarize(after)
	diskAfter := dirBytes(filepath.Join(dataDir, "bucket"))
	// Throughput counts the passes that changed the bucket, not the last
	// one that only found nothing to do.
	var compactWall, totalWall time.Duration
	var compactCPU float64
	var compactRSS int64
	changing := 0
	for _, p := range passes {
		totalWall += p.wall
		compactRSS = max(compactRSS, p.maxRSS)
		if p.compacted+p.downsampled+p.dels > 0 {
			changing++
			compactWall += p.wall
			compactCPU += p.cpu
		}
	}

	// 4. Query: each query and step on a fresh start with an empty cache.
	type queryResult struct {
		name, expr              string
		step                    time.Duration
		cold, warm              time.Duration
		warmAll                 []time.Duration
		series, points          int
		coverage                float64
		first, last             time.Time
		longestGap              time.Duration
		coldDownloads, warmDown float64
		cacheBytes              float64
		knownAtReady            float64
		headMin                 time.Time // Of the restarted meshlens.
		warnings                []string
		values                  map[string]map[int64]float64
		err                     string
	}
	var results []*queryResult
	queryStart := time.Now()
	for _, q := range queries {
		for _, step := range steps {
			check(os.RemoveAll(filepath.Join(dataDir, "bucket-cache")))
			addr := startServer()
			base := "http://" + addr
			r := &queryResult{name: q.name, expr: q.expr, step: step}
			ready := scrape(base)
			r.knownAtReady = ready["meshlens_bucketstore_blocks_known"]
			r.headMin = time.UnixMilli(int64(ready["prometheus_tsdb_head_min_time"]))
			waitSynced(base, 2*time.Minute)
			d0 := scrape(base)["meshlens_bucketstore_downloads_total"]
			ans, lat, err := queryRange(base, q.expr, start, end, step)
			r.cold = lat
			if err != nil {
				r.err = err.Error()
			} else {
				m := scrape(base)
				r.coldDownloads = m["meshlens_bucketstore_downloads_total"] - d0
				r.cacheBytes = m["meshlens_bucketstore_cache_bytes"]
				r.warnings = ans.warnings
				r.values = ans.values
				r.series, r.points = len(ans.values), ans.points
				r.coverage, r.first, r.last, r.longestGap = coverage(ans, start, end, step)
				d1 := m["meshlens_bucketstore_downloads_total"]
				for range *warm {
					again, lat, err := queryRange(base, q.expr, start, end, step)
					if err != nil {
						r.err = "warm: " + err.Error()
						break
					}
					if again.points != ans.points || len(again.values) != len(ans.values) {
						r.err = fmt.Sprintf("warm answer differs: %d series %d points, cold %d series %d points",
							len(again.values), again.points, len(ans.values), ans.points)
					}
					r.warmAll = append(r.warmAll, lat)
				}
				r.warm = median(r.warmAll)
				r.warmDown = scrape(base)["meshlens_bucketstore_downloads_total"] - d1
			}
			stopServer()
			progress("query: %s step %s: cold %s, warm %s, %d series, %d points, coverage %.1f%%, %.0f blocks downloaded cold, %.0f warm %s",
				q.name, step, round(r.cold), round(r.warm), r.series, r.points, 100*r.coverage, r.coldDownloads, r.warmDown, r.err)
			results = append(results, r)
		}
	}

	queryWall := time.Since(queryStart)
	load["query"] = loadAvg()
	afterQueries := blockIDs(inspect())

	// Report.
	fmt.Printf("```sh\n%s\n```\n\n", cmdline)
	fmt.Printf("%d services, %d clusters, scrape interval %s, %s of history (%s .. %s), %.0f series, remote write %s; "+
		"storage.local_retention 1h, compactor defaults (ranges 2h/8h/2d/14d, downsampling on) with delete_delay 1ms.\n\n",
		*services, *clusters, shortDur(*interval), shortDur(span), start.UTC().Format("2006-01-02T15:04Z"), end.UTC().Format("2006-01-02T15:04Z"),
		m1["prometheus_tsdb_head_series"], *protocol)
	fmt.Printf("| phase | wall time | result |\n|---|---:|---|\n")
	fmt.Printf("| ingest (meshsim backfill → remote write) | %s | %.1fM samples, **%.0f samples/s**; meshlens %.2f CPU-s per 1M samples, RSS %.0f MiB; meshsim %.0f CPU-s; %.0f samples rejected |\n",
		round(ingestWall), samples/1e6, samples/ingestWall.Seconds(), ingestCPU/samples*1e6, float64(ingestRSS)/(1<<20), senderCPU, rejected)
	fmt.Printf("| ship (wait after the backfill; %.0f blocks were shipped during it) | %s | %d blocks, %s, %.1fM samples (%.1f%% of ingested; the head keeps the last %s), **%.2f bytes/sample**; bucket directory %s |\n",
		shippedAtEnd, round(shipWait), b0.live, mib(b0.liveBytes), b0.liveSamples/1e6, 100*b0.liveSamples/samples, shortDur(headSpan.Round(time.Minute)), b0.liveBytes/b0.liveSamples, mib(diskBefore))
	if changing > 0 {
		var c, d int
		var ct, dt time.Duration
		for _, p := range passes {
			c, d, ct, dt = c+p.compacted, d+p.downsampled, ct+p.compactTime, dt+p.downsampleTime
		}
		fmt.Printf("| compact (`meshlens compact --once`: %d passes, %d changing the bucket) | %s (%s with the last pass) | source %d blocks, %.1fM samples, %s: **%.0f samples/s, %.2f MB/s**; %d compactions (%s in the TSDB compactor), %d downsamplings (%s); %.1f CPU-s, max RSS %.0f MiB |\n",
			len(passes), changing, round(compactWall), round(totalWall), b0.live, b0.liveSamples/1e6, mib(b0.liveBytes),
			b0.liveSamples/compactWall.Seconds(), b0.liveBytes/1e6/compactWall.Seconds(), c, round(ct), d, round(dt), compactCPU, float64(compactRSS)/(1<<20))
	} else {
		fmt.Printf("| compact (`meshlens compact --once`: %d passes) | %s | nothing to compact, downsample or delete in %d blocks |\n", len(passes), round(totalWall), b0.live)
	}
	fmt.Printf("| after compaction (live blocks) | | raw: %d blocks, %s, %.1fM samples, **%.2f bytes/sample**; 5m: %d blocks, %s; 1h: %d blocks, %s; all live %s = %.2f bytes per raw sample; bucket directory %s |\n",
		b1.byRes[0].n, mib(b1.byRes[0].bytes), b1.byRes[0].samples/1e6, b1.byRes[0].bytes/b1.byRes[0].samples,
		b1.byRes[1].n, mib(b1.byRes[1].bytes), b1.byRes[2].n, mib(b1.byRes[2].bytes),
		mib(b1.liveBytes), b1.liveBytes/b1.byRes[0].samples, mib(diskAfter))

	fmt.Printf("\nLive blocks after compaction:\n\n| resolution | level | from | until | range | samples | size |\n|---|---:|---|---|---:|---:|---:|\n")
	for _, b := range after {
		if b.DeletionMark != nil {
			continue
		}
		fmt.Printf("| %s | %d | %s | %s | %s | %d | %s |\n", resName(b.Resolution), b.CompactionLevel,
			time.UnixMilli(b.MinTime).UTC().Format("01-02 15:04"), time.UnixMilli(b.MaxTime).UTC().Format("01-02 15:04"),
			shortDur((time.Duration(b.MaxTime-b.MinTime) * time.Millisecond).Round(time.Minute)), b.NumSamples, mib(float64(b.SizeBytes)))
	}
	if b1.marked > 0 {
		fmt.Printf("\n%d blocks still carry a deletion mark after the passes.\n", b1.marked)
	}

	fmt.Printf("\nRange queries over the whole %s (/api/v1/query_range), each on a fresh start of meshlens with an empty bucket-cache; warm is the median of %d repeats (%s for all, restarts included):\n\n",
		shortDur(span), *warm, round(queryWall))
	fmt.Printf("| query | step | series | points | steps covered | cold | warm | blocks downloaded cold / warm | cache after cold | vs step 5m |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		cmp := ""
		if r.step != 5*time.Minute {
			for _, o := range results {
				if o.expr == r.expr && o.step == 5*time.Minute {
					cmp = compare(r.values, o.values)
				}
			}
		}
		status := fmt.Sprintf("%.1f%%", 100*r.coverage)
		if r.err != "" {
			status = "error: " + r.err
		}
		fmt.Printf("| %s | %s | %d | %d | %s | %s | %s | %.0f / %.0f | %s | %s |\n", r.name, shortDur(r.step), r.series, r.points, status,
			ms(r.cold), ms(r.warm), r.coldDownloads, r.warmDown, mib(r.cacheBytes), cmp)
	}
	fmt.Printf("\nOther processes share the machine: 1-minute load average at the end of ingest %s, ship %s, compact %s, query %s (%d CPUs).\n",
		load["ingest"], load["ship"], load["compact"], load["query"], runtime.NumCPU())
	fmt.Printf("\nQueries: %s\n", strings.Join(func() []string {
		var s []string
		for _, q := range queries {
			s = append(s, fmt.Sprintf("%s `%s`", q.name, q.expr))
		}
		return s
	}(), "; "))

	// What looked wrong.
	var notes []string
	if rejected > 0 {
		notes = append(notes, fmt.Sprintf("%.0f samples were rejected as out of order or too old", rejected))
	}
	if b1.byRes[0].n > 0 {
		var longest time.Duration
		for _, b := range after {
			if b.DeletionMark == nil && b.Resolution == 0 {
				longest = max(longest, time.Duration(b.MaxTime-b.MinTime)*time.Millisecond)
			}
		}
		// A block starts at its first sample, a few seconds after the
		// range boundary.
		if longest.Round(time.Minute) < 48*time.Hour && span >= 4*24*time.Hour {
			notes = append(notes, fmt.Sprintf("the longest raw block spans %s: nothing reached the 2d range", shortDur(longest.Round(time.Minute))))
		}
	}
	if b1.noCompact > 0 {
		notes = append(notes, fmt.Sprintf("%d live blocks carry a no-compact mark (see meshlens bucket ls)", b1.noCompact))
	}
	if span >= 4*24*time.Hour && b1.byRes[1].n == 0 {
		notes = append(notes, "no 5m-resolution block was made")
	}
	for _, r := range results {
		switch {
		case r.err != "":
			notes = append(notes, fmt.Sprintf("%s step %s: %s", r.name, shortDur(r.step), r.err))
		case r.series == 0:
			notes = append(notes, fmt.Sprintf("%s step %s: empty answer", r.name, shortDur(r.step)))
		case r.coverage < 0.99:
			notes = append(notes, fmt.Sprintf("%s step %s: only %.1f%% of the steps have a value (first %s, last %s, longest gap %s)",
				r.name, shortDur(r.step), 100*r.coverage, r.first.UTC().Format(time.RFC3339), r.last.UTC().Format(time.RFC3339), shortDur(r.longestGap)))
		}
		if r.coldDownloads == 0 && r.err == "" {
			notes = append(notes, fmt.Sprintf("%s step %s: the cold query downloaded no block", r.name, shortDur(r.step)))
		}
		if r.warmDown > 0 {
			notes = append(notes, fmt.Sprintf("%s step %s: warm queries downloaded %.0f blocks (cache not used)", r.name, shortDur(r.step), r.warmDown))
		}
		if r.knownAtReady == 0 {
			notes = append(notes, fmt.Sprintf("%s step %s: /-/ready answered before the bucket store knew any block", r.name, shortDur(r.step)))
		}
		for _, w := range r.warnings {
			notes = append(notes, fmt.Sprintf("%s step %s: warning %q", r.name, shortDur(r.step), w))
		}
	}
	var bucketEnd int64
	for _, b := range after {
		if b.DeletionMark == nil {
			bucketEnd = max(bucketEnd, b.MaxTime)
		}
	}
	if len(results) > 0 {
		headMin := results[0].headMin
		for _, r := range results {
			if r.headMin.Before(headMin) {
				headMin = r.headMin
			}
		}
		if headMin.UnixMilli() < bucketEnd {
			notes = append(notes, fmt.Sprintf("after a restart the head starts at %s, %s before the end of the shipped data: the WAL replay brought back samples of blocks already shipped and deleted locally, and queries read that range from the head, not the bucket",
				headMin.UTC().Format(time.RFC3339), shortDur(time.UnixMilli(bucketEnd).Sub(headMin).Round(time.Minute))))
		}
	}
	if !slices.Equal(afterQueries, blockIDs(after)) {
		notes = append(notes, fmt.Sprintf("the bucket changed while meshlens was restarted for the queries: %d blocks before, %d after", len(after), len(afterQueries)))
	}
	for i, p := range passes {
		for _, l := range p.problems {
			notes = append(notes, fmt.Sprintf("compact pass %d: %s", i+1, l))
		}
	}
	if len(notes) > 0 {
		fmt.Printf("\nChecks that failed or need a look:\n\n")
		for _, n := range dedupe(notes) {
			fmt.Printf("- %s\n", n)
		}
	}
	if keep {
		fmt.Printf("\nData directory kept: %s\n", dataDir)
	}
}

// startServer starts meshlens on dataDir and waits until it is ready.
func startServer() string {
	addr := procstat.Must(procstat.FreeAddr())
	server = exec.Command(bin.meshlens, "--listen="+addr, "--data-dir="+dataDir, "--config="+cfgFile, "--log.level=warn")
	server.Stderr = os.Stderr
	check(server.Start())
	check(procstat.WaitReady("http://"+addr+"/-/ready", 2*time.Minute))
	return addr
}

// stopServer interrupts meshlens and waits until it has closed its TSDB.
func stopServer() {
	if server == nil {
		return
	}
	_ = server.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- server.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = server.Process.Kill()
		<-done
		fatalf("meshlens did not stop within 2m of SIGINT")
	}
	server = nil
}

// waitShipped waits until every block in <data-dir>/tsdb with samples has
// its meta.json in <data-dir>/bucket and the head spans no more than 1.5
// block ranges, so that it cuts no further block.
func waitShipped(base string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		m := scrape(base)
		headSpan := time.Duration(m["prometheus_tsdb_head_max_time"]-m["prometheus_tsdb_head_min_time"]) * time.Millisecond
		pending := unshipped()
		if headSpan <= blockRange*3/2 && len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			fatalf("blocks not shipped after %s: head spans %s, local blocks not in the bucket: %v", timeout, headSpan, pending)
		}
		time.Sleep(time.Second)
	}
}

// unshipped lists the blocks in the TSDB directory that hold samples and
// have no meta.json in the bucket.
func unshipped() []string {
	entries, err := os.ReadDir(filepath.Join(dataDir, "tsdb"))
	check(err)
	var out []string
	for _, e := range entries {
		if !e.IsDir() || len(e.Name()) != 26 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dataDir, "tsdb", e.Name(), "meta.json"))
		if err != nil {
			continue // Being written or deleted.
		}
		var meta struct {
			Stats struct {
				NumSamples uint64 `json:"numSamples"`
			} `json:"stats"`
		}
		if json.Unmarshal(b, &meta) != nil || meta.Stats.NumSamples == 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join(dataDir, "bucket", e.Name(), "meta.json")); err != nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// waitSynced waits for the bucket store's first successful sync.
func waitSynced(base string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for scrape(base)["meshlens_bucketstore_last_successful_sync_timestamp_seconds"] == 0 {
		if time.Now().After(deadline) {
			fatalf("bucket store not synced after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// block is what `meshlens bucket inspect` prints of a block.
type block struct {
	ULID            string          `json:"ulid"`
	MinTime         int64           `json:"minTime"`
	MaxTime         int64           `json:"maxTime"`
	Resolution      int64           `json:"resolution"`
	NumSeries       uint64          `json:"numSeries"`
	NumSamples      uint64          `json:"numSamples"`
	CompactionLevel int             `json:"compactionLevel"`
	SizeBytes       int64           `json:"sizeBytes"`
	DeletionMark    json.RawMessage `json:"deletionMark"`
	NoCompactMark   json.RawMessage `json:"noCompactMark"`
}

func inspect() []block {
	c := exec.Command(bin.meshlens, "bucket", "inspect", "--data-dir="+dataDir, "--config="+cfgFile)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		fatalf("meshlens bucket inspect: %v\n%s", err, stderr.Bytes())
	}
	var bs []block
	check(json.Unmarshal(out, &bs))
	return bs
}

func blockIDs(bs []block) []string {
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.ULID)
	}
	slices.Sort(ids)
	return ids
}

type resStats struct {
	n              int
	bytes, samples float64
}

type bucketStats struct {
	live, marked, noCompact int
	liveBytes, liveSamples  float64 // Raw resolution only for samples.
	byRes                   [3]resStats
}

// summarize counts the live blocks (without a deletion mark) of bs.
func summarize(bs []block) bucketStats {
	var s bucketStats
	for _, b := range bs {
		if b.DeletionMark != nil {
			s.marked++
			continue
		}
		if b.NoCompactMark != nil {
			s.noCompact++
		}
		s.live++
		s.liveBytes += float64(b.SizeBytes)
		i := 0
		switch b.Resolution {
		case 300000:
			i = 1
		case 3600000:
			i = 2
		default:
			s.liveSamples += float64(b.NumSamples)
		}
		s.byRes[i].n++
		s.byRes[i].bytes += float64(b.SizeBytes)
		s.byRes[i].samples += float64(b.NumSamples)
	}
	return s
}

var (
	logMsg      = regexp.MustCompile(`msg="([^"]*)"`)
	logDuration = regexp.MustCompile(` duration=(\S+)`)
	logLevel    = regexp.MustCompile(`level=(WARN|ERROR)`)
)

// readCompactLog counts what a compactor pass logged.
func readCompactLog(name string) (compacted, downsampled, deleted int, compactTime, downsampleTime time.Duration, problems []string) {
	f, err := os.Open(name)
	check(err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var d time.Duration
		if m := logDuration.FindStringSubmatch(line); m != nil {
			d, _ = time.ParseDuration(m[1])
		}
		msg := ""
		if m := logMsg.FindStringSubmatch(line); m != nil {
			msg = m[1]
		}
		switch msg {
		case "blocks compacted":
			compacted++
			compactTime += d
		case "block downsampled":
			downsampled++
			downsampleTime += d
		case "block deleted":
			deleted++
		}
		if logLevel.MatchString(line) {
			problems = append(problems, line)
		}
	}
	return
}

type answer struct {
	values   map[string]map[int64]float64 // Series → Unix seconds → value.
	points   int
	warnings []string
}

// queryRange runs a range query and returns its answer and latency.
func queryRange(base, expr string, start, end time.Time, step time.Duration) (answer, time.Duration, error) {
	v := url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	t0 := time.Now()
	resp, err := http.Get(base + "/api/v1/query_range?" + v.Encode())
	if err != nil {
		return answer{}, 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	lat := time.Since(t0)
	if err != nil {
		return answer{}, lat, err
	}
	var env struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return answer{}, lat, fmt.Errorf("decode answer (%d bytes): %w", len(body), err)
	}
	if env.Status != "success" {
		return answer{}, lat, fmt.Errorf("%s: %s", resp.Status, env.Error)
	}
	a := answer{values: map[string]map[int64]float64{}, warnings: env.Warnings}
	for _, s := range env.Data.Result {
		keys := make([]string, 0, len(s.Metric))
		for k, v := range s.Metric {
			keys = append(keys, k+"="+v)
		}
		sort.Strings(keys)
		vals := map[int64]float64{}
		for _, p := range s.Values {
			ts, _ := p[0].(float64)
			str, _ := p[1].(string)
			f, err := strconv.ParseFloat(str, 64)
			if err != nil {
				continue
			}
			vals[int64(math.Round(ts))] = f
			a.points++
		}
		a.values[strings.Join(keys, ",")] = vals
	}
	return a, lat, nil
}

// coverage returns the fraction of the steps of [start, end] at which some
// series has a value, the first and last such step and the longest run of
// steps without one. Steps in the first 10 minutes do not count: the
// history starts at start, and a rate needs two samples in its window.
func coverage(a answer, start, end time.Time, step time.Duration) (float64, time.Time, time.Time, time.Duration) {
	sec := int64(step.Seconds())
	var first, last int64 = -1, -1
	covered, total := 0, 0
	var gap, longest int64
	for t := start.Unix(); t <= end.Unix(); t += sec {
		if t < start.Add(10*time.Minute).Unix() {
			continue
		}
		total++
		found := false
		for _, s := range a.values {
			if _, ok := s[t]; ok {
				found = true
				break
			}
		}
		if !found {
			gap += sec
			longest = max(longest, gap)
			continue
		}
		gap = 0
		covered++
		if first < 0 {
			first = t
		}
		last = t
	}
	return float64(covered) / float64(total), time.Unix(first, 0), time.Unix(last, 0), time.Duration(longest) * time.Second
}

// compare describes how the values of a (a coarser step) differ from b's
// at the timestamps and series they share: the median and largest
// relative difference.
func compare(a, b map[string]map[int64]float64) string {
	var diffs []float64
	for k, sa := range a {
		sb, ok := b[k]
		if !ok {
			continue
		}
		for t, va := range sa {
			vb, ok := sb[t]
			if !ok || math.IsNaN(va) || math.IsNaN(vb) {
				continue
			}
			d := 0.0
			if m := max(math.Abs(va), math.Abs(vb)); m > 0 {
				d = math.Abs(va-vb) / m
			}
			diffs = append(diffs, d)
		}
	}
	if len(diffs) == 0 {
		return "no shared points"
	}
	slices.Sort(diffs)
	return fmt.Sprintf("%d shared points, median Δ %.1f%%, max %.0f%%", len(diffs), 100*diffs[len(diffs)/2], 100*diffs[len(diffs)-1])
}

// scrape reads meshlens's /metrics and sums each metric over its labels.
func scrape(base string) map[string]float64 {
	resp, err := http.Get(base + "/metrics")
	check(err)
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		out[strings.TrimSpace(name)] += v
	}
	check(sc.Err())
	return out
}

// loadAvg returns the 1-minute load average of the machine.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func dirBytes(dir string) float64 {
	var n int64
	check(filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	}))
	return float64(n)
}

func cpuOf(ps *os.ProcessState) float64 {
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func resName(res int64) string {
	switch res {
	case 0:
		return "raw"
	case 300000:
		return "5m"
	case 3600000:
		return "1h"
	}
	return strconv.FormatInt(res, 10)
}

// shortDur writes d without zero trailing units, in days when whole: 2h, 1h30m, 2d.
func shortDur(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "== "+format+"\n", args...)
}

func cleanup() {
	if server != nil {
		_ = server.Process.Kill()
		_ = server.Wait()
		server = nil
	}
	if !keep && workDir != "" {
		os.RemoveAll(workDir)
	}
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-bucket: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}
