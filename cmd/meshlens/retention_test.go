package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/units"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/prompb"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/config"
	"github.com/meshlens/meshlens/tsdb"
	"github.com/meshlens/meshlens/tsdb/block"
)

// retentionConfig keeps 8h of metrics; the compactor runs every second and
// deletes marked blocks a second later.
const retentionConfig = `storage:
  local_retention: 1h
  tsdb:
    retention: 8h
compactor:
  interval: 1s
  delete_delay: 1s
`

// bucketState returns the metric blocks of the bucket: the live ones and
// the number marked for deletion.
func bucketState(t *testing.T, bkt objstore.Bucket) (live []*block.Meta, marked int) {
	t.Helper()
	ctx := context.Background()
	ids, err := block.IDs(ctx, bkt, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if ok, _ := bkt.Exists(ctx, id.String()+"/"+block.DeletionMarkFilename); ok {
			marked++
			continue
		}
		m, err := block.DownloadMeta(ctx, bkt, id)
		if err != nil {
			continue // partial: being uploaded or deleted
		}
		live = append(live, m)
	}
	return live, marked
}

func runtimeRetention(t *testing.T, s *testServer) string {
	t.Helper()
	var info struct {
		StorageRetention string `json:"storageRetention"`
	}
	apiData(t, s, "/api/v1/status/runtimeinfo", &info)
	return info.StorageRetention
}

// TestRetentionDefaultBucket: with the default bucket and no --compact, the
// server compacts the bucket and storage.tsdb.retention expires its metric
// blocks; runtimeinfo says so.
func TestRetentionDefaultBucket(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, retentionConfig, dir)
	if got, want := runtimeRetention(t, s), "8h (bucket: raw 8h, 5m 8h, 1h 8h)"; got != want {
		t.Errorf("storageRetention %q, want %q", got, want)
	}
	_, last, _ := writeHistory(t, s, "shipped_total", 20)
	bkt := dataDirBucket(t, dir)
	cutoff := last.Add(-8 * time.Hour).UnixMilli()
	var shippedOld bool
	eventually(t, 90*time.Second, "old blocks shipped, then deleted from the bucket", func() bool {
		if _, err := s.shipper.Sync(context.Background()); err != nil {
			t.Logf("sync: %v", err)
		}
		live, marked := bucketState(t, bkt)
		if marked > 0 {
			shippedOld = true
		}
		if len(live) == 0 || marked > 0 {
			return false
		}
		for _, m := range live {
			if m.MaxTime < cutoff {
				shippedOld = true
				return false
			}
		}
		// Every block of 20h was cut and shipped: the head holds the
		// last few hours only.
		return shippedOld && s.db.Head().MinTime() > cutoff
	})
	live, _ := bucketState(t, bkt)
	for _, m := range live {
		if m.MaxTime < cutoff {
			t.Errorf("block %s ending %s is past retention and still in the bucket", m.ULID, time.UnixMilli(m.MaxTime))
		}
	}
	if len(live) == 0 {
		t.Error("no block within retention left in the bucket")
	}
}

// TestRetentionCompactFalse: --compact=false leaves the default bucket
// alone; nothing expires there.
func TestRetentionCompactFalse(t *testing.T) {
	dir := t.TempDir()
	s := startServerFlags(t, retentionConfig, dir, "--compact=false")
	if s.compactor != nil {
		t.Fatal("compactor runs with --compact=false")
	}
	if got, want := runtimeRetention(t, s), "forever (bucket not compacted: --compact=false)"; got != want {
		t.Errorf("storageRetention %q, want %q", got, want)
	}
	_, last, _ := writeHistory(t, s, "shipped_total", 20)
	bkt := dataDirBucket(t, dir)
	cutoff := last.Add(-8 * time.Hour).UnixMilli()
	var old int
	eventually(t, 60*time.Second, "the 2h blocks of 20 hours in the bucket", func() bool {
		old = 0
		for _, m := range shippedMetas(t, s, bkt) {
			if m.MaxTime < cutoff {
				old++
			}
		}
		return old >= 5
	})
	time.Sleep(3 * time.Second) // three compactor intervals
	live, marked := bucketState(t, bkt)
	if marked > 0 {
		t.Errorf("%d blocks marked for deletion with --compact=false", marked)
	}
	n := 0
	for _, m := range live {
		if m.MaxTime < cutoff {
			n++
		}
	}
	if n < old {
		t.Errorf("%d blocks past retention left, want %d", n, old)
	}
}

func TestRetentionInfo(t *testing.T) {
	s3 := "storage:\n  bucket: {type: S3, config: {bucket: b, endpoint: e}}\n"
	for _, c := range []struct {
		yaml       string
		compacting bool
		want       string
	}{
		{"", true, "15d (bucket: raw 15d, 5m 15d, 1h 15d)"},
		{"storage:\n  tsdb: {retention_size: 100GiB}\n", true, "15d or 100GiB (bucket: raw 15d, 5m 15d, 1h 15d)"},
		{"storage:\n  tsdb: {retention: 0s, retention_size: 1GiB}\n", true, "1GiB (bucket: raw forever, 5m forever, 1h forever)"},
		{"compactor:\n  retention: {raw: 2d}\n", true, "15d (bucket: raw 2d, 5m 15d, 1h 15d)"},
		{"storage:\n  tsdb: {retention: 0s}\ncompactor:\n  retention: {raw: 2d}\n", true, "forever (bucket: raw 2d, 5m forever, 1h forever)"},
		{"", false, "forever (bucket not compacted: --compact=false)"},
		{s3 + "  tsdb: {retention_size: 100GiB}\n", true, "15d (bucket: raw 15d, 5m 15d, 1h 15d)"},
		{s3, false, "set by the bucket's compactor (local: 6h after upload)"},
	} {
		cfg, err := config.Load([]byte(c.yaml))
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		if got := retentionInfo(cfg, c.compacting); got != c.want {
			t.Errorf("%q, compacting %v: %q, want %q", c.yaml, c.compacting, got, c.want)
		}
	}
}

// TestRetentionSizeDefaultBucket: storage.tsdb.retention_size bounds
// <data-dir>/tsdb and the default bucket's metric blocks together; the
// server deletes the bucket's oldest blocks and keeps the newest.
func TestRetentionSizeDefaultBucket(t *testing.T) {
	dir := t.TempDir()
	// Ship 20h of 20 series without compacting.
	s := startServerFlags(t, retentionConfig, dir, "--compact=false")
	last := time.Now().Truncate(time.Minute)
	var series []prompb.TimeSeries
	for i := range 20 {
		ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: fmt.Sprintf("sized_%d_total", i)}}}
		for at := last.Add(-20 * time.Hour); !at.After(last); at = at.Add(time.Minute) {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: at.UnixMilli(), Value: float64(len(ts.Samples) * i)})
		}
		series = append(series, ts)
	}
	if code := postRaw(t, s.URL+"/api/v1/write", v1BodyFor(t, series...)); code != http.StatusNoContent {
		t.Fatalf("remote write: %d", code)
	}
	bkt := dataDirBucket(t, dir)
	var metas []block.Meta
	eventually(t, 60*time.Second, "the 2h blocks of 20 hours in the bucket", func() bool {
		metas = shippedMetas(t, s, bkt)
		return len(metas) >= 9
	})
	s.stop(t)
	// A restart deletes the shipped local blocks past local_retention;
	// measure the local TSDB after that, when it holds what the next start
	// finds.
	s = startServerFlags(t, retentionConfig, dir, "--compact=false")
	eventually(t, 30*time.Second, "shipped local blocks deleted", func() bool { return len(s.db.Blocks()) == 1 })
	s.stop(t)
	slices.SortFunc(metas, func(a, b block.Meta) int { return cmp.Compare(a.MaxTime, b.MaxTime) })
	// Room for the local TSDB and the five newest blocks.
	limit := dirBytes(filepath.Join(dir, "tsdb"))
	for _, m := range metas[len(metas)-5:] {
		limit += m.ExpectedSize()
	}
	cfg := strings.Replace(retentionConfig, "    retention: 8h\n", fmt.Sprintf("    retention: 0s\n    retention_size: %d\n", limit), 1)
	s = startServer(t, cfg, dir)
	if got := runtimeRetention(t, s); !strings.HasPrefix(got, units.Base2Bytes(limit).String()+" (bucket: ") {
		t.Errorf("storageRetention %q, want the size first", got)
	}
	var live []*block.Meta
	eventually(t, 30*time.Second, "the oldest blocks deleted", func() bool {
		var marked int
		live, marked = bucketState(t, bkt)
		return marked == 0 && len(live) < len(metas)
	})
	if len(live) == 0 {
		t.Fatal("every block deleted; want the newest within the bound")
	}
	oldestKept := live[0].MaxTime
	for _, m := range live {
		oldestKept = min(oldestKept, m.MaxTime)
	}
	keptIDs := map[ulid.ULID]bool{}
	for _, m := range live {
		keptIDs[m.ULID] = true
	}
	for _, m := range metas {
		if !keptIDs[m.ULID] && m.MaxTime > oldestKept {
			t.Errorf("block ending %s deleted while an older one, ending %s, stays", time.UnixMilli(m.MaxTime), time.UnixMilli(oldestKept))
		}
	}
	var total int64
	for _, m := range live {
		total += m.ExpectedSize()
	}
	local := dirBytes(filepath.Join(dir, "tsdb"))
	t.Logf("limit %d bytes: %d live blocks of %d bytes kept (%d shipped); local TSDB %d bytes", limit, len(live), total, len(metas), local)
	if total+local > limit {
		t.Errorf("bucket blocks %d bytes and local TSDB %d bytes are over the bound of %d", total, local, limit)
	}
}

// dataDirBucket opens the default bucket of the data directory dir.
func dataDirBucket(t *testing.T, dir string) objstore.Bucket {
	t.Helper()
	bkt, err := tsdb.NewBucket([]byte(fmt.Sprintf("type: FILESYSTEM\nconfig: {directory: %q}\n", filepath.Join(dir, "bucket"))), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return bkt
}
