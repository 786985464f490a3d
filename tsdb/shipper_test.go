package tsdb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/internal/faultbucket"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/blocktest"
)

var extLabels = labels.FromStrings("cluster", "eu-1", "replica", "a")

var discard = slog.New(slog.DiscardHandler)

// testBlockHours is how far makeBlocks writes samples. With 1h blocks the
// head keeps the last 1.5h, so blocks end at 1h, 2h, 3h, 4h and 5h.
const testBlockHours = 6

const wantBlocks = 5

// openTestDB opens a TSDB in dir with 1h blocks and no local compaction,
// as when shipping.
func openTestDB(t *testing.T, dir string, blocksToDelete func([]*promtsdb.Block) map[ulid.ULID]struct{}) *DB {
	t.Helper()
	db, err := Open(dir, Options{
		MinBlockDuration: time.Hour,
		MaxBlockDuration: time.Hour,
		BlocksToDelete:   blocksToDelete,
	}, discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// appendSamples writes three series with a sample a minute in [0, hours)
// and cuts the head into blocks.
func appendSamples(t *testing.T, db *DB, hours int) {
	t.Helper()
	app := db.Appender(context.Background())
	for ts := int64(0); ts < int64(hours)*time.Hour.Milliseconds(); ts += time.Minute.Milliseconds() {
		for _, inst := range []string{"a", "b", "c"} {
			lset := labels.FromStrings("__name__", "istio_requests_total", "instance", inst)
			if _, err := app.Append(0, lset, ts, float64(ts)/1000); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// makeBlocks fills a new TSDB directory with wantBlocks blocks and returns
// it with the blocks' metas, oldest first. The TSDB is closed.
func makeBlocks(t *testing.T) (string, []promtsdb.BlockMeta) {
	t.Helper()
	dir := t.TempDir()
	db := openTestDB(t, dir, nil)
	appendSamples(t, db, testBlockHours)
	metas, _ := db.BlockMetas()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if len(metas) != wantBlocks {
		t.Fatalf("got %d blocks, want %d", len(metas), wantBlocks)
	}
	return dir, metas
}

func newTestShipper(t *testing.T, dir string, bkt objstore.Bucket, reg prometheus.Registerer, opts ...func(*ShipperOptions)) *Shipper {
	t.Helper()
	o := ShipperOptions{
		Dir:        dir,
		Bucket:     bkt,
		Labels:     extLabels,
		Logger:     discard,
		Registerer: reg,
		Attempts:   3,
		MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
	}
	for _, f := range opts {
		f(&o)
	}
	s, err := NewShipper(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestShipperUploadsBlocks(t *testing.T) {
	ctx := context.Background()
	dir, metas := makeBlocks(t)
	mem := objstore.NewInMemBucket()
	bkt := &blocktest.OrderBucket{Bucket: mem}
	reg := prometheus.NewRegistry()
	s := newTestShipper(t, dir, bkt, reg)

	n, err := s.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != wantBlocks {
		t.Fatalf("uploaded %d blocks, want %d", n, wantBlocks)
	}

	for _, m := range metas {
		id := m.ULID.String()
		bdir := filepath.Join(dir, id)
		t.Run(id, func(t *testing.T) {
			if !s.Shipped(m.ULID) {
				t.Error("not Shipped")
			}
			// Every file, byte for byte.
			lm, err := block.NewMeta(bdir, extLabels, block.SourceShipper)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range lm.Thanos.Files {
				if f.RelPath == block.MetaFilename {
					continue
				}
				local, err := os.ReadFile(filepath.Join(bdir, f.RelPath))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(mem.Objects()[path.Join(id, f.RelPath)], local) {
					t.Errorf("%s differs from the local file", f.RelPath)
				}
			}

			// meta.json last.
			var order []string
			for _, u := range bkt.Uploads() {
				if strings.HasPrefix(u, id+"/") {
					order = append(order, strings.TrimPrefix(u, id+"/"))
				}
			}
			if want := []string{"chunks/000001", block.IndexFilename, block.MetaFilename}; !slices.Equal(order, want) {
				t.Errorf("upload order %v, want %v", order, want)
			}

			raw := mem.Objects()[path.Join(id, block.MetaFilename)]
			checkMetaJSON(t, raw, m, bdir)

			// The uploaded block opens and holds what the local one does.
			dl := downloadBlock(t, mem, m.ULID)
			if got, want := readSeries(t, dl), readSeries(t, bdir); !equalSeries(got, want) {
				t.Errorf("downloaded block has %d series, local %d, or samples differ", len(got), len(want))
			}
		})
	}

	rec, err := readShipperRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec) != wantBlocks {
		t.Errorf("record lists %d blocks, want %d", len(rec), wantBlocks)
	}
	if got := promtestutil.ToFloat64(s.metrics.uploads); got != wantBlocks {
		t.Errorf("uploads_total = %v", got)
	}
	if got := promtestutil.ToFloat64(s.metrics.pending); got != 0 {
		t.Errorf("blocks_pending = %v", got)
	}
	if got := promtestutil.ToFloat64(s.metrics.lastSync); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last_successful_sync_timestamp_seconds = %v", got)
	}
	if c, err := promtestutil.GatherAndCount(reg); err != nil || c != 4 {
		t.Errorf("registered %d metrics (%v), want 4", c, err)
	}

	// A second pass has nothing to do.
	before := len(bkt.Uploads())
	if n, err := s.Sync(ctx); err != nil || n != 0 {
		t.Fatalf("second Sync: %d, %v", n, err)
	}
	if len(bkt.Uploads()) != before {
		t.Error("second Sync uploaded again")
	}
}

// checkMetaJSON checks an uploaded meta.json against Thanos's layout.
func checkMetaJSON(t *testing.T, raw []byte, want promtsdb.BlockMeta, bdir string) {
	t.Helper()
	m, err := block.ReadMeta(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.ULID != want.ULID || m.MinTime != want.MinTime || m.MaxTime != want.MaxTime || m.Stats != want.Stats || m.Compaction.Level != 1 {
		t.Errorf("block meta %+v, want %+v", m.BlockMeta, want)
	}
	if !labels.Equal(labels.FromMap(m.Thanos.Labels), extLabels) {
		t.Errorf("thanos labels %v, want %v", m.Thanos.Labels, extLabels)
	}
	if m.Thanos.Source != block.SourceShipper || m.Thanos.Downsample.Resolution != 0 {
		t.Errorf("thanos source %q resolution %d", m.Thanos.Source, m.Thanos.Downsample.Resolution)
	}
	if !slices.Equal(m.Thanos.SegmentFiles, []string{"000001"}) {
		t.Errorf("segment_files %v", m.Thanos.SegmentFiles)
	}
	var wantFiles []block.File
	for _, rel := range []string{"chunks/000001", block.IndexFilename} {
		fi, err := os.Stat(filepath.Join(bdir, rel))
		if err != nil {
			t.Fatal(err)
		}
		wantFiles = append(wantFiles, block.File{RelPath: rel, SizeBytes: fi.Size()})
	}
	wantFiles = append(wantFiles, block.File{RelPath: block.MetaFilename})
	if !slices.Equal(m.Thanos.Files, wantFiles) {
		t.Errorf("files %+v, want %+v", m.Thanos.Files, wantFiles)
	}

	// The JSON itself, as Thanos's metadata.Meta writes it.
	var doc struct {
		Thanos map[string]json.RawMessage `json:"thanos"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"labels", "downsample", "source", "segment_files", "files"} {
		if _, ok := doc.Thanos[k]; !ok {
			t.Errorf("thanos section lacks %q", k)
		}
	}
	if got := string(doc.Thanos["downsample"]); strings.Join(strings.Fields(got), "") != `{"resolution":0}` {
		t.Errorf("downsample = %s", got)
	}
	if !bytes.Contains(raw, []byte(`"rel_path": "meta.json"`+"\n")) || !bytes.Contains(raw, []byte(`"size_bytes": `)) {
		t.Errorf("files entries not in Thanos's layout:\n%s", raw)
	}
}

func downloadBlock(t *testing.T, bkt objstore.BucketReader, id ulid.ULID) string {
	t.Helper()
	return blocktest.Download(t, bkt, id)
}

type sample struct {
	t int64
	v float64
}

// readSeries opens the block in dir and reads every sample of it.
func readSeries(t *testing.T, dir string) map[string][]sample {
	t.Helper()
	b, err := promtsdb.OpenBlock(discard, dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q, err := promtsdb.NewBlockQuerier(b, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string][]sample{}
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		it := ss.At().Iterator(nil)
		key := ss.At().Labels().String()
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			out[key] = append(out[key], sample{ts, v})
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("block %s has no series", dir)
	}
	return out
}

func equalSeries(a, b map[string][]sample) bool {
	if len(a) != len(b) {
		return false
	}
	for k, s := range a {
		if !slices.Equal(s, b[k]) {
			return false
		}
	}
	return true
}

// blockObjects are the object names of the local block in the bucket.
func blockObjects(t *testing.T, dir string, id ulid.ULID) []string {
	t.Helper()
	m, err := block.NewMeta(filepath.Join(dir, id.String()), extLabels, block.SourceShipper)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range m.Thanos.Files {
		names = append(names, path.Join(id.String(), f.RelPath))
	}
	return names
}

func TestShipperFailedUploadsLeaveNoMeta(t *testing.T) {
	for _, failing := range []string{"/chunks/", "/index", "/meta.json"} {
		t.Run(strings.Trim(failing, "/"), func(t *testing.T) {
			ctx := context.Background()
			dir, metas := makeBlocks(t)
			mem := objstore.NewInMemBucket()
			fb := faultbucket.New(mem, 1)
			fb.FailUploads(func(name string) bool { return strings.Contains(name, failing) })
			s := newTestShipper(t, dir, fb, nil)

			n, err := s.Sync(ctx)
			if err == nil || n != 0 {
				t.Fatalf("Sync with failing %s uploads: %d, %v", failing, n, err)
			}
			var ferr *faultbucket.Error
			if !errors.As(err, &ferr) {
				t.Errorf("error does not carry the bucket's error: %v", err)
			}
			for _, m := range metas {
				if _, ok := mem.Objects()[path.Join(m.ULID.String(), block.MetaFilename)]; ok {
					t.Errorf("partial block %s has meta.json in the bucket", m.ULID)
				}
				if s.Shipped(m.ULID) {
					t.Errorf("partial block %s counted as shipped", m.ULID)
				}
				if !strings.Contains(err.Error(), m.ULID.String()) {
					t.Errorf("error does not name block %s", m.ULID)
				}
			}
			if got := promtestutil.ToFloat64(s.metrics.failures); got != wantBlocks {
				t.Errorf("upload_failures_total = %v", got)
			}
			if got := promtestutil.ToFloat64(s.metrics.pending); got != wantBlocks {
				t.Errorf("blocks_pending = %v", got)
			}
			if got := promtestutil.ToFloat64(s.metrics.lastSync); got != 0 {
				t.Errorf("last_successful_sync_timestamp_seconds = %v after a failed sync", got)
			}

			fb.Clear()
			before := map[string]int{}
			for _, m := range metas {
				for _, name := range blockObjects(t, dir, m.ULID) {
					before[name] = fb.CallsFor(faultbucket.OpUpload, name)
				}
			}
			n, err = s.Sync(ctx)
			if err != nil || n != wantBlocks {
				t.Fatalf("Sync after clearing faults: %d, %v", n, err)
			}
			for name, c := range before {
				if got := fb.CallsFor(faultbucket.OpUpload, name) - c; got != 1 {
					t.Errorf("%s uploaded %d times after faults cleared, want 1", name, got)
				}
			}
			rec, err := readShipperRecord(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range metas {
				if !slices.Contains(rec, m.ULID) || !s.Shipped(m.ULID) {
					t.Errorf("block %s not recorded as shipped", m.ULID)
				}
			}
		})
	}
}

func TestShipperRetriesRandomFailures(t *testing.T) {
	ctx := context.Background()
	dir, metas := makeBlocks(t)
	mem := objstore.NewInMemBucket()
	fb := faultbucket.New(mem, 7)
	fb.FailRandomly(0.3, faultbucket.OpUpload, faultbucket.OpExists)
	s := newTestShipper(t, dir, fb, nil, func(o *ShipperOptions) { o.Attempts = 4 })

	total, syncs := 0, 0
	for ; syncs < 20; syncs++ {
		n, err := s.Sync(ctx)
		total += n
		if err == nil {
			break
		}
	}
	if syncs == 20 {
		t.Fatal("syncs did not converge")
	}
	if total != wantBlocks {
		t.Errorf("uploaded %d blocks in all, want %d", total, wantBlocks)
	}
	if fb.Calls(faultbucket.OpUpload) <= 3*wantBlocks {
		t.Errorf("only %d uploads: the faults did not fire", fb.Calls(faultbucket.OpUpload))
	}
	for _, m := range metas {
		if !s.Shipped(m.ULID) {
			t.Errorf("block %s not shipped", m.ULID)
		}
		dl := downloadBlock(t, mem, m.ULID)
		if !equalSeries(readSeries(t, dl), readSeries(t, filepath.Join(dir, m.ULID.String()))) {
			t.Errorf("block %s differs in the bucket", m.ULID)
		}
	}
}

func TestShipperStalledUpload(t *testing.T) {
	dir, metas := makeBlocks(t)
	mem := objstore.NewInMemBucket()
	fb := faultbucket.New(mem, 1)
	stuck := metas[0].ULID
	fb.StallUploads(func(name string) bool { return name == path.Join(stuck.String(), block.IndexFilename) })

	// Cancelling the context ends a stalled Sync.
	s := newTestShipper(t, dir, fb, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled Sync: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stalled Sync took %v after its context ended", d)
	}
	if s.Shipped(stuck) {
		t.Fatal("stalled block counted as shipped")
	}

	// With a bound per try, the stalled block fails and the others ship.
	s = newTestShipper(t, dir, fb, nil, func(o *ShipperOptions) {
		o.AttemptTimeout = 50 * time.Millisecond
		o.Attempts = 2
	})
	n, err := s.Sync(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), stuck.String()) {
		t.Fatalf("Sync: %v, want the stalled block's timeout", err)
	}
	if n != wantBlocks-1 {
		t.Fatalf("uploaded %d blocks past the stalled one, want %d", n, wantBlocks-1)
	}
	if _, ok := mem.Objects()[path.Join(stuck.String(), block.MetaFilename)]; ok {
		t.Fatal("stalled block has meta.json in the bucket")
	}

	fb.Clear()
	if n, err := s.Sync(context.Background()); err != nil || n != 1 {
		t.Fatalf("Sync after release: %d, %v", n, err)
	}
	if !s.Shipped(stuck) {
		t.Fatal("released block not shipped")
	}
}

func TestShipperRestart(t *testing.T) {
	ctx := context.Background()
	dir, metas := makeBlocks(t)
	mem := objstore.NewInMemBucket()
	if n, err := newTestShipper(t, dir, mem, nil).Sync(ctx); err != nil || n != wantBlocks {
		t.Fatalf("first Sync: %d, %v", n, err)
	}

	t.Run("with record", func(t *testing.T) {
		fb := faultbucket.New(mem, 1)
		s := newTestShipper(t, dir, fb, nil)
		for _, m := range metas {
			if !s.Shipped(m.ULID) {
				t.Errorf("block %s not Shipped before the first Sync", m.ULID)
			}
		}
		if n, err := s.Sync(ctx); err != nil || n != 0 {
			t.Fatalf("Sync: %d, %v", n, err)
		}
		if c := fb.Calls(faultbucket.OpUpload) + fb.Calls(faultbucket.OpExists); c != 0 {
			t.Errorf("%d bucket calls, want none", c)
		}
	})

	t.Run("without record", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, ShipperRecordFilename)); err != nil {
			t.Fatal(err)
		}
		fb := faultbucket.New(mem, 1)
		s := newTestShipper(t, dir, fb, nil)
		if s.Shipped(metas[0].ULID) {
			t.Error("Shipped without record or bucket check")
		}
		if n, err := s.Sync(ctx); err != nil || n != 0 {
			t.Fatalf("Sync: %d, %v", n, err)
		}
		if c := fb.Calls(faultbucket.OpUpload); c != 0 {
			t.Errorf("%d uploads, want none", c)
		}
		if c := fb.Calls(faultbucket.OpExists); c != wantBlocks {
			t.Errorf("%d existence checks, want %d", c, wantBlocks)
		}
		rec, err := readShipperRecord(dir)
		if err != nil || len(rec) != wantBlocks {
			t.Fatalf("rewritten record: %v, %v", rec, err)
		}
		for _, m := range metas {
			if !s.Shipped(m.ULID) {
				t.Errorf("block %s not Shipped", m.ULID)
			}
		}
	})

	t.Run("corrupt record", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, ShipperRecordFilename), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		fb := faultbucket.New(mem, 1)
		s := newTestShipper(t, dir, fb, nil)
		if n, err := s.Sync(ctx); err != nil || n != 0 || fb.Calls(faultbucket.OpUpload) != 0 {
			t.Fatalf("Sync: %d, %v, %d uploads", n, err, fb.Calls(faultbucket.OpUpload))
		}
		if _, err := readShipperRecord(dir); err != nil {
			t.Fatalf("record not rewritten: %v", err)
		}
	})
}

func TestShipperRun(t *testing.T) {
	dir, metas := makeBlocks(t)
	s := newTestShipper(t, dir, objstore.NewInMemBucket(), nil, func(o *ShipperOptions) { o.Interval = 10 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !s.Shipped(metas[len(metas)-1].ULID) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not ship the blocks")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestNewShipperValidates(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	for name, o := range map[string]ShipperOptions{
		"no dir":      {Bucket: bkt, Labels: extLabels},
		"no bucket":   {Dir: "x", Labels: extLabels},
		"no labels":   {Dir: "x", Bucket: bkt},
		"empty value": {Dir: "x", Bucket: bkt, Labels: labels.FromStrings("cluster", "")},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewShipper(o); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestBlocksToDelete runs the deletion policy in a real TSDB. Blocks end at
// 1h … 5h; the clock says 10h and local retention is 7h, so blocks ending
// before 3h are old.
func TestBlocksToDelete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	mem := objstore.NewInMemBucket()
	fb := faultbucket.New(mem, 1)
	s := newTestShipper(t, dir, fb, nil, func(o *ShipperOptions) { o.Attempts = 1 })
	s.now = func() time.Time { return time.UnixMilli(0).Add(10 * time.Hour) }
	policy := s.BlocksToDelete(7 * time.Hour)

	db := openTestDB(t, dir, policy)
	appendSamples(t, db, testBlockHours)
	metas, _ := db.BlockMetas()
	if len(metas) != wantBlocks {
		t.Fatalf("got %d blocks, want %d", len(metas), wantBlocks)
	}
	oldUnshipped, oldShipped, edgeShipped, recentShipped, recentDeletable := metas[0], metas[1], metas[2], metas[3], metas[4]

	// Nothing is shipped yet, so nothing went, old as it is.
	for _, m := range metas {
		if _, err := os.Stat(filepath.Join(dir, m.ULID.String())); err != nil {
			t.Fatalf("block %s deleted before shipping: %v", m.ULID, err)
		}
	}

	fb.FailUploads(func(name string) bool { return strings.HasPrefix(name, oldUnshipped.ULID.String()+"/") })
	if n, err := s.Sync(ctx); err == nil || n != wantBlocks-1 {
		t.Fatalf("Sync: %d, %v", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Prometheus marks blocks deletable after a compaction that leaves
	// nothing; the policy honours that for shipped blocks only.
	markDeletable(t, filepath.Join(dir, oldUnshipped.ULID.String()))
	markDeletable(t, filepath.Join(dir, recentDeletable.ULID.String()))

	// Reopening reloads the blocks through the policy.
	db = openTestDB(t, dir, policy)
	defer db.Close()

	for _, c := range []struct {
		name string
		m    promtsdb.BlockMeta
		kept bool
	}{
		{"old unshipped (and marked deletable)", oldUnshipped, true},
		{"old shipped", oldShipped, false},
		{"shipped, ends at the cutoff", edgeShipped, true},
		{"recent shipped", recentShipped, true},
		{"recent shipped marked deletable", recentDeletable, false},
	} {
		_, err := os.Stat(filepath.Join(dir, c.m.ULID.String()))
		if kept := err == nil; kept != c.kept {
			t.Errorf("%s block (maxt %s): kept=%v, want %v", c.name, time.Duration(c.m.MaxTime)*time.Millisecond, kept, c.kept)
		}
	}
	if got := len(db.Blocks()); got != 3 {
		t.Errorf("TSDB has %d blocks loaded, want 3", got)
	}

	// Once shipped, the old block goes at the next reload.
	fb.Clear()
	if n, err := s.Sync(ctx); err != nil || n != 1 {
		t.Fatalf("Sync: %d, %v", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTestDB(t, dir, policy)
	defer db.Close()
	if _, err := os.Stat(filepath.Join(dir, oldUnshipped.ULID.String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("shipped old block still on disk: %v", err)
	}
}

func markDeletable(t *testing.T, dir string) {
	t.Helper()
	m, err := block.ReadPrometheusMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	m.Compaction.Deletable = true
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, block.MetaFilename), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestShipperCompactedBlocks covers a TSDB that compacts locally after all:
// a compacted block whose sources are shipped counts as shipped without an
// upload; one whose sources never made it is uploaded.
func TestShipperCompactedBlocks(t *testing.T) {
	compact := func(t *testing.T, dir string) promtsdb.BlockMeta {
		t.Helper()
		db, err := Open(dir, Options{MinBlockDuration: time.Hour, MaxBlockDuration: 4 * time.Hour}, discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Compact(context.Background()); err != nil {
			t.Fatal(err)
		}
		metas, _ := db.BlockMetas()
		if metas[0].Compaction.Level != 2 {
			t.Fatalf("oldest block has level %d after compaction, want 2", metas[0].Compaction.Level)
		}
		return metas[0]
	}

	t.Run("sources shipped", func(t *testing.T) {
		ctx := context.Background()
		dir, _ := makeBlocks(t)
		mem := objstore.NewInMemBucket()
		if n, err := newTestShipper(t, dir, mem, nil).Sync(ctx); err != nil || n != wantBlocks {
			t.Fatalf("Sync: %d, %v", n, err)
		}
		merged := compact(t, dir)

		fb := faultbucket.New(mem, 1)
		s := newTestShipper(t, dir, fb, nil)
		if n, err := s.Sync(ctx); err != nil || n != 0 {
			t.Fatalf("Sync after compaction: %d, %v", n, err)
		}
		if fb.Calls(faultbucket.OpUpload) != 0 {
			t.Error("compacted block uploaded though its sources are in the bucket")
		}
		if !s.Shipped(merged.ULID) {
			t.Error("compacted block not counted as shipped")
		}
		rec, err := readShipperRecord(dir)
		if err != nil || !slices.Contains(rec, merged.ULID) || len(rec) != wantBlocks-len(merged.Compaction.Sources)+1 {
			t.Errorf("record %v (%v) should list the compacted block and drop its deleted sources", rec, err)
		}
	})

	t.Run("sources not shipped", func(t *testing.T) {
		ctx := context.Background()
		dir, _ := makeBlocks(t)
		merged := compact(t, dir)
		mem := objstore.NewInMemBucket()
		s := newTestShipper(t, dir, mem, nil)
		if n, err := s.Sync(ctx); err != nil || n != wantBlocks-len(merged.Compaction.Sources)+1 {
			t.Fatalf("Sync: %d, %v", n, err)
		}
		if _, ok := mem.Objects()[path.Join(merged.ULID.String(), block.MetaFilename)]; !ok {
			t.Error("compacted block holding unshipped data not uploaded")
		}
	})
}
