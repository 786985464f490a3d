// Command bench-traces measures span ingest and storage end to end, for
// meshlens and, in the same run on the same machine, for Jaeger v1.75.0
// (its v2 all-in-one binary) with memory and with badger storage:
//
//   - ingest: spans accepted per receiver CPU-second, OTLP/HTTP protobuf
//     and Zipkin v2 JSON, as fast as each receiver accepts (or at -rate);
//   - latency: trace-by-id lookups (Tempo API with Accept:
//     application/protobuf; Jaeger's /api/traces/{id} for Jaeger) from
//     meshlens's head, a local block, and a bucket block cold (first
//     lookup after a restart with an empty traces-cache) and warm;
//   - disk: bytes per span of meshlens's bucket blocks, before and after
//     compaction, and of Jaeger badger's data directory;
//   - rss: receiver RSS and CPU at -rss-rate spans/s (50,000: a mesh of 1M
//     requests/s, 1% sampled, about 5 spans each).
//
// The load is `meshsim load` (simulated Istio traces, whole traces per
// request, new trace ids and current timestamps every round), the same
// generator and concurrency for every receiver. Receiver CPU and RSS come
// from /proc, as in scripts/bench-ingest.
//
//	go run ./scripts/bench-traces [-duration 60s] [-rate 0] [-rss-rate 50000] [-only ingest,latency,disk,rss,meshlens,jaeger-memory,jaeger-badger,otlp,zipkin] [-keep]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/meshlens/meshlens/internal/peers"
	"github.com/meshlens/meshlens/internal/procstat"
	"github.com/meshlens/meshlens/traces/store"
)

type bench struct {
	dir                                 string
	meshlensBin, meshsimBin, jaegerBin  string
	duration                            time.Duration
	rate, rssRate                       float64
	concurrency, spansPerRequest        int
	lookups, coldRestarts               int
	latencyLoad                         time.Duration
	traceIdle, maxBlock, localRetention time.Duration
	only                                map[string]bool
	rng                                 *rand.Rand

	// Runs kept for the disk figures.
	badgerDir                   string
	badgerSpans                 int64
	ingest, rss                 []*loadResult
	lat                         []*lookupResult
	disk                        []diskRow
	meshlensWarnings            []string
	loadavgStart, loadavgFinish string
}

var measurements = []string{"ingest", "latency", "disk", "rss"}

func main() {
	b := &bench{rng: rand.New(rand.NewPCG(1, 2))}
	flag.DurationVar(&b.duration, "duration", 60*time.Second, "load duration of each ingest and rss measurement")
	flag.Float64Var(&b.rate, "rate", 0, "spans/s of the ingest measurement (0: as fast as each receiver accepts); a fixed rate compares CPU at equal load")
	flag.Float64Var(&b.rssRate, "rss-rate", 50000, "spans/s of the rss measurement and of the latency measurement's load")
	flag.IntVar(&b.concurrency, "concurrency", 4, "requests in flight")
	flag.IntVar(&b.spansPerRequest, "spans-per-request", 1000, "spans per request (whole traces, so about this many)")
	flag.IntVar(&b.lookups, "lookups", 500, "trace-by-id lookups per latency case")
	flag.IntVar(&b.coldRestarts, "cold-restarts", 3, "meshlens restarts with an empty traces-cache, one cold lookup each")
	flag.DurationVar(&b.latencyLoad, "latency-load", 5*time.Second, "load sent (at -rss-rate) before the lookups")
	flag.DurationVar(&b.traceIdle, "trace-idle", 5*time.Second, "meshlens's traces.trace_idle in the latency measurement")
	flag.DurationVar(&b.maxBlock, "max-block-duration", 20*time.Second, "meshlens's traces.max_block_duration in the latency measurement")
	flag.DurationVar(&b.localRetention, "local-retention", 10*time.Second, "meshlens's storage.local_retention in the latency measurement")
	only := flag.String("only", "", "comma-separated measurements ("+strings.Join(measurements, ", ")+"), receivers ("+
		meshlensName+", "+jaegerMemoryName+", "+jaegerBadgerName+") and formats (otlp, zipkin) to run; empty: all")
	keep := flag.Bool("keep", false, "keep the data directories (their path is printed)")
	flag.Parse()
	b.only = map[string]bool{}
	for _, o := range strings.Split(*only, ",") {
		if o = strings.TrimSpace(o); o != "" {
			if !slices.ContainsFunc(selectable, func(g []string) bool { return slices.Contains(g, o) }) {
				fatalf("-only: unknown %q", o)
			}
			b.only[o] = true
		}
	}
	cleanup = func() {
		if !*keep {
			os.RemoveAll(b.dir)
		}
	}

	b.loadavgStart = loadavg()
	var err error
	b.dir, err = os.MkdirTemp("", "bench-traces")
	check(err)
	if *keep {
		progress("data directories in %s", b.dir)
	}
	defer cleanup()
	progress("building meshlens, meshsim and jaeger %s (load average %s)", peers.Jaeger.Version(), b.loadavgStart)
	b.meshlensBin, b.meshsimBin, err = procstat.BuildCommands(b.dir)
	check(err)
	if b.wantAnyJaeger() {
		b.jaegerBin, err = peers.Build(peers.Jaeger)
		check(err)
	}

	if b.want("ingest") {
		b.runIngest()
	}
	if b.want("rss") {
		b.runRSS()
	}
	if b.want("disk") {
		b.runDisk()
	}
	if b.want("latency") {
		b.runLatency()
	}
	b.loadavgFinish = loadavg()
	b.print()
}

// want reports whether a measurement, receiver or format is selected:
// -only names none of its kind, or names it ("jaeger" names both Jaegers).
func (b *bench) want(what string) bool {
	for _, g := range selectable {
		if !slices.Contains(g, what) {
			continue
		}
		for _, t := range g {
			if b.only[t] {
				return b.only[what] || (b.only["jaeger"] && strings.HasPrefix(what, "jaeger-"))
			}
		}
	}
	return true
}

// selectable are the words of -only, by kind.
var selectable = [][]string{measurements, {meshlensName, jaegerMemoryName, jaegerBadgerName, "jaeger"}, {"otlp", "zipkin"}}

func (b *bench) wantAnyJaeger() bool { return b.want(jaegerMemoryName) || b.want(jaegerBadgerName) }

func (b *bench) start(name, dir, cfg string) (*server, error) {
	if name == meshlensName {
		return startMeshlens(b.meshlensBin, dir, cfg)
	}
	return startJaeger(b.jaegerBin, name, dir)
}

func rateName(rate float64) string {
	if rate == 0 {
		return "as fast as accepted"
	}
	return fmt.Sprintf("%.0f spans/s", rate)
}

// runIngest: each receiver and format in turn, on a new data directory.
func (b *bench) runIngest() {
	for _, format := range []string{"otlp", "zipkin"} {
		if !b.want(format) {
			continue
		}
		for _, name := range []string{meshlensName, jaegerMemoryName, jaegerBadgerName} {
			if !b.want(name) {
				continue
			}
			dir := filepath.Join(b.dir, "ingest-"+format+"-"+name)
			s, err := b.start(name, dir, "")
			check(err)
			progress("ingest: %s, %s, %s, %s", name, format, rateName(b.rate), b.duration)
			res, err := b.sendLoad(s, s.spanURL(format), format, b.rate, b.duration)
			s.stop()
			check(err)
			b.note(s)
			progress("   %.0f spans/s accepted, %.0f spans per CPU-s, %d failed requests", res.sum.AcceptedPerSecond, res.spansPerCPUSecond(), res.sum.RequestsFailed)
			b.ingest = append(b.ingest, res)
			if name == jaegerBadgerName && format == "otlp" {
				b.badgerDir, b.badgerSpans = dir, res.sum.SpansAccepted
			}
		}
	}
}

// runRSS: meshlens with its defaults and Jaeger with memory storage at
// -rss-rate, OTLP.
func (b *bench) runRSS() {
	for _, name := range []string{meshlensName, jaegerMemoryName} {
		if !b.want(name) {
			continue
		}
		dir := filepath.Join(b.dir, "rss-"+name)
		s, err := b.start(name, dir, "")
		check(err)
		progress("rss: %s, otlp, %s, %s", name, rateName(b.rssRate), b.duration)
		res, err := b.sendLoad(s, s.otlpURL, "otlp", b.rssRate, b.duration)
		s.stop()
		check(err)
		b.note(s)
		progress("   %.0f spans/s accepted, RSS %s (largest %s)", res.sum.AcceptedPerSecond, mib(res.rssEnd), mib(res.rssMax))
		b.rss = append(b.rss, res)
	}
}

type diskRow struct {
	what         string
	blocks       int
	spans, bytes int64
	compactWall  time.Duration
}

// runDisk: meshlens receives -duration of spans at -rss-rate with the
// latency measurement's short blocks, until every span is in a block in
// the bucket; the bucket is measured, compacted with the span store's own
// compaction, its clock two days ahead so that every window has closed
// (meshlens compacts an hour of blocks once the hour is over), and
// measured again. Jaeger badger's data directory is the one of the ingest
// measurement (OTLP), or of a run at -rss-rate.
func (b *bench) runDisk() {
	if b.want(meshlensName) {
		dir := filepath.Join(b.dir, "disk-meshlens")
		s, err := b.start(meshlensName, dir, fmt.Sprintf(meshlensConfig, b.traceIdle, b.maxBlock, b.localRetention))
		check(err)
		progress("disk: meshlens, otlp, %s, %s, max_block_duration %s", rateName(b.rssRate), b.duration, b.maxBlock)
		res, err := b.sendLoad(s, s.otlpURL, "otlp", b.rssRate, b.duration)
		check(err)
		progress("   %d spans accepted; waiting until they are all in the bucket", res.sum.SpansAccepted)
		// A block is complete in the bucket once its meta.json is there
		// (uploaded last). The head's gauge alone is no sign: it drops
		// when a cut starts, before the block is written.
		bucketDir := filepath.Join(dir, "data", "bucket")
		err = waitUntil(s, b.maxBlock+2*time.Minute, func() bool {
			return bucketUsage("", bucketDir).spans >= res.sum.SpansAccepted
		})
		if err != nil {
			m, _ := s.metrics()
			progress("   not every span reached the bucket: %v (%s)", err, storeMetrics(m))
		}
		s.stop()
		b.note(s)
		before := bucketUsage("meshlens bucket, blocks cut from the head", bucketDir)
		if before.spans != res.sum.SpansAccepted {
			progress("   the bucket's blocks hold %d spans, %d were accepted", before.spans, res.sum.SpansAccepted)
		}
		b.disk = append(b.disk, before)
		progress("disk: compacting %d blocks of %d spans", before.blocks, before.spans)
		start := time.Now()
		check(compactBucket(bucketDir, filepath.Join(b.dir, "compactor")))
		after := bucketUsage("meshlens bucket, after compaction", bucketDir)
		after.compactWall = time.Since(start)
		if after.spans != before.spans {
			progress("   after compaction the bucket's blocks hold %d spans, %d before", after.spans, before.spans)
		}
		b.disk = append(b.disk, after)
	}
	if b.want(jaegerBadgerName) {
		if b.badgerDir == "" {
			dir := filepath.Join(b.dir, "disk-"+jaegerBadgerName)
			s, err := b.start(jaegerBadgerName, dir, "")
			check(err)
			progress("disk: %s, otlp, %s, %s", jaegerBadgerName, rateName(b.rssRate), b.duration)
			res, err := b.sendLoad(s, s.otlpURL, "otlp", b.rssRate, b.duration)
			s.stop()
			check(err)
			b.badgerDir, b.badgerSpans = dir, res.sum.SpansAccepted
		}
		b.disk = append(b.disk, diskRow{what: "jaeger badger data directory (keys and values)", spans: b.badgerSpans,
			bytes: dirBytes(filepath.Join(b.badgerDir, "badger"))})
	}
}

// bucketUsage sums the objects under traces/ and the spans of the blocks'
// meta.json.
func bucketUsage(what, bucketDir string) diskRow {
	r := diskRow{what: what, bytes: dirBytes(filepath.Join(bucketDir, store.DefaultPrefix))}
	metas, _ := filepath.Glob(filepath.Join(bucketDir, store.DefaultPrefix, "*", "meta.json"))
	for _, p := range metas {
		var m struct {
			Spans int64 `json:"spans"`
		}
		if data, err := os.ReadFile(p); err == nil && json.Unmarshal(data, &m) == nil {
			r.blocks++
			r.spans += m.Spans
		}
	}
	return r
}

// compactBucket runs the span store's compaction over the FILESYSTEM
// bucket in bucketDir, as meshlens --compact does, with the store's clock
// two days ahead.
func compactBucket(bucketDir, dir string) error {
	bkt, err := filesystem.NewBucket(bucketDir)
	if err != nil {
		return err
	}
	s, err := store.Open(store.Options{Dir: dir, Bucket: bkt, Compact: true,
		Now: func() time.Time { return time.Now().Add(48 * time.Hour) }})
	if err != nil {
		return err
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.SyncBucket(ctx); err != nil {
		return err
	}
	return s.Compact(ctx)
}

// runLatency: lookups of traces of a short load, for meshlens from the
// head, a local block and the bucket (cold and warm), and for each Jaeger.
func (b *bench) runLatency() {
	if b.want(meshlensName) {
		b.meshlensLatency()
	}
	for _, name := range []string{jaegerMemoryName, jaegerBadgerName} {
		if !b.want(name) {
			continue
		}
		dir := filepath.Join(b.dir, "latency-"+name)
		s, err := b.start(name, dir, "")
		check(err)
		ids, spans := b.latencyLoadRun(s)
		r := lookup(s, "after the load", ids)
		r.spans = spans
		b.lat = append(b.lat, r)
		s.stop()
		b.note(s)
	}
}

// latencyLoadRun sends -latency-load of spans through the recorder and
// returns -lookups of their trace ids.
func (b *bench) latencyLoadRun(s *server) ([]string, int64) {
	rec, err := startRecorder(s.otlpURL, "otlp")
	check(err)
	defer rec.close()
	progress("latency: %s, otlp, %s for %s, then %d lookups per case", s.name, rateName(b.rssRate), b.latencyLoad, b.lookups)
	res, err := b.sendLoad(s, rec.url, "otlp", b.rssRate, b.latencyLoad)
	check(err)
	progress("   %d spans accepted (%.0f/s), %d failed requests, status codes %v; %d trace ids recorded",
		res.sum.SpansAccepted, res.sum.AcceptedPerSecond, res.sum.RequestsFailed, res.sum.StatusCodes, rec.count())
	ids := rec.sample(b.lookups, b.rng)
	if len(ids) == 0 {
		fatalf("latency: %s accepted no request (status codes %v)", s.name, res.sum.StatusCodes)
	}
	return ids, res.sum.SpansAccepted
}

func (b *bench) meshlensLatency() {
	dir := filepath.Join(b.dir, "latency-meshlens")
	cfg := fmt.Sprintf(meshlensConfig, b.traceIdle, b.maxBlock, b.localRetention)
	s, err := b.start(meshlensName, dir, cfg)
	check(err)
	defer func() { s.stop() }()
	ids, spans := b.latencyLoadRun(s)
	defer func(n int) {
		for _, r := range b.lat[n:] {
			r.spans = spans
		}
	}(len(b.lat))

	m, err := s.metrics()
	check(err)
	if m["meshlens_traces_blocks_cut_total"] > 0 {
		progress("   a block was cut during the load already: lookups from the head also read it (%s)", storeMetrics(m))
	}
	b.lat = append(b.lat, lookup(s, "head", ids))
	if m, err := s.metrics(); err == nil && m["meshlens_traces_blocks_cut_total"] > 0 {
		progress("   a block was cut during the head lookups (%s)", storeMetrics(m))
	}

	progress("   waiting for the cut (max_block_duration %s)", b.maxBlock)
	check(s.waitMetrics(b.maxBlock+2*time.Minute, "the head cut into a block", func(m map[string]float64) bool {
		return m["meshlens_traces_blocks_cut_total"] >= 1 && m["meshlens_traces_head_spans"] == 0
	}))
	b.lat = append(b.lat, lookup(s, "local block", ids))
	check(s.waitMetrics(time.Minute, "the block shipped", func(m map[string]float64) bool {
		return m["meshlens_traces_blocks_shipped_total"] >= m["meshlens_traces_blocks_cut_total"]
	}))
	s.stop()
	b.note(s)

	// Each restart finds the block only in the bucket (the retention pass
	// at start deletes shipped local blocks older than local_retention)
	// with an empty cache: its first lookup downloads it.
	time.Sleep(b.localRetention)
	cold := &lookupResult{receiver: meshlensName, where: "bucket block, cold (first lookup after a restart with an empty traces-cache)"}
	warm := &lookupResult{receiver: meshlensName, where: "bucket block, warm"}
	for i := range max(b.coldRestarts, 1) {
		check(os.RemoveAll(filepath.Join(dir, "data", "traces-cache")))
		s, err = b.start(meshlensName, dir, cfg)
		check(err)
		check(s.waitMetrics(time.Minute, "the local block deleted and the bucket listed", func(m map[string]float64) bool {
			return m["meshlens_traces_local_blocks"] == 0 && m["meshlens_traces_bucket_blocks"] >= 1
		}))
		r := lookup(s, cold.where, ids[i%len(ids):i%len(ids)+1])
		cold.lat = append(cold.lat, r.lat...)
		cold.notFound += r.notFound
		cold.errs += r.errs
		if len(r.lat) == 1 {
			progress("   cold lookup after restart %d: %.1f ms", i+1, float64(r.lat[0])/1e6)
		}
		if m, err := s.metrics(); err == nil && m["meshlens_traces_bucket_blocks_downloaded_total"] < 1 {
			progress("   restart %d: the cold lookup downloaded no block (%s)", i+1, storeMetrics(m))
		}
		if i == max(b.coldRestarts, 1)-1 {
			warm = lookup(s, "bucket block, warm", ids)
		}
		s.stop()
		b.note(s)
	}
	b.lat = append(b.lat, cold, warm)
}

// note keeps the lines meshlens logged (at warn and above).
func (b *bench) note(s *server) {
	if s.name != meshlensName {
		return
	}
	data, _ := os.ReadFile(s.logPath)
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l != "" && !slices.Contains(b.meshlensWarnings, l) {
			b.meshlensWarnings = append(b.meshlensWarnings, l)
		}
	}
	os.Truncate(s.logPath, 0)
}

func (b *bench) print() {
	fmt.Printf("bench-traces: %d CPUs, %s, load average %s at the start, %s at the end\n",
		runtime.NumCPU(), runtime.Version(), b.loadavgStart, b.loadavgFinish)
	fmt.Printf("load: meshsim load, simulated Istio traces, %d spans/request, %d requests in flight\n", b.spansPerRequest, b.concurrency)

	if len(b.ingest) > 0 {
		fmt.Printf("\n## Ingest, %s, %s per receiver and format\n\n", rateName(b.rate), b.duration)
		fmt.Println("| receiver | format | accepted spans/s | receiver CPU-s | spans per CPU-s | RSS at end | p99 request ms | failed requests |")
		fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|")
		for _, r := range b.ingest {
			fmt.Printf("| %s | %s | %.0f | %.1f | %.0f | %s | %.1f | %d |\n", r.receiver, formatName(r.format), r.sum.AcceptedPerSecond,
				r.cpu, r.spansPerCPUSecond(), mib(r.rssEnd), r.sum.LatencyP99MS, r.sum.RequestsFailed)
		}
		fmt.Println()
		for _, peer := range []string{jaegerMemoryName, jaegerBadgerName} {
			var parts []string
			for _, format := range []string{"otlp", "zipkin"} {
				a, p := findRun(b.ingest, meshlensName, format), findRun(b.ingest, peer, format)
				if a != nil && p != nil {
					parts = append(parts, fmt.Sprintf("%s %.2fx spans per CPU-s, %.2fx throughput", formatName(format),
						a.spansPerCPUSecond()/p.spansPerCPUSecond(), a.sum.AcceptedPerSecond/p.sum.AcceptedPerSecond))
				}
			}
			if len(parts) > 0 {
				fmt.Printf("meshlens / %s: %s\n", peer, strings.Join(parts, "; "))
			}
		}
	}

	if len(b.rss) > 0 {
		fmt.Printf("\n## At %s, OTLP, %s\n\n", rateName(b.rssRate), b.duration)
		fmt.Println("| receiver | accepted spans/s | RSS at end | largest RSS | receiver CPU-s per 1M spans | cores used | failed requests |")
		fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
		for _, r := range b.rss {
			fmt.Printf("| %s | %.0f | %s | %s | %.2f | %.2f | %d |\n", r.receiver, r.sum.AcceptedPerSecond, mib(r.rssEnd), mib(r.rssMax),
				r.cpu/float64(r.sum.SpansAccepted)*1e6, r.cpu/r.sum.DurationSeconds, r.sum.RequestsFailed)
		}
		if a, p := findRun(b.rss, meshlensName, "otlp"), findRun(b.rss, jaegerMemoryName, "otlp"); a != nil && p != nil {
			fmt.Printf("\nmeshlens / %s: RSS %.2fx (largest %.2fx), CPU per span %.2fx\n", jaegerMemoryName,
				float64(a.rssEnd)/float64(p.rssEnd), float64(a.rssMax)/float64(p.rssMax),
				(a.cpu/float64(a.sum.SpansAccepted))/(p.cpu/float64(p.sum.SpansAccepted)))
		}
	}

	if len(b.lat) > 0 {
		fmt.Printf("\n## Trace by id, %d lookups per case one at a time (cold: one per restart), after %s of load at %s (OTLP)\n\n", b.lookups, b.latencyLoad, rateName(b.rssRate))
		fmt.Println("| receiver | trace read from | spans stored | lookups | p50 ms | p99 ms | max ms | not found | errors |")
		fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range b.lat {
			fmt.Printf("| %s | %s | %d | %d | %.2f | %.2f | %.2f | %d | %d |\n", r.receiver, r.where, r.spans, len(r.lat)+r.notFound+r.errs,
				quantileMS(r.lat, 0.5), quantileMS(r.lat, 0.99), quantileMS(r.lat, 1), r.notFound, r.errs)
		}
		for _, bar := range []struct {
			where string
			ms    float64
		}{{"head", 10}, {"bucket block, warm", 100}} {
			for _, r := range b.lat {
				if r.receiver == meshlensName && r.where == bar.where && len(r.lat) > 0 {
					verdict := "met"
					if p := quantileMS(r.lat, 0.99); p > bar.ms || r.notFound+r.errs > 0 {
						verdict = "NOT met"
					}
					fmt.Printf("bar: p99 from the %s ≤ %.0f ms: %s\n", bar.where, bar.ms, verdict)
				}
			}
		}
	}

	if len(b.disk) > 0 {
		fmt.Printf("\n## Bytes per span on disk\n\n")
		fmt.Println("| what | blocks | spans | bytes | bytes per span |")
		fmt.Println("|---|---:|---:|---:|---:|")
		for _, r := range b.disk {
			blocks := ""
			if r.blocks > 0 {
				blocks = fmt.Sprint(r.blocks)
			}
			per := 0.0
			if r.spans > 0 {
				per = float64(r.bytes) / float64(r.spans)
			}
			fmt.Printf("| %s | %s | %d | %d | %.1f |\n", r.what, blocks, r.spans, r.bytes, per)
		}
		for _, r := range b.disk {
			if r.compactWall > 0 {
				fmt.Printf("\ncompaction: %s\n", r.compactWall.Round(100*time.Millisecond))
			}
		}
	}

	if len(b.meshlensWarnings) > 0 {
		fmt.Printf("\nmeshlens logged %d lines (warn and above); the first ones:\n", len(b.meshlensWarnings))
		for _, l := range b.meshlensWarnings[:min(len(b.meshlensWarnings), 10)] {
			fmt.Printf("    %.300s\n", l)
		}
	}
}

func findRun(rs []*loadResult, receiver, format string) *loadResult {
	for _, r := range rs {
		if r.receiver == receiver && r.format == format {
			return r
		}
	}
	return nil
}

func formatName(f string) string {
	if f == "otlp" {
		return "OTLP/HTTP protobuf"
	}
	return "Zipkin v2 JSON"
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

// cleanup removes the data directories unless -keep.
var cleanup = func() {}

// fatalf stops the receivers still running, cleans up and exits.
func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-traces: "+format+"\n", args...)
	stopAll()
	cleanup()
	os.Exit(1)
}
