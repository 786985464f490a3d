package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

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
	bkt, err := tsdb.NewBucket([]byte(fmt.Sprintf("type: FILESYSTEM\nconfig: {directory: %q}\n", filepath.Join(dir, "bucket"))), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	bkt, err := tsdb.NewBucket([]byte(fmt.Sprintf("type: FILESYSTEM\nconfig: {directory: %q}\n", filepath.Join(dir, "bucket"))), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
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
