package tsdb

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
)

func TestFilesystemBucketEndToEnd(t *testing.T) {
	ctx := context.Background()
	dir, metas := makeBlocks(t)
	root := t.TempDir()
	reg := prometheus.NewRegistry()
	bkt, err := NewBucket(fmt.Appendf(nil, "type: filesystem\nconfig:\n  directory: %s\nprefix: metrics\n", root), discard, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer bkt.Close()
	if bkt.Provider() != objstore.FILESYSTEM {
		t.Fatalf("provider %s", bkt.Provider())
	}

	s := newTestShipper(t, dir, bkt, nil)
	if n, err := s.Sync(ctx); err != nil || n != wantBlocks {
		t.Fatalf("Sync: %d, %v", n, err)
	}

	var got []string
	if err := bkt.Iter(ctx, "", func(name string) error {
		got = append(got, name)
		return nil
	}, objstore.WithRecursiveIter()); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range metas {
		want = append(want, blockObjects(t, dir, m.ULID)...)
		// The prefix is a directory under the bucket's root.
		if _, err := os.Stat(filepath.Join(root, "metrics", m.ULID.String(), block.MetaFilename)); err != nil {
			t.Error(err)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("bucket holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	r, err := bkt.Get(ctx, path.Join(metas[0].ULID.String(), block.MetaFilename))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m, err := block.ReadMeta(r)
	if err != nil || m.ULID != metas[0].ULID || m.Thanos.Labels["cluster"] != "eu-1" {
		t.Fatalf("meta.json read back: %+v, %v", m, err)
	}
	if n, err := promtestutil.GatherAndCount(reg, "objstore_bucket_operations_total"); err != nil || n == 0 {
		t.Errorf("bucket metrics not registered: %d, %v", n, err)
	}
}

func TestFilesystemBucketNeedsDirectory(t *testing.T) {
	_, err := NewBucket([]byte("type: FILESYSTEM\nconfig: {}\n"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "FILESYSTEM") || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("got %v, want an error naming FILESYSTEM and the directory", err)
	}
}
