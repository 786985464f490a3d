package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/internal/peers"
	"github.com/meshlens/meshlens/tsdb"
	"github.com/meshlens/meshlens/tsdb/block"
)

// writeHistory remote-writes one counter series with a sample every minute
// over the hours before now, so that the head cuts blocks from it.
func writeHistory(t *testing.T, s *testServer, name string, hours int) (first, last time.Time, n int) {
	t.Helper()
	last = time.Now().Truncate(time.Minute)
	first = last.Add(-time.Duration(hours) * time.Hour)
	var samples []prompb.Sample
	for ts := first; !ts.After(last); ts = ts.Add(time.Minute) {
		samples = append(samples, prompb.Sample{Timestamp: ts.UnixMilli(), Value: float64(len(samples))})
	}
	body := v1BodyFor(t, prompb.TimeSeries{
		Labels:  []prompb.Label{{Name: "__name__", Value: name}, {Name: "cluster", Value: "east"}},
		Samples: samples,
	})
	if code := postRaw(t, s.URL+"/api/v1/write", body); code != http.StatusNoContent {
		t.Fatalf("remote write: %d", code)
	}
	return first, last, len(samples)
}

// shippedMetas syncs the shipper until the bucket holds at least one block
// and returns the metas of the blocks there.
func shippedMetas(t *testing.T, s *testServer, bkt objstore.BucketReader) []block.Meta {
	t.Helper()
	var metas []block.Meta
	eventually(t, 60*time.Second, "a block in the bucket", func() bool {
		if _, err := s.shipper.Sync(context.Background()); err != nil {
			t.Logf("sync: %v", err)
		}
		metas = metas[:0]
		err := bkt.Iter(context.Background(), "", func(name string) error {
			r, err := bkt.Get(context.Background(), name+"meta.json")
			if bkt.IsObjNotFoundErr(err) {
				return nil
			}
			if err != nil {
				return err
			}
			defer r.Close()
			var m block.Meta
			if err := json.NewDecoder(r).Decode(&m); err != nil {
				return fmt.Errorf("%smeta.json: %w", name, err)
			}
			metas = append(metas, m)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(metas) > 0
	})
	return metas
}

// assertShipped checks a shipped block's meta.json is what Thanos requires
// and every sample written is still queryable.
func assertShipped(t *testing.T, s *testServer, metas []block.Meta, first, last time.Time, n int) {
	t.Helper()
	for _, m := range metas {
		if m.Thanos.Labels["meshlens_node"] == "" || m.Thanos.Labels["region"] != "eu-test" || m.Thanos.Downsample.Resolution != 0 {
			t.Errorf("block %s thanos section = %+v, want external labels with meshlens_node and resolution 0", m.ULID, m.Thanos)
		}
		if len(m.Thanos.Files) < 3 {
			t.Errorf("block %s lists files %v, want chunks, index and meta.json", m.ULID, m.Thanos.Files)
		}
	}
	var v struct {
		Result []struct {
			Values [][2]any `json:"values"`
		} `json:"result"`
	}
	apiData(t, s, fmt.Sprintf("/api/v1/query_range?query=shipped_total&start=%d&end=%d&step=60", first.Unix(), last.Unix()), &v)
	if len(v.Result) != 1 || len(v.Result[0].Values) != n {
		t.Errorf("range query returned %d series, want 1 with %d points", len(v.Result), n)
	}
}

// TestBlocksShipToDefaultBucket runs meshlens on its defaults: blocks cut from
// the head are uploaded to the FILESYSTEM bucket in <data-dir>/bucket with a
// Thanos meta.json, and the data stays queryable.
func TestBlocksShipToDefaultBucket(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "global:\n  external_labels: {region: eu-test}\n", dir)
	first, last, n := writeHistory(t, s, "shipped_total", 5)

	bkt, err := tsdb.NewBucket([]byte(fmt.Sprintf("type: FILESYSTEM\nconfig: {directory: %q}\n", filepath.Join(dir, "bucket"))), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	assertShipped(t, s, shippedMetas(t, s, bkt), first, last, n)
}

// TestBlocksShipToS3 ships blocks to a real S3 server (Versity S3 Gateway).
func TestBlocksShipToS3(t *testing.T) {
	bin := peers.Need(t, peers.Versitygw)
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "meshlens"), 0o755); err != nil { // the bucket
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--access", "meshlens", "--secret", "meshlens-secret", "--port", addr, "posix", root)
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	eventually(t, 30*time.Second, "versitygw listening", func() bool {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return true
	})
	bucketYAML := fmt.Sprintf(`type: S3
config:
  bucket: meshlens
  endpoint: %s
  access_key: meshlens
  secret_key: meshlens-secret
  insecure: true
  region: us-east-1
prefix: blocks
`, addr)
	indented := "    " + strings.ReplaceAll(strings.TrimSpace(bucketYAML), "\n", "\n    ")
	s := startServer(t, "global:\n  external_labels: {region: eu-test}\nstorage:\n  bucket:\n"+indented+"\n", "")
	first, last, n := writeHistory(t, s, "shipped_total", 5)

	bkt, err := tsdb.NewBucket([]byte(bucketYAML), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	assertShipped(t, s, shippedMetas(t, s, bkt), first, last, n)
}

// TestCompactCommand ships a day of data to the default bucket and runs
// `meshlens compact --once` over it: 2h blocks are merged into larger ones
// and their sources marked for deletion.
func TestCompactCommand(t *testing.T) {
	dir := t.TempDir()
	// meshlens compact is the bucket's compactor here.
	s := startServerFlags(t, "", dir, "--compact=false")
	writeHistory(t, s, "shipped_total", 20)
	bkt, err := tsdb.NewBucket([]byte(fmt.Sprintf("type: FILESYSTEM\nconfig: {directory: %q}\n", filepath.Join(dir, "bucket"))), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var before []block.Meta
	eventually(t, 60*time.Second, "the 2h blocks of 20 hours in the bucket", func() bool {
		before = shippedMetas(t, s, bkt)
		return len(before) >= 9
	})
	s.stop(t)

	var stderr strings.Builder
	if code := compactCommand(context.Background(), &stderr, []string{"--data-dir", dir, "--once", "--log.level", "warn"}); code != 0 {
		t.Fatalf("meshlens compact --once: exit %d\n%s", code, stderr.String())
	}
	marked, compacted := 0, 0
	err = bkt.Iter(context.Background(), "", func(name string) error {
		if ok, _ := bkt.Exists(context.Background(), name+block.DeletionMarkFilename); ok {
			marked++
		}
		r, err := bkt.Get(context.Background(), name+block.MetaFilename)
		if err != nil {
			return nil
		}
		defer r.Close()
		var m block.Meta
		if err := json.NewDecoder(r).Decode(&m); err != nil {
			return err
		}
		if m.Compaction.Level > 1 {
			compacted++
			if m.Thanos.Labels["meshlens_node"] == "" {
				t.Errorf("compacted block %s lost its external labels: %v", m.ULID, m.Thanos.Labels)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if compacted == 0 || marked < 4 {
		t.Errorf("after compaction: %d compacted blocks, %d blocks marked for deletion; want an 8h block from four 2h sources", compacted, marked)
	}

	// meshlens bucket ls shows the blocks with their level and marks;
	// inspect gives the same as JSON.
	var out, errOut strings.Builder
	if code := bucketCommand(context.Background(), &out, &errOut, []string{"ls", "--data-dir", dir}); code != 0 {
		t.Fatalf("meshlens bucket ls: exit %d: %s", code, errOut.String())
	}
	if lines := strings.Count(out.String(), "\n"); lines != len(before)+compacted+1 || !strings.Contains(out.String(), "deletion") {
		t.Errorf("meshlens bucket ls printed %d lines, want a header and %d blocks with deletion marks:\n%s", lines, len(before)+compacted, out.String())
	}
	out.Reset()
	if code := bucketCommand(context.Background(), &out, &errOut, []string{"inspect", "--data-dir", dir}); code != 0 {
		t.Fatalf("meshlens bucket inspect: exit %d: %s", code, errOut.String())
	}
	var infos []struct {
		CompactionLevel int               `json:"compactionLevel"`
		Labels          map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(out.String()), &infos); err != nil || len(infos) != len(before)+compacted {
		t.Errorf("meshlens bucket inspect: %v, %d blocks, want %d:\n%s", err, len(infos), len(before)+compacted, out.String())
	}
}

// TestQueriesSpanBucketAfterCompaction backfills a small simulated mesh over
// several block ranges, records query answers, then lets the blocks ship,
// leave the local disk and be compacted in the bucket: the same queries over
// the whole range must give the same answers, now served from the bucket.
func TestQueriesSpanBucketAfterCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills a mesh; not in -short")
	}
	meshsim := buildMeshsim(t)
	dir := t.TempDir()
	// meshlens compact is the bucket's compactor here.
	s := startServerFlags(t, "storage:\n  local_retention: 1h\n", dir, "--compact=false")
	end := time.Now().Truncate(time.Minute)
	cmd := exec.Command(meshsim, "backfill", "--url", s.URL+"/api/v1/write", "--services", "2", "--clusters", "1",
		"--hours", "10", "--interval", "2m", "--end", end.Format(time.RFC3339), "--progress", "0")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshsim backfill: %v", err)
	}
	start := end.Add(-10 * time.Hour)
	queries := []string{
		`sum by (destination_service_name) (rate(istio_requests_total{reporter="destination"}[10m]))`,
		`histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket[10m])))`,
		`count(istio_requests_total)`,
	}
	answer := func(q string) string {
		_, body := s.get(t, fmt.Sprintf("/api/v1/query_range?query=%s&start=%d&end=%d&step=600", url.QueryEscape(q), start.Unix(), end.Unix()))
		return body
	}
	before := map[string]string{}
	for _, q := range queries {
		before[q] = answer(q)
		if !strings.Contains(before[q], `"values"`) {
			t.Fatalf("%s before shipping: %s", q, before[q])
		}
	}

	// Ship, drop local blocks older than the local retention, compact.
	localBlocks := func() int { return len(s.db.Blocks()) }
	eventually(t, 60*time.Second, "blocks cut from the head", func() bool { return localBlocks() >= 3 })
	if _, err := s.shipper.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A restart reloads the blocks and applies the deletion policy at once
	// (a running server does so every minute).
	n := localBlocks()
	s.stop(t)
	s = startServerFlags(t, "storage:\n  local_retention: 1h\n", dir, "--compact=false")
	if localBlocks() >= n {
		t.Fatalf("local blocks: %d before, %d after the shipped ones passed local retention", n, localBlocks())
	}
	// The newest block stays, so that the head knows after a restart which
	// of its WAL is already in blocks and does not ship it again.
	if localBlocks() != 1 {
		t.Errorf("local blocks after retention: %d, want the newest one", localBlocks())
	}
	var stderr strings.Builder
	if code := compactCommand(context.Background(), &stderr, []string{"--data-dir", dir, "--once", "--log.level", "warn"}); code != 0 {
		t.Fatalf("meshlens compact --once: exit %d\n%s", code, stderr.String())
	}
	if err := s.bucket.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, q := range queries {
		if got := answer(q); got != before[q] {
			t.Errorf("%s: answers differ after compaction\nbefore: %.400s\nafter:  %.400s", q, before[q], got)
		}
	}
}

// TestDownsampledBucketServesLongRanges backfills two and a quarter days of a
// small mesh, ships it, compacts it into a 2d block with a 5m copy, then
// applies a raw retention that deletes the raw data: a long-range query with a
// 1h step is then answered from the 5m aggregates, and max_over_time (the
// max aggregate) gives exactly the answers the raw data gave.
func TestDownsampledBucketServesLongRanges(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills two days of a mesh; not in -short")
	}
	meshsim := buildMeshsim(t)
	dir := t.TempDir()
	cfg := "storage:\n  local_retention: 1h\ncompactor:\n"
	// meshlens compact is the bucket's compactor here.
	s := startServerFlags(t, cfg, dir, "--compact=false")
	// End 6h past a 2d boundary, so that one whole 2d range is complete.
	end := time.Now().Truncate(48 * time.Hour).Add(6 * time.Hour)
	if end.After(time.Now()) {
		end = end.Add(-48 * time.Hour)
	}
	start := end.Add(-54 * time.Hour)
	cmd := exec.Command(meshsim, "backfill", "--url", s.URL+"/api/v1/write", "--services", "2", "--clusters", "1",
		"--hours", "54", "--interval", "2m", "--end", end.Format(time.RFC3339), "--progress", "0")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshsim backfill: %v", err)
	}
	q := `max by (destination_service_name) (max_over_time(istio_requests_total{reporter="destination"}[1h]))`
	// The 2d block spans [start+6h, start+54h) at the latest; ask for the
	// hours inside it.
	from, to := start.Add(8*time.Hour), end.Add(-8*time.Hour)
	path := fmt.Sprintf("/api/v1/query_range?query=%s&start=%d&end=%d&step=3600", url.QueryEscape(q), from.Unix(), to.Unix())
	_, raw := s.get(t, path)
	if !strings.Contains(raw, `"values"`) {
		t.Fatalf("raw answer: %.300s", raw)
	}

	eventually(t, 120*time.Second, "the head cut into blocks", func() bool {
		return s.db.Head().MinTime() >= end.Add(-4*time.Hour).UnixMilli()
	})
	if _, err := s.shipper.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.stop(t)
	compactOnce := func(yaml string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "meshlens.yml")
		if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		if code := compactCommand(context.Background(), &stderr, []string{"--data-dir", dir, "--config", f, "--once", "--log.level", "warn"}); code != 0 {
			t.Fatalf("meshlens compact --once: exit %d\n%s", code, stderr.String())
		}
	}
	compactOnce(cfg)
	compactOnce(cfg)
	// Raw data older than 12h goes; the 5m copy stays.
	compactOnce(cfg + "  retention: {raw: 12h}\n")

	bkt, err := tsdb.NewBucket([]byte(fmt.Sprintf("type: FILESYSTEM\nconfig: {directory: %q}\n", filepath.Join(dir, "bucket"))), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var fiveMinute, oldRaw int
	err = bkt.Iter(context.Background(), "", func(name string) error {
		if marked, _ := bkt.Exists(context.Background(), name+block.DeletionMarkFilename); marked {
			return nil // invisible to queries; deleted after compactor.delete_delay
		}
		r, err := bkt.Get(context.Background(), name+block.MetaFilename)
		if err != nil {
			return nil
		}
		defer r.Close()
		var m block.Meta
		if err := json.NewDecoder(r).Decode(&m); err != nil {
			return err
		}
		switch {
		case m.Thanos.Downsample.Resolution == 300000:
			fiveMinute++
		case time.UnixMilli(m.MaxTime).Before(to):
			oldRaw++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fiveMinute == 0 || oldRaw > 0 {
		t.Fatalf("bucket after compaction and retention: %d 5m blocks, %d raw blocks left in the queried range; want a 5m block and no raw data there", fiveMinute, oldRaw)
	}

	s = startServerFlags(t, cfg, dir, "--compact=false")
	_, got := s.get(t, path)
	want, have := matrixPoints(t, raw), matrixPoints(t, got)
	if len(have) != len(want) {
		t.Errorf("5m answer has %d points, raw %d", len(have), len(want))
		for k, v := range have {
			if _, ok := want[k]; !ok {
				t.Logf("only in the 5m answer: %s %s", k, v)
			}
		}
	}
	for k, v := range want {
		if have[k] != v {
			t.Errorf("%s: 5m answer %q, raw %q", k, have[k], v)
		}
	}
}

// matrixPoints flattens a query_range answer into series@time -> value.
func matrixPoints(t *testing.T, body string) map[string]string {
	t.Helper()
	var env struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("%v: %.300s", err, body)
	}
	out := map[string]string{}
	for _, r := range env.Data.Result {
		for _, v := range r.Values {
			out[fmt.Sprintf("%v@%.0f", r.Metric, v[0])] = fmt.Sprint(v[1])
		}
	}
	return out
}
