// Command thanos-verify checks that Thanos's own bucket tools accept a
// bucket that meshlens wrote. It builds meshlens and meshsim, starts
// meshlens on a new data directory, backfills a small mesh through remote
// write, waits until the shipper has uploaded every block cut from the
// head, stops meshlens, runs `meshlens compact --once`, and then runs
// `thanos tools bucket verify` (Thanos's default issues unless -issues
// says otherwise), `thanos tools bucket ls` and `thanos tools bucket
// inspect` on the FILESYSTEM bucket in <data-dir>/bucket.
//
//	go run ./scripts/thanos-verify [-hours 30] [-end RFC3339] [-downsample] [-keep] [-dir DIR] [-issues a,b]
//	go run ./scripts/thanos-verify -bucket-only DIR   # only the Thanos checks, on DIR/bucket
//
// Run it from the repository root. The thanos binary is $THANOS, or the
// build cached in $MESHLENS_PEERS_DIR (default ~/.cache/meshlens-peers)
// under thanos-v0.42.5/thanos; without either it prints how to build that
// and exits 2.
//
// It exits 1 when a step fails, when verify reports an issue (Thanos's
// verify logs issues as warnings and still exits 0, so its log is read),
// or when Thanos does not load a block whose meta.json is in the bucket
// (its metadata fetcher skips a meta.json it cannot decode without an
// error).
//
// The default 30h of history gives 2h and 8h blocks only: Thanos
// downsamples a raw block once it spans 40h, which takes a full aligned
// 48h range. -downsample picks -end and -hours so that the history fills
// one (54h ending 6h after a 48h boundary), which makes the compactor
// write a 48h raw block and its 5m copy.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshlens/meshlens/internal/peers"
	"github.com/meshlens/meshlens/internal/procstat"
)

// thanosVersion is the Thanos release whose tools judge the bucket.
const thanosVersion = "v0.42.5"

// thanosBuildHelp says how to build the pinned thanos binary; %[1]s is
// the target path.
const thanosBuildHelp = `thanos-verify: no thanos binary: set THANOS, or build Thanos ` + thanosVersion + ` into %[1]s:

  dir=$(GOTOOLCHAIN=go1.27.3 go mod download -json github.com/thanos-io/thanos@` + thanosVersion + ` | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  src=$(mktemp -d) && cp -r "$dir"/. "$src" && chmod -R u+w "$src"
  mkdir -p "%[2]s"
  (cd "$src" && GOTOOLCHAIN=go1.27.3 GOFLAGS=-mod=mod go build -tags netgo,slicelabels -o "%[1]s" ./cmd/thanos)
  rm -rf "$src"

Thanos needs Go 1.27.3 (GOTOOLCHAIN fetches it through the module proxy) and
the netgo,slicelabels tags; the build takes 10-20 minutes on 2 cores.
`

type options struct {
	hours       float64
	end         string
	downsample  bool
	services    int
	clusters    int
	interval    time.Duration
	dir         string
	keep        bool
	bucketOnly  string
	issues      string
	shipTimeout time.Duration
}

func main() {
	var o options
	flag.Float64Var(&o.hours, "hours", 30, "hours of history to backfill")
	flag.StringVar(&o.end, "end", "", "end of the backfilled history, RFC 3339 (default now)")
	flag.BoolVar(&o.downsample, "downsample", false, "backfill 54h ending 6h after a 48h boundary, so that the compactor downsamples (overrides -hours and -end)")
	flag.IntVar(&o.services, "services", 2, "services of the simulated mesh")
	flag.IntVar(&o.clusters, "clusters", 1, "clusters of the simulated mesh")
	flag.DurationVar(&o.interval, "interval", 2*time.Minute, "scrape interval of the backfill")
	flag.StringVar(&o.dir, "dir", "", "meshlens data directory to use (must not hold a TSDB yet); default a new temporary directory")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directory (it is always kept when a check fails)")
	flag.StringVar(&o.bucketOnly, "bucket-only", "", "skip meshlens: run only the Thanos checks on the bucket of this data directory")
	flag.StringVar(&o.issues, "issues", "", "comma-separated issues for thanos tools bucket verify --issues (default: Thanos's defaults)")
	flag.DurationVar(&o.shipTimeout, "ship-timeout", 10*time.Minute, "how long to wait for the shipper to upload the blocks after the backfill")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "thanos-verify: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}

	thanos, err := thanosBinary()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, o, thanos)
	stop()
	os.Exit(code)
}

// thanosBinary returns $THANOS, or the cached build if it exists.
func thanosBinary() (string, error) {
	if t := os.Getenv("THANOS"); t != "" {
		if _, err := os.Stat(t); err != nil {
			return "", fmt.Errorf("thanos-verify: THANOS=%s: %w", t, err)
		}
		return t, nil
	}
	dir, err := peers.Dir()
	if err != nil {
		return "", fmt.Errorf("thanos-verify: peers cache directory: %w", err)
	}
	vdir := filepath.Join(dir, "thanos-"+thanosVersion)
	bin := filepath.Join(vdir, "thanos")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf(thanosBuildHelp, bin, vdir)
	}
	return bin, nil
}

// run does every step and returns the exit code.
func run(ctx context.Context, o options, thanos string) int {
	if o.bucketOnly != "" {
		dir, err := filepath.Abs(o.bucketOnly)
		if err != nil {
			return fail("%v", err)
		}
		return report(thanosChecks(ctx, thanos, dir, o.issues))
	}

	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "thanos-verify"); err != nil {
			return fail("%v", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("%v", err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fail("%v", err)
	}
	err = prepare(ctx, o, dir)
	var problems []string
	if err == nil {
		problems, err = thanosChecks(ctx, thanos, dir, o.issues)
	}
	code := report(problems, err)
	if code != 0 || o.keep || o.dir != "" {
		step("data directory kept: %s (rerun the Thanos checks with -bucket-only %s)", dir, dir)
	} else {
		os.RemoveAll(dir)
	}
	return code
}

// report prints the verdict and returns the exit code.
func report(problems []string, err error) int {
	if err != nil {
		return fail("%v", err)
	}
	if len(problems) > 0 {
		fmt.Println()
		fmt.Printf("FAIL: Thanos %s does not accept the bucket as is (%d problems):\n", thanosVersion, len(problems))
		for _, p := range problems {
			fmt.Println("  - " + p)
		}
		return 1
	}
	fmt.Println()
	fmt.Printf("OK: thanos %s tools bucket verify reports no issue, and every block in the bucket loads\n", thanosVersion)
	return 0
}

// prepare builds the binaries and fills the bucket in dir: backfill,
// shipping, compaction.
func prepare(ctx context.Context, o options, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "tsdb")); err == nil {
		return fmt.Errorf("%s already holds a TSDB; give a new -dir or use -bucket-only", dir)
	}
	bin := filepath.Join(dir, "bin")
	step("building meshlens and meshsim")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+string(filepath.Separator), "./cmd/meshlens", "./cmd/meshsim")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/meshlens ./cmd/meshsim (run from the repository root): %v\n%s", err, out)
	}
	meshlens, meshsim := filepath.Join(bin, "meshlens"), filepath.Join(bin, "meshsim")

	hours, end := o.hours, o.end
	if o.downsample {
		// Compaction ranges are aligned to the Unix epoch.
		r := (48 * time.Hour).Milliseconds()
		boundary := (time.Now().Add(-6*time.Hour).UnixMilli() / r) * r
		hours, end = 54, time.UnixMilli(boundary).Add(6*time.Hour).UTC().Format(time.RFC3339)
	}

	addr, err := procstat.FreeAddr()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "meshlens.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	step("starting meshlens on %s, data directory %s (log: %s)", addr, dir, logPath)
	srv := exec.Command(meshlens, "--data-dir", dir, "--listen", addr)
	srv.Stdout, srv.Stderr = logFile, logFile
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start meshlens: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	stopped := false
	stopServer := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(2 * time.Minute):
			_ = srv.Process.Kill()
			<-exited
			return errors.New("meshlens did not stop within 2m of SIGTERM; killed")
		}
	}
	defer stopServer()

	if err := procstat.WaitReady("http://"+addr+"/-/ready", time.Minute); err != nil {
		return fmt.Errorf("meshlens not ready: %w\n%s", err, tail(logPath, 20))
	}

	args := []string{"backfill", "--url", "http://" + addr + "/api/v1/write",
		"--services", strconv.Itoa(o.services), "--clusters", strconv.Itoa(o.clusters),
		"--hours", strconv.FormatFloat(hours, 'f', -1, 64), "--interval", o.interval.String(), "--progress", "0"}
	if end != "" {
		args = append(args, "--end", end)
	}
	step("meshsim %s", strings.Join(args, " "))
	start := time.Now()
	fill := exec.CommandContext(ctx, meshsim, args...)
	fill.Stdout, fill.Stderr = os.Stderr, os.Stderr
	if err := fill.Run(); err != nil {
		return fmt.Errorf("meshsim backfill: %w\nmeshlens log:\n%s", err, tail(logPath, 20))
	}
	step("backfill done in %s", time.Since(start).Round(time.Second))

	if err := waitShipped(ctx, addr, dir, o.shipTimeout, exited); err != nil {
		return fmt.Errorf("%w\nmeshlens log:\n%s", err, tail(logPath, 20))
	}

	step("stopping meshlens")
	if err := stopServer(); err != nil {
		return fmt.Errorf("meshlens exited with %v\n%s", err, tail(logPath, 20))
	}

	step("meshlens compact --once --data-dir %s", dir)
	compact := exec.CommandContext(ctx, meshlens, "compact", "--once", "--data-dir", dir)
	out, err := compact.CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		return fmt.Errorf("meshlens compact --once: %w", err)
	}

	step("meshlens bucket ls --data-dir %s", dir)
	out, err = exec.CommandContext(ctx, meshlens, "bucket", "ls", "--data-dir", dir).CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		return fmt.Errorf("meshlens bucket ls: %w", err)
	}
	return nil
}

// headCompactable is how much data the head holds at most once Prometheus
// has cut every block it can: 1.5 block ranges of 2h (storage.tsdb.
// min_block_duration's default).
const headCompactable = 3 * time.Hour

// waitShipped waits until the head has cut every block it can and the
// shipper has uploaded every local block with samples.
func waitShipped(ctx context.Context, addr, dir string, timeout time.Duration, exited <-chan error) error {
	step("waiting for the head to cut its blocks and the shipper to upload them (it syncs every 30s)")
	deadline := time.Now().Add(timeout)
	var last string
	lastChange, lastPrint := time.Now(), time.Time{}
	for {
		local, err := localBlocks(filepath.Join(dir, "tsdb"))
		if err != nil {
			return err
		}
		shipped, err := bucketBlocks(filepath.Join(dir, "bucket"))
		if err != nil {
			return err
		}
		pending := 0
		for _, id := range local {
			if !slices.Contains(shipped, id) {
				pending++
			}
		}
		span, spanErr := headSpan(addr)
		headDone := spanErr == nil && span <= headCompactable
		state := fmt.Sprintf("local blocks %d, pending upload %d, in bucket %d, head span %s", len(local), pending, len(shipped), span)
		if spanErr != nil {
			state = fmt.Sprintf("local blocks %d, pending upload %d, in bucket %d, head span unknown (%v)", len(local), pending, len(shipped), spanErr)
			// Without the head's span, wait until the blocks stay as they
			// are for longer than the TSDB's 1m compaction loop.
			headDone = time.Since(lastChange) > 90*time.Second
		}
		if state != last {
			last, lastChange = state, time.Now()
		}
		if time.Since(lastPrint) > 15*time.Second {
			step("  %s", state)
			lastPrint = time.Now()
		}
		if len(local) > 0 && pending == 0 && headDone {
			step("  %s: all shipped", state)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("blocks not shipped within -ship-timeout %s: %s", timeout, state)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("meshlens exited while waiting for the shipper: %v", err)
		case <-time.After(2 * time.Second):
		}
	}
}

// headSpan asks meshlens for the time range of its head
// (/api/v1/status/tsdb headStats).
func headSpan(addr string) (time.Duration, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/status/tsdb")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/api/v1/status/tsdb: %s", resp.Status)
	}
	var r struct {
		Data struct {
			HeadStats *struct {
				MinTime int64 `json:"minTime"`
				MaxTime int64 `json:"maxTime"`
			} `json:"headStats"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("/api/v1/status/tsdb: %w", err)
	}
	if r.Data.HeadStats == nil {
		return 0, errors.New("/api/v1/status/tsdb: no headStats")
	}
	return time.Duration(r.Data.HeadStats.MaxTime-r.Data.HeadStats.MinTime) * time.Millisecond, nil
}

// localBlocks lists the blocks with samples in the TSDB directory.
func localBlocks(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if !e.IsDir() || !isULID(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "meta.json"))
		if err != nil {
			continue // Being written or deleted.
		}
		var m struct {
			Stats struct {
				NumSamples uint64 `json:"numSamples"`
			} `json:"stats"`
		}
		if json.Unmarshal(b, &m) == nil && m.Stats.NumSamples > 0 {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// bucketBlocks lists the blocks of the FILESYSTEM bucket in dir that have
// a meta.json, sorted.
func bucketBlocks(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if !e.IsDir() || !isULID(e.Name()) {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err == nil {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

var ulidRE = regexp.MustCompile(`^[0-7][0-9A-HJKMNP-TV-Z]{25}$`)

func isULID(s string) bool { return ulidRE.MatchString(s) }

// verifyIssueRE matches the log lines in which thanos tools bucket verify
// reports an issue (pkg/verifier: overlapped_blocks, index_known_issues,
// duplicated_compaction), and any error.
var verifyIssueRE = regexp.MustCompile(`msg="(found overlapped blocks|detected issue|found duplicated blocks)[^"]*"|level=error`)

// thanosChecks runs Thanos's verify, ls and inspect on <dir>/bucket and
// returns the problems they show.
func thanosChecks(ctx context.Context, thanos, dir, issues string) ([]string, error) {
	bucket := filepath.Join(dir, "bucket")
	if _, err := os.Stat(bucket); err != nil {
		return nil, fmt.Errorf("no bucket: %w", err)
	}
	objcfg := fmt.Sprintf("--objstore.config=type: FILESYSTEM\nconfig:\n  directory: %q\n", bucket)
	var problems []string

	verify := []string{"tools", "bucket", "verify", objcfg}
	for _, is := range strings.Split(issues, ",") {
		if is = strings.TrimSpace(is); is != "" {
			verify = append(verify, "--issues="+is)
		}
	}
	step("thanos tools bucket verify --objstore.config='type: FILESYSTEM, config: {directory: %s}'%s", bucket, issueFlags(verify))
	out, err := exec.CommandContext(ctx, thanos, verify...).CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		problems = append(problems, fmt.Sprintf("thanos tools bucket verify failed: %v: %s", err, lastLine(out)))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	completed := false
	for sc.Scan() {
		line := sc.Text()
		if verifyIssueRE.MatchString(line) {
			problems = append(problems, "verify: "+line)
		}
		if strings.Contains(line, `msg="verify task completed"`) {
			completed = true
		}
	}
	if err == nil && !completed {
		problems = append(problems, `thanos tools bucket verify did not log "verify task completed"`)
	}

	step("thanos tools bucket ls")
	out, err = exec.CommandContext(ctx, thanos, "tools", "bucket", "ls", objcfg).Output()
	if err != nil {
		problems = append(problems, fmt.Sprintf("thanos tools bucket ls failed: %v: %s", err, stderrOf(err)))
	} else {
		listed := strings.Fields(string(out))
		sort.Strings(listed)
		inBucket, err := bucketBlocks(bucket)
		if err != nil {
			return nil, err
		}
		fmt.Printf("    thanos lists %d blocks; the bucket holds %d blocks with a meta.json\n", len(listed), len(inBucket))
		for _, id := range inBucket {
			if !slices.Contains(listed, id) {
				problems = append(problems, fmt.Sprintf("thanos tools bucket ls omits block %s: Thanos's metadata fetcher could not decode %s/meta.json, so the block is invisible to its store gateway, compactor and verify", id, id))
			}
		}
	}

	step("thanos tools bucket inspect")
	out, err = exec.CommandContext(ctx, thanos, "tools", "bucket", "inspect", objcfg).Output()
	fmt.Print(indent(string(out)))
	if err != nil {
		problems = append(problems, fmt.Sprintf("thanos tools bucket inspect failed: %v: %s", err, stderrOf(err)))
	}
	return problems, nil
}

func issueFlags(args []string) string {
	var s []string
	for _, a := range args {
		if strings.HasPrefix(a, "--issues=") {
			s = append(s, a)
		}
	}
	if len(s) == 0 {
		return ""
	}
	return " " + strings.Join(s, " ")
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// tail returns the last n lines of the file name.
func tail(name string, n int) string {
	f, err := os.Open(name)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return indent(strings.Join(lines, "\n") + "\n")
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func step(format string, args ...any) {
	fmt.Printf("== "+format+"\n", args...)
}

func fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "thanos-verify: "+format+"\n", args...)
	return 1
}
