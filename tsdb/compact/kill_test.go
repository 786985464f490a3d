package compact

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/internal/faultbucket"
	"github.com/meshlens/meshlens/tsdb/block"
)

// nth returns a match function that accepts the n-th name (from 1) that
// match accepts.
func nth(n int32, match func(string) bool) func(string) bool {
	var seen atomic.Int32
	return func(name string) bool {
		return match(name) && seen.Add(1) == n
	}
}

func suffix(s string) func(string) bool {
	return func(name string) bool { return strings.HasSuffix(name, s) }
}

// TestKilledPassIsFinishedByTheNext stops a pass at every step of a
// compaction and of a deletion, and checks that the bucket stays usable
// in between (no data lost, nothing half-visible) and that the next pass
// leaves one copy of every sample in blocks that do not overlap.
func TestKilledPassIsFinishedByTheNext(t *testing.T) {
	for _, tc := range []struct {
		name string
		// fault installs the fault on fb; stall says whether it stalls (the
		// pass is then cancelled) or fails.
		fault func(fb *faultbucket.Bucket)
		stall bool
		// deleting makes the first pass a deletion pass: the blocks are
		// compacted and marked beforehand, and the clock is past the delay.
		deleting bool
		// between is the state the interrupted pass leaves: "partial" (an
		// upload without meta.json), "duplicate" (a visible compacted block
		// with visible sources) or "deleting" (a block without meta.json
		// that carries a deletion mark).
		between string
	}{
		{name: "during chunks upload", stall: true, fault: func(fb *faultbucket.Bucket) { fb.StallUploads(suffix("/chunks/000001")) }},
		{name: "during index upload", between: "partial", stall: true, fault: func(fb *faultbucket.Bucket) { fb.StallUploads(suffix("/index")) }},
		{name: "during meta.json upload", between: "partial", stall: true, fault: func(fb *faultbucket.Bucket) { fb.StallUploads(suffix("/" + block.MetaFilename)) }},
		{name: "meta.json upload fails", between: "partial", fault: func(fb *faultbucket.Bucket) { fb.FailUploads(suffix("/" + block.MetaFilename)) }},
		{name: "before the first deletion mark", between: "duplicate", stall: true, fault: func(fb *faultbucket.Bucket) {
			fb.StallUploads(suffix("/" + block.DeletionMarkFilename))
		}},
		{name: "before the third deletion mark", between: "duplicate", stall: true, fault: func(fb *faultbucket.Bucket) {
			fb.StallUploads(nth(3, suffix("/"+block.DeletionMarkFilename)))
		}},
		{name: "third deletion mark fails", between: "duplicate", fault: func(fb *faultbucket.Bucket) {
			fb.FailUploads(nth(3, suffix("/"+block.DeletionMarkFilename)))
		}},
		{name: "deletion after meta.json", between: "deleting", deleting: true, stall: true, fault: func(fb *faultbucket.Bucket) {
			fb.Add(faultbucket.Rule{Ops: []string{faultbucket.OpDelete}, Match: suffix("/index"), Stall: true})
		}},
		{name: "deletion before the mark", between: "deleting", deleting: true, fault: func(fb *faultbucket.Bucket) {
			fb.Add(faultbucket.Rule{Ops: []string{faultbucket.OpDelete}, Match: nth(2, suffix("/"+block.DeletionMarkFilename))})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := objstore.NewInMemBucket()
			fb := faultbucket.New(mem, 1)
			srcs := putLevel1(t, mem, extA, 0, 5)
			want := mergedSamples(t, mem, ids(srcs)...)
			clk := newFakeClock()
			c := newTestCompactor(t, fb, clk, nil)
			if tc.deleting {
				if err := c.Once(context.Background()); err != nil {
					t.Fatal(err)
				}
				clk.Add(49 * time.Hour)
			}

			tc.fault(fb)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Once(ctx) }()
			if tc.stall {
				deadline := time.After(20 * time.Second)
				for fb.Stalled() == 0 {
					select {
					case err := <-done:
						t.Fatalf("pass ended before the stall: %v", err)
					case <-deadline:
						t.Fatal("no call stalled")
					case <-time.After(time.Millisecond):
					}
				}
				cancel()
			}
			err := <-done
			cancel()
			if err == nil {
				t.Fatal("the interrupted pass succeeded")
			}
			if tc.stall && !errors.Is(err, context.Canceled) {
				t.Errorf("interrupted pass: %v, want context.Canceled", err)
			}
			fb.Clear()
			checkBetween(t, mem, tc.between)

			// In between, readers that apply Thanos's deduplication (hide a
			// block whose sources another visible block holds) see every
			// sample once.
			checkVisible(t, mem, want, true)

			if err := c.Once(context.Background()); err != nil {
				t.Fatal(err)
			}
			// After the next pass, every sample is in exactly one visible
			// block, with no deduplication needed.
			checkVisible(t, mem, want, false)
			if len(c.Halted()) != 0 {
				t.Fatalf("halted: %v", c.Halted())
			}

			// Once the delays pass, only the visible blocks are left, and
			// they still hold everything.
			clk.Add(PartialUploadAge + 49*time.Hour)
			if err := c.Once(context.Background()); err != nil {
				t.Fatal(err)
			}
			vis := visible(t, mem)
			for id, b := range listBlocks(t, mem) {
				if _, ok := vis[id]; !ok {
					t.Errorf("block %s left in the bucket: %v", id, b.objects)
				}
			}
			checkVisible(t, mem, want, false)
		})
	}
}

// checkVisible checks that the visible blocks of bkt hold every sample of
// want once. With dedup, blocks whose sources are all in another visible
// block are left out first, as Thanos's readers do.
func checkVisible(t *testing.T, bkt objstore.Bucket, want map[string][]testSample, dedup bool) {
	t.Helper()
	vis := visible(t, bkt)
	var bs []*remoteBlock
	for id, m := range vis {
		bs = append(bs, &remoteBlock{id: id, meta: m})
	}
	dups := duplicates(bs)
	if !dedup && len(dups) > 0 {
		t.Fatalf("visible blocks %v hold data of other visible blocks", dups)
	}
	var use []*remoteBlock
	for _, b := range bs {
		if _, ok := dups[b.id]; !ok {
			use = append(use, b)
		}
	}
	slices.SortFunc(use, func(a, b *remoteBlock) int { return int(a.meta.MinTime - b.meta.MinTime) })
	if o := overlaps(use); len(o) > 0 {
		t.Fatalf("visible blocks overlap: %v", blockIDs(o[0]))
	}
	var ids []ulid.ULID
	for _, b := range use {
		ids = append(ids, b.id)
	}
	equalSamples(t, mergedSamples(t, bkt, ids...), want)
}

func checkBetween(t *testing.T, bkt objstore.Bucket, state string) {
	t.Helper()
	if state == "" {
		return
	}
	found := false
	for _, b := range listBlocks(t, bkt) {
		switch state {
		case "partial":
			found = found || b.meta == nil && !b.deletion
		case "deleting":
			found = found || b.meta == nil && b.deletion
		}
	}
	if state == "duplicate" {
		var bs []*remoteBlock
		for id, m := range visible(t, bkt) {
			bs = append(bs, &remoteBlock{id: id, meta: m})
		}
		found = len(duplicates(bs)) > 0
	}
	if !found {
		t.Fatalf("the interrupted pass did not leave the bucket %s", state)
	}
}

func TestKilledDownsamplingIsRedone(t *testing.T) {
	mem := objstore.NewInMemBucket()
	fb := faultbucket.New(mem, 1)
	downsampleFixture(t, mem)
	clk := newFakeClock()
	c := newTestCompactor(t, fb, clk, func(o *Options) { o.Downsample = true })

	fb.StallUploads(suffix("/" + block.MetaFilename))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Once(ctx) }()
	for fb.Stalled() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pass: %v", err)
	}
	fb.Clear()
	checkBetween(t, mem, "partial")
	if n := len(visible(t, mem)); n != 1 {
		t.Fatalf("%d visible blocks after the interrupted pass, want the raw one", n)
	}

	if err := c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.Add(PartialUploadAge + time.Hour)
	if err := c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	byRes := map[int64]int{}
	for _, m := range visible(t, mem) {
		byRes[m.Thanos.Downsample.Resolution]++
	}
	if byRes[block.ResolutionRaw] != 1 || byRes[block.Resolution5m] != 1 || len(byRes) != 2 {
		t.Errorf("visible blocks by resolution %v", byRes)
	}
	if n := len(listBlocks(t, mem)); n != 2 {
		t.Errorf("%d blocks in the bucket, want 2", n)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	putLevel1(t, bkt, extA, 0, 5)
	c := newTestCompactor(t, bkt, newFakeClock(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for len(visible(t, bkt)) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the first pass did not compact")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
