package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/util/compression"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/tracestest"
	"github.com/meshlens/meshlens/tsdb/block"
)

func TestStoreContract(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bucket func(t *testing.T, dir string) objstore.Bucket
	}{
		{"filesystem bucket", func(t *testing.T, dir string) objstore.Bucket {
			bkt, err := filesystem.NewBucket(filepath.Join(dir, "bucket"))
			if err != nil {
				t.Fatal(err)
			}
			return bkt
		}},
		{"in-memory bucket", func() func(t *testing.T, dir string) objstore.Bucket {
			var mu sync.Mutex
			bkts := map[string]objstore.Bucket{}
			return func(t *testing.T, dir string) objstore.Bucket {
				mu.Lock()
				defer mu.Unlock()
				if bkts[dir] == nil {
					bkts[dir] = objstore.NewInMemBucket()
				}
				return bkts[dir]
			}
		}()},
		{"no bucket", func(*testing.T, string) objstore.Bucket { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tracestest.TestStore(t, func(t *testing.T, dir string, now func() time.Time) tracestest.Store {
				o := testOptions(filepath.Join(dir, "store"), now)
				if bkt := tc.bucket(t, dir); bkt != nil {
					o.Bucket = bkt
				}
				s, err := Open(o)
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
}

func testOptions(dir string, now func() time.Time) Options {
	return Options{
		Dir:            dir,
		Retention:      tracestest.Retention,
		LocalRetention: time.Nanosecond,
		Now:            now,
	}
}

func openTest(t *testing.T, o Options) *Store {
	t.Helper()
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dir, "wal"))
	must(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// A crash can tear the last WAL record. Open keeps every record before it
// and the store takes spans again.
func TestTornWALTail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := tracestest.NewClock(tracestest.T0)
	o := testOptions(dir, clock.Now)
	o.WALCompression = compression.None
	s, err := Open(o)
	must(t, err)
	a := tracestest.Trace(1, 4, tracestest.T0.Add(-time.Minute))
	b := tracestest.Trace(2, 4, tracestest.T0.Add(-time.Minute))
	must(t, s.Append(ctx, a))
	must(t, s.Append(ctx, b))
	must(t, s.Close())

	// Cut the last segment holding records in the middle of b's record.
	segs := segments(t, dir)
	var last string
	var size int64
	for _, n := range segs {
		fi, err := os.Stat(filepath.Join(dir, "wal", n))
		must(t, err)
		if fi.Size() > 0 {
			last, size = n, fi.Size()
		}
	}
	if last == "" {
		t.Fatal("no WAL segment holds records")
	}
	data, err := os.ReadFile(filepath.Join(dir, "wal", last))
	must(t, err)
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	must(t, os.Truncate(filepath.Join(dir, "wal", last), int64(end-40)))
	t.Logf("segment %s: %d bytes, %d used, cut to %d", last, size, end, end-40)

	s = openTest(t, o)
	tracestest.ExpectTrace(t, s, a, traces.TimeRange{})
	if _, err := s.Trace(ctx, b[0].TraceID, traces.TimeRange{}); !errors.Is(err, traces.ErrNotFound) {
		t.Fatalf("torn record: got %v, want ErrNotFound", err)
	}
	must(t, s.Append(ctx, b))
	must(t, s.Close())
	s = openTest(t, o)
	tracestest.ExpectTrace(t, s, a, traces.TimeRange{})
	tracestest.ExpectTrace(t, s, b, traces.TimeRange{})
}

// A crash after a cut wrote its block and before the WAL dropped the
// spans replays them into the head: they are read once, and cut again
// without showing twice.
func TestCrashBetweenCutAndWALTruncation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := tracestest.NewClock(tracestest.T0)
	o := testOptions(dir, clock.Now)
	s, err := Open(o)
	must(t, err)
	spans := tracestest.Trace(1, 6, tracestest.T0.Add(-time.Minute))
	must(t, s.Append(ctx, spans))
	// The WAL as it was before the cut.
	saved := filepath.Join(t.TempDir(), "wal")
	must(t, os.CopyFS(saved, os.DirFS(filepath.Join(dir, "wal"))))
	must(t, s.CutBlock(ctx))
	must(t, s.Close())
	must(t, os.RemoveAll(filepath.Join(dir, "wal")))
	must(t, os.CopyFS(filepath.Join(dir, "wal"), os.DirFS(saved)))

	s = openTest(t, o)
	if n := s.headSpans(); n != len(spans) {
		t.Fatalf("head holds %d spans after replay, want %d", n, len(spans))
	}
	tracestest.ExpectTrace(t, s, spans, traces.TimeRange{})
	must(t, s.CutBlock(ctx))
	tracestest.ExpectTrace(t, s, spans, traces.TimeRange{})
	must(t, s.Close())
	s = openTest(t, o)
	if n := s.headSpans(); n != 0 {
		t.Fatalf("head holds %d spans after the second cut and a restart, want 0", n)
	}
	tracestest.ExpectTrace(t, s, spans, traces.TimeRange{})
}

func (s *Store) headSpans() int {
	s.headMu.RLock()
	defer s.headMu.RUnlock()
	return s.head.spans
}

// Spans that arrive while a cut writes its block stay in the head and
// survive a restart; the WAL keeps only the segments the head needs.
func TestCutKeepsLaterSpansAndTruncatesWAL(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := tracestest.NewClock(tracestest.T0)
	s := openTest(t, testOptions(dir, clock.Now))
	for i := range 5 {
		must(t, s.Append(ctx, tracestest.Trace(byte(i+1), 3, tracestest.T0.Add(-time.Minute))))
		must(t, s.CutBlock(ctx))
	}
	if segs := segments(t, dir); len(segs) > 2 {
		t.Fatalf("WAL holds segments %v after cutting the whole head", segs)
	}
	// A trace in the head across a cut keeps the segment holding it.
	late := tracestest.Trace(9, 4, tracestest.T0.Add(-time.Minute))
	must(t, s.Append(ctx, late[:2]))
	clock.Add(time.Second)
	must(t, s.Append(ctx, tracestest.Trace(8, 2, tracestest.T0.Add(-time.Minute))))
	clock.Add(DefaultMaxBlockDuration)
	must(t, s.Append(ctx, late[2:]))
	cut, err := s.cut(ctx, false)
	must(t, err)
	if !cut {
		t.Fatal("no cut although a trace is older than MaxBlockDuration")
	}
	must(t, s.Close())
	s = openTest(t, testOptions(dir, clock.Now))
	tracestest.ExpectTrace(t, s, late, traces.TimeRange{})
	tracestest.ExpectTrace(t, s, tracestest.Trace(8, 2, tracestest.T0.Add(-time.Minute)), traces.TimeRange{})
}

// Which traces a cut writes.
func TestCutPolicy(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		advance    time.Duration // After the first trace.
		maxSpans   int
		wantCut    bool
		wantInHead []byte
	}{
		{name: "nothing due", advance: time.Minute, wantCut: false, wantInHead: []byte{1, 2}},
		{name: "due by duration: idle and old traces", advance: DefaultMaxBlockDuration, wantCut: true, wantInHead: []byte{2}},
		{name: "due by size: idle traces", advance: DefaultTraceIdle, maxSpans: 6, wantCut: true, wantInHead: []byte{2}},
		{name: "due by size, none idle: every trace", advance: time.Second, maxSpans: 6, wantCut: true, wantInHead: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := tracestest.NewClock(tracestest.T0)
			o := testOptions(t.TempDir(), clock.Now)
			o.MaxBlockSpans = tc.maxSpans
			s := openTest(t, o)
			must(t, s.Append(ctx, tracestest.Trace(1, 3, tracestest.T0)))
			clock.Add(tc.advance)
			must(t, s.Append(ctx, tracestest.Trace(2, 3, tracestest.T0)))
			cut, err := s.cut(ctx, false)
			must(t, err)
			if cut != tc.wantCut {
				t.Fatalf("cut: %v, want %v", cut, tc.wantCut)
			}
			var inHead []byte
			s.headMu.RLock()
			for id := range s.head.traces {
				inHead = append(inHead, id[1])
			}
			s.headMu.RUnlock()
			slices.Sort(inHead)
			if !slices.Equal(inHead, tc.wantInHead) {
				t.Fatalf("traces left in the head: %v, want %v", inHead, tc.wantInHead)
			}
		})
	}
}

// Spans beyond MaxSpansPerTrace are refused with ErrTraceTooLarge; the
// rest of the batch is stored.
func TestMaxSpansPerTrace(t *testing.T) {
	ctx := context.Background()
	clock := tracestest.NewClock(tracestest.T0)
	o := testOptions(t.TempDir(), clock.Now)
	o.MaxSpansPerTrace = 4
	s := openTest(t, o)
	big := tracestest.Trace(1, 6, tracestest.T0.Add(-time.Minute))
	small := tracestest.Trace(2, 2, tracestest.T0.Add(-time.Minute))
	must(t, s.Append(ctx, big[:3]))
	err := s.Append(ctx, slices.Concat(big[3:], small))
	if !errors.Is(err, traces.ErrTraceTooLarge) {
		t.Fatalf("append beyond the limit: got %v, want ErrTraceTooLarge", err)
	}
	if !strings.Contains(err.Error(), big[0].TraceID.String()) {
		t.Fatalf("error %q does not name the trace", err)
	}
	tracestest.ExpectTrace(t, s, big[:4], traces.TimeRange{})
	tracestest.ExpectTrace(t, s, small, traces.TimeRange{})
	// Resending a stored span is no refusal.
	must(t, s.Append(ctx, big[:4]))
	if got := s.metrics.refused.Get(); got != 2 {
		t.Fatalf("refused spans counted: %d, want 2", got)
	}
}

// Bucket blocks are downloaded once and the cache stays within its bound,
// evicting the least recently used.
func TestBucketCache(t *testing.T) {
	ctx := context.Background()
	clock := tracestest.NewClock(tracestest.T0)
	o := testOptions(t.TempDir(), clock.Now)
	o.Bucket = objstore.NewInMemBucket()
	o.CacheBytes = 1 // At most one block.
	s := openTest(t, o)
	a := tracestest.Trace(1, 3, tracestest.T0.Add(-2*time.Hour))
	b := tracestest.Trace(2, 3, tracestest.T0.Add(-time.Hour))
	for _, spans := range [][]traces.Span{a, b} {
		must(t, s.Append(ctx, spans))
		must(t, s.CutBlock(ctx))
	}
	must(t, s.Ship(ctx))
	must(t, s.ApplyRetention(ctx))
	aRange := traces.TimeRange{End: a[len(a)-1].StartUnixNano}
	tracestest.ExpectTrace(t, s, a, aRange)
	tracestest.ExpectTrace(t, s, a, aRange)
	if n := s.metrics.blocksDownloaded.Get(); n != 1 {
		t.Fatalf("downloads after reading one block twice: %d, want 1", n)
	}
	tracestest.ExpectTrace(t, s, b, traces.TimeRange{Start: b[0].StartUnixNano})
	cached := 0
	es, err := os.ReadDir(o.Dir + "/cache")
	must(t, err)
	for range es {
		cached++
	}
	if cached != 1 {
		t.Fatalf("cache holds %d blocks, want 1", cached)
	}
}

// Compaction merges the blocks of a closed window into one block in the
// bucket, deletes its sources there, and leaves the window's spans found.
func TestCompactMergesClosedWindow(t *testing.T) {
	ctx := context.Background()
	clock := tracestest.NewClock(tracestest.T0)
	o := testOptions(t.TempDir(), clock.Now)
	o.Bucket = objstore.NewInMemBucket()
	s := openTest(t, o)
	old := tracestest.Trace(1, 4, tracestest.T0.Add(-3*time.Hour+time.Minute)) // Window 09:00-10:00, closed.
	recent := tracestest.Trace(2, 2, tracestest.T0.Add(-time.Minute))          // Window 11:00-12:00, open.
	for _, spans := range [][]traces.Span{old[:2], old[2:], recent[:1], recent[1:]} {
		must(t, s.Append(ctx, spans))
		must(t, s.CutBlock(ctx))
	}
	must(t, s.Ship(ctx))
	must(t, s.Compact(ctx))
	must(t, s.SyncBucket(ctx))
	ids, err := block.IDs(ctx, o.Bucket, DefaultPrefix)
	must(t, err)
	if len(ids) != 3 {
		t.Fatalf("bucket holds %d blocks after compaction, want 3 (one merged, two in the open window)", len(ids))
	}
	s.blocksMu.Lock()
	levels := map[int]int{}
	for _, e := range s.bucket {
		levels[e.meta.Level]++
	}
	s.blocksMu.Unlock()
	if levels[2] != 1 || levels[1] != 2 {
		t.Fatalf("block levels %v, want one of level 2 and two of level 1", levels)
	}
	must(t, s.ApplyRetention(ctx))
	tracestest.ExpectTrace(t, s, old, traces.TimeRange{})
	tracestest.ExpectTrace(t, s, recent, traces.TimeRange{})
}

// Run cuts the head once a trace has waited MaxBlockDuration, ships the
// block, and returns nil when its context ends.
func TestRun(t *testing.T) {
	clock := tracestest.NewClock(tracestest.T0)
	o := testOptions(t.TempDir(), clock.Now)
	o.Bucket = objstore.NewInMemBucket()
	s := openTest(t, o)
	must(t, s.Append(context.Background(), tracestest.Trace(1, 3, tracestest.T0)))
	clock.Add(DefaultMaxBlockDuration)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for s.metrics.blocksShipped.Get() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run shipped no block")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := s.headSpans(); n != 0 {
		t.Fatalf("head holds %d spans after Run cut it", n)
	}
}

// TestStoredAgreesWithTrace: Stored answers for many ids at once what
// Trace answers for each, over the head and blocks, in and out of the
// time range.
func TestStoredAgreesWithTrace(t *testing.T) {
	ctx := context.Background()
	clock := tracestest.NewClock(tracestest.T0)
	s := openTest(t, testOptions(t.TempDir(), clock.Now))
	// Traces 1-60 in three blocks, 61-80 in the head, an hour apart in
	// groups of 20.
	for i := range 80 {
		at := tracestest.T0.Add(-4*time.Hour + time.Duration(i/20)*time.Hour)
		must(t, s.Append(ctx, tracestest.Trace(byte(i+1), 3, at)))
		if i%20 == 19 && i < 60 {
			must(t, s.CutBlock(ctx))
		}
	}
	var ids []traces.TraceID
	for i := 120; i > 0; i -= 3 { // unsorted, some never stored
		ids = append(ids, tracestest.ID(byte(i)))
	}
	for _, tr := range []traces.TimeRange{{}, {Start: uint64(tracestest.T0.Add(-3 * time.Hour).UnixNano()), End: uint64(tracestest.T0.Add(-90 * time.Minute).UnixNano())}} {
		got, err := s.Stored(ctx, ids, tr)
		must(t, err)
		n := 0
		for i, id := range ids {
			_, err := s.Trace(ctx, id, tr)
			if want := err == nil; got[i] != want {
				t.Errorf("range %v: Stored(%s) = %v, Trace found it: %v", tr, id, got[i], want)
			}
			if got[i] {
				n++
			}
		}
		if n == 0 || n == len(ids) {
			t.Errorf("range %v: %d of %d found; the test wants a mix", tr, n, len(ids))
		}
	}
}

// TestSpansOlderThanRetentionRefused: spans that start before the
// retention are refused and counted (they would be deleted before anyone
// saw them); the other spans of the call are stored.
func TestSpansOlderThanRetentionRefused(t *testing.T) {
	ctx := context.Background()
	clock := tracestest.NewClock(tracestest.T0)
	s := openTest(t, testOptions(t.TempDir(), clock.Now))
	old := tracestest.Trace(1, 3, tracestest.T0.Add(-tracestest.Retention-time.Minute))
	fresh := tracestest.Trace(2, 3, tracestest.T0.Add(-time.Minute))
	err := s.Append(ctx, append(append([]traces.Span{}, old...), fresh...))
	var tooOld *traces.SpansTooOldError
	if !errors.As(err, &tooOld) || tooOld.Refused != 3 || !errors.Is(err, traces.ErrSpansTooOld) {
		t.Fatalf("Append = %v, want 3 spans refused as too old", err)
	}
	tracestest.ExpectTrace(t, s, fresh, traces.TimeRange{})
	if _, err := s.Trace(ctx, tracestest.ID(1), traces.TimeRange{}); !errors.Is(err, traces.ErrNotFound) {
		t.Errorf("the old trace: %v, want not found", err)
	}
	// Only old spans: nothing is written.
	if err := s.Append(ctx, old); !errors.As(err, &tooOld) || tooOld.Refused != 3 {
		t.Errorf("Append of old spans only = %v", err)
	}
}
