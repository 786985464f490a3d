package bucketstore

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
)

// fSample is a float sample for storage.NewListSeries.
type fSample struct {
	t int64
	v float64
}

func (s fSample) T() int64                      { return s.t }
func (s fSample) ST() int64                     { return 0 }
func (s fSample) F() float64                    { return s.v }
func (s fSample) H() *histogram.Histogram       { return nil }
func (s fSample) FH() *histogram.FloatHistogram { return nil }
func (s fSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fSample) Copy() chunks.Sample           { return s }

// writeBlock writes a block of the test series with the samples that
// value gives them in [mint, maxt), plus delta, into parent.
func writeBlock(t *testing.T, parent string, mint, maxt int64, delta float64) string {
	t.Helper()
	var series []storage.Series
	for k, lset := range testSeries() {
		var ss []chunks.Sample
		for i := 0; ; i++ {
			ts := base + sampleOffset + int64(i)*scrapeMs
			if ts >= maxt {
				break
			}
			if ts >= mint {
				ss = append(ss, fSample{ts, value(k, i) + delta})
			}
		}
		series = append(series, storage.NewListSeries(lset, ss))
	}
	dir, err := promtsdb.CreateBlock(series, parent, 4*hourMs, discard)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyBlock copies the block in dir into parent under a new ULID.
func copyBlock(t *testing.T, dir, parent string) string {
	t.Helper()
	m, err := block.ReadPrometheusMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	m.ULID = ulid.Make()
	dst := filepath.Join(parent, m.ULID.String())
	if err := os.MkdirAll(filepath.Join(dst, block.ChunksDirname), 0o777); err != nil {
		t.Fatal(err)
	}
	cp := func(rel string) {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, rel), b, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	cp(block.IndexFilename)
	des, err := os.ReadDir(filepath.Join(dir, block.ChunksDirname))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		cp(filepath.Join(block.ChunksDirname, de.Name()))
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, block.MetaFilename), b, 0o666); err != nil {
		t.Fatal(err)
	}
	return dst
}

// lastSample is the time of the last test sample before end.
func lastSample(end int64) int64 {
	return end - 1 - (end-1-base-sampleOffset)%scrapeMs
}

func TestQueryReturnsWrittenSamples(t *testing.T) {
	raw := makeRawDB(t, 5)
	bkt := objstore.NewInMemBucket()
	for _, dir := range raw.blocks {
		upload(t, bkt, dir, extA, block.ResolutionRaw, true)
	}
	end := base + 4*hourMs
	want := raw.data.in(base, end)

	// A partial upload and a block marked for deletion, with other values
	// at the same times: the store must ignore both.
	upload(t, bkt, writeBlock(t, t.TempDir(), base+hourMs, base+2*hourMs, 1000), extA, block.ResolutionRaw, false)
	marked := upload(t, bkt, writeBlock(t, t.TempDir(), base+2*hourMs, base+3*hourMs, 2000), extA, block.ResolutionRaw, true)
	uploadJSON(t, bkt, marked.ULID, block.DeletionMarkFilename, block.NewDeletionMark(marked.ULID, time.Now(), "test"))

	s, _ := newStore(t, bkt, t.TempDir(), Options{})
	if got := len(s.Blocks()); got != len(raw.blocks) {
		t.Fatalf("store knows %d blocks, want %d", got, len(raw.blocks))
	}
	if got := counterValue(t, s.metrics.downloads); got != 0 {
		t.Fatalf("%v downloads before the first query, want 0", got)
	}

	// A step on the sample grid returns every sample.
	got := rangeQuery(t, s, `{job="mesh"}`, base+sampleOffset, lastSample(end), scrapeMs)
	equalData(t, got, want, 0)
	got = instantQuery(t, s, `{job="mesh"}[4h]`, end)
	equalData(t, got, want, 0)
	if n := count(want); n != 4*240*len(testSeries()) {
		t.Fatalf("test data has %d samples", n)
	}

	if got := counterValue(t, s.metrics.downloads); got != float64(len(raw.blocks)) {
		t.Errorf("downloads = %v, want %d", got, len(raw.blocks))
	}
	if got := counterValue(t, s.metrics.known); got != float64(len(raw.blocks)) {
		t.Errorf("blocks known = %v, want %d", got, len(raw.blocks))
	}
	if got := counterValue(t, s.metrics.evictions); got != 0 {
		t.Errorf("evictions = %v, want 0", got)
	}

	// The chunk querier returns the same samples.
	equalData(t, chunkQuery(t, s, base, end), want, 0)
}

// chunkQuery reads every test series in [mint, maxt) through the store's
// ChunkQuerier.
func chunkQuery(t *testing.T, s *Store, mint, maxt int64) dataset {
	t.Helper()
	q, err := s.ChunkQuerier(mint, maxt-1)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "job", "mesh"))
	out := dataset{}
	var prev labels.Labels
	for ss.Next() {
		cs := ss.At()
		if !prev.IsEmpty() && labels.Compare(prev, cs.Labels()) >= 0 {
			t.Fatalf("series not sorted: %s after %s", cs.Labels(), prev)
		}
		prev = cs.Labels()
		it := cs.Iterator(nil)
		for it.Next() {
			si := it.At().Chunk.Iterator(nil)
			for si.Next() == chunkenc.ValFloat {
				ts, v := si.At()
				out.add(cs.Labels(), ts, v)
			}
			if err := si.Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOverlappingBlocksAreMerged(t *testing.T) {
	raw := makeRawDB(t, 5)
	bkt := objstore.NewInMemBucket()
	for _, dir := range raw.blocks {
		upload(t, bkt, dir, extA, block.ResolutionRaw, true)
	}
	// The first two blocks compacted into one, as the bucket compactor
	// uploads it before marking its sources for deletion.
	c, err := promtsdb.NewLeveledCompactor(context.Background(), nil, discard, []int64{2 * hourMs}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	ids, err := c.Compact(dest, raw.blocks[:2], nil)
	if err != nil || len(ids) != 1 {
		t.Fatalf("compact: %v %v", ids, err)
	}
	compacted := upload(t, bkt, filepath.Join(dest, ids[0].String()), extA, block.ResolutionRaw, true)
	if compacted.Compaction.Level != 2 {
		t.Fatalf("compacted block has level %d", compacted.Compaction.Level)
	}
	// The third block again, from a replica.
	upload(t, bkt, copyBlock(t, raw.blocks[2], t.TempDir()), labels.FromStrings("cluster", "eu-1", "replica", "b"), block.ResolutionRaw, true)

	s, _ := newStore(t, bkt, t.TempDir(), Options{})
	if got, want := len(s.Blocks()), len(raw.blocks)+2; got != want {
		t.Fatalf("store knows %d blocks, want %d", got, want)
	}
	end := base + 4*hourMs
	want := raw.data.in(base, end)
	equalData(t, rangeQuery(t, s, `{job="mesh"}`, base+sampleOffset, lastSample(end), scrapeMs), want, 0)
	equalData(t, instantQuery(t, s, `{job="mesh"}[4h]`, end), want, 0)
	equalData(t, chunkQuery(t, s, base, end), want, 0)
}

func TestCacheBound(t *testing.T) {
	raw := makeRawDB(t, 5)
	bkt := objstore.NewInMemBucket()
	var metas []*block.Meta
	for _, dir := range raw.blocks {
		metas = append(metas, upload(t, bkt, dir, extA, block.ResolutionRaw, true))
	}
	// Room for one block (with its meta.json), not two.
	var smallest, largest int64
	for i, m := range metas {
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		size := m.ExpectedSize() + int64(len(b))
		if i == 0 || size < smallest {
			smallest = size
		}
		largest = max(largest, size)
	}
	limit := largest + largest/4
	if limit >= 2*smallest {
		t.Fatalf("blocks of %d to %d bytes: limit %d holds two", smallest, largest, limit)
	}
	cacheDir := t.TempDir()
	s, _ := newStore(t, bkt, cacheDir, Options{CacheBytes: limit})
	ctx := context.Background()
	end := base + 4*hourMs

	// A query over all blocks holds them all; they are evicted once it
	// is done.
	equalData(t, instantQuery(t, s, `{job="mesh"}[4h]`, end), raw.data.in(base, end), 0)
	if got := counterValue(t, s.metrics.evictions); got < float64(len(metas)-1) {
		t.Errorf("evictions = %v, want >= %d", got, len(metas)-1)
	}
	if got := counterValue(t, s.metrics.cacheBytes); got > float64(limit) {
		t.Errorf("cache holds %v bytes, limit %d", got, limit)
	}
	if got := cachedBlocks(t, cacheDir); len(got) > 1 {
		t.Errorf("cache holds %d blocks", len(got))
	}

	// A block that an open querier reads stays while other queries need
	// the room, also when it was in the cache before the querier.
	first := metas[0].ULID
	equalData(t, instantQuery(t, s, `{job="mesh"}[1h]`, base+hourMs-1), raw.data.in(base, base+hourMs), 0)
	if got := cachedBlocks(t, cacheDir); !slices.Equal(got, []ulid.ULID{first}) {
		t.Fatalf("cache holds %v, want %s", got, first)
	}
	q, err := s.Querier(base, base+hourMs-1)
	if err != nil {
		t.Fatal(err)
	}
	ss := q.Select(ctx, true, nil, labels.MustNewMatcher(labels.MatchEqual, "job", "mesh"))
	if !ss.Next() {
		t.Fatalf("no series: %v", ss.Err())
	}
	got := dataset{}
	series := ss.At()
	it := series.Iterator(nil)
	if it.Next() != chunkenc.ValFloat {
		t.Fatal("no sample")
	}
	ts, v := it.At()
	got.add(series.Labels(), ts, v)

	evictions := counterValue(t, s.metrics.evictions)
	for h := int64(1); h < 4; h++ {
		at := base + (h+1)*hourMs
		equalData(t, instantQuery(t, s, `{job="mesh"}[1h]`, at), raw.data.in(base+h*hourMs, at), 0)
	}
	if got := counterValue(t, s.metrics.evictions); got <= evictions {
		t.Errorf("no evictions while other blocks were read")
	}
	if !slices.Contains(cachedBlocks(t, cacheDir), first) {
		t.Fatalf("block %s evicted while a querier reads it", first)
	}

	for it.Next() == chunkenc.ValFloat {
		ts, v := it.At()
		got.add(series.Labels(), ts, v)
	}
	for ss.Next() {
		series := ss.At()
		it := series.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			got.add(series.Labels(), ts, v)
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	equalData(t, got, raw.data.in(base, base+hourMs), 0)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, s.metrics.cacheBytes); got > float64(limit) {
		t.Errorf("cache holds %v bytes after the querier closed, limit %d", got, limit)
	}
}

func TestSyncFollowsBucket(t *testing.T) {
	raw := makeRawDB(t, 4)
	bkt := objstore.NewInMemBucket()
	m0 := upload(t, bkt, raw.blocks[0], extA, block.ResolutionRaw, true)
	m1 := upload(t, bkt, raw.blocks[1], extA, block.ResolutionRaw, true)
	cacheDir := t.TempDir()
	s, _ := newStore(t, bkt, cacheDir, Options{})
	ctx := context.Background()
	end := base + 3*hourMs
	query := func() dataset { return instantQuery(t, s, `{job="mesh"}[3h]`, end) }

	equalData(t, query(), raw.data.in(base, base+2*hourMs), 0)

	m2 := upload(t, bkt, raw.blocks[2], extA, block.ResolutionRaw, true)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(s.Blocks()); got != 3 {
		t.Fatalf("store knows %d blocks after a new upload, want 3", got)
	}
	equalData(t, query(), raw.data.in(base, end), 0)

	uploadJSON(t, bkt, m0.ULID, block.DeletionMarkFilename, block.NewDeletionMark(m0.ULID, time.Now(), "compacted"))
	deleteBlock(t, bkt, m1.ULID)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Blocks(); len(got) != 1 || got[0].ULID != m2.ULID {
		t.Fatalf("store knows %d blocks, want only %s", len(got), m2.ULID)
	}
	if got := cachedBlocks(t, cacheDir); !slices.Equal(got, []ulid.ULID{m2.ULID}) {
		t.Errorf("cache holds %v, want only %s", got, m2.ULID)
	}
	equalData(t, query(), raw.data.in(base+2*hourMs, end), 0)
	if got := counterValue(t, s.metrics.known); got != 1 {
		t.Errorf("blocks known = %v, want 1", got)
	}
}

func TestMergeWithLocalTSDB(t *testing.T) {
	raw := makeRawDB(t, 5)
	bkt := objstore.NewInMemBucket()
	for _, dir := range raw.blocks {
		upload(t, bkt, dir, extA, block.ResolutionRaw, true)
	}
	s, _ := newStore(t, bkt, t.TempDir(), Options{})
	merged := storage.QueryableFunc(func(mint, maxt int64) (storage.Querier, error) {
		local, err := raw.db.Querier(mint, maxt)
		if err != nil {
			return nil, err
		}
		remote, err := s.Querier(mint, maxt)
		if err != nil {
			local.Close()
			return nil, err
		}
		return storage.NewMergeQuerier([]storage.Querier{local, remote}, nil, storage.ChainedSeriesMerge), nil
	})
	// The local TSDB holds every block and the head; the bucket holds the
	// blocks again.
	last := base + sampleOffset + (5*hourMs/scrapeMs-1)*scrapeMs
	equalData(t, rangeQuery(t, merged, `{job="mesh"}`, base+sampleOffset, last, scrapeMs), raw.data, 0)
	equalData(t, instantQuery(t, merged, `{job="mesh"}[5h]`, last), raw.data, 0)
}

func TestCacheSurvivesRestart(t *testing.T) {
	raw := makeRawDB(t, 3)
	bkt := objstore.NewInMemBucket()
	for _, dir := range raw.blocks {
		upload(t, bkt, dir, extA, block.ResolutionRaw, true)
	}
	cacheDir := t.TempDir()
	end := base + 2*hourMs
	want := raw.data.in(base, end)

	s1, _ := newStore(t, bkt, cacheDir, Options{})
	equalData(t, instantQuery(t, s1, `{job="mesh"}[2h]`, end), want, 0)
	if got := counterValue(t, s1.metrics.downloads); got != 2 {
		t.Fatalf("downloads = %v, want 2", got)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	// Leftover of a download that a crash interrupted.
	leftover := filepath.Join(cacheDir, raw.metas[0].ULID.String()+tmpInfix+"1")
	if err := os.MkdirAll(filepath.Join(leftover, block.ChunksDirname), 0o777); err != nil {
		t.Fatal(err)
	}

	s2, _ := newStore(t, bkt, cacheDir, Options{})
	if got := counterValue(t, s2.metrics.cached); got != 2 {
		t.Errorf("restarted store has %v cached blocks, want 2", got)
	}
	equalData(t, instantQuery(t, s2, `{job="mesh"}[2h]`, end), want, 0)
	if got := counterValue(t, s2.metrics.downloads); got != 0 {
		t.Errorf("restarted store downloaded %v blocks, want 0", got)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("leftover download not deleted: %v", err)
	}
}

func TestExternalLabels(t *testing.T) {
	raw := makeRawDB(t, 2)
	bkt := objstore.NewInMemBucket()
	upload(t, bkt, raw.blocks[0], labels.FromStrings("cluster", "eu-1", "replica", "a"), block.ResolutionRaw, true)
	upload(t, bkt, copyBlock(t, raw.blocks[0], t.TempDir()), labels.FromStrings("cluster", "eu-1", "replica", "b"), block.ResolutionRaw, true)
	// A producer whose external job label replaces the series' own.
	upload(t, bkt, copyBlock(t, raw.blocks[0], t.TempDir()), labels.FromStrings("job", "other"), block.ResolutionRaw, true)
	end := base + hourMs
	want := raw.data.in(base, end)

	plain, _ := newStore(t, bkt, t.TempDir(), Options{})
	equalData(t, instantQuery(t, plain, `{job="mesh"}[1h]`, end), want, 0)

	s, _ := newStore(t, bkt, t.TempDir(), Options{ExternalLabels: true})
	got := instantQuery(t, s, `test_metric{replica="b"}[1h]`, end)
	if len(got) != 4 {
		t.Fatalf("got %d series for replica b, want 4", len(got))
	}
	for k := range got {
		if !strings.Contains(k, `cluster="eu-1"`) || !strings.Contains(k, `replica="b"`) {
			t.Errorf("series %s lacks the external labels", k)
		}
	}
	if got := instantQuery(t, s, `{job="mesh"}[1h]`, end); len(got) != 2*len(testSeries()) {
		t.Errorf("got %d series of job mesh, want %d", len(got), 2*len(testSeries()))
	}
	other := instantQuery(t, s, `{job="other"}[1h]`, end)
	wantOther := dataset{}
	for _, lset := range testSeries() {
		relabelled := labels.NewBuilder(lset).Set("job", "other").Labels()
		for _, smp := range want[lset.String()] {
			wantOther.add(relabelled, smp.t, smp.v)
		}
	}
	equalData(t, other, wantOther, 0)

	q, err := s.Querier(base, end)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	vals, _, err := q.LabelValues(context.Background(), "replica", nil)
	if err != nil || !slices.Equal(vals, []string{"a", "b"}) {
		t.Errorf("replica values: %v %v", vals, err)
	}
	vals, _, err = q.LabelValues(context.Background(), "job", nil)
	if err != nil || !slices.Equal(vals, []string{"mesh", "other"}) {
		t.Errorf("job values: %v %v", vals, err)
	}
	names, _, err := q.LabelNames(context.Background(), nil, labels.MustNewMatcher(labels.MatchEqual, "replica", "a"))
	if err != nil || !slices.Equal(names, []string{"__name__", "cluster", "instance", "job", "replica"}) {
		t.Errorf("label names: %v %v", names, err)
	}
}

func TestNew(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	for _, o := range []Options{
		{CacheDir: t.TempDir()},
		{Bucket: bkt},
		{Bucket: bkt, CacheDir: t.TempDir(), CacheBytes: -1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	s, err := New(Options{Bucket: bkt, CacheDir: filepath.Join(t.TempDir(), "a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	if s.limit != DefaultCacheBytes || s.interval != DefaultSyncInterval {
		t.Errorf("defaults: limit %d, interval %v", s.limit, s.interval)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Querier(0, 1); err == nil {
		t.Error("Querier of a closed store succeeded")
	}
}

func TestRunSyncsUntilCancelled(t *testing.T) {
	raw := makeRawDB(t, 2)
	bkt := objstore.NewInMemBucket()
	s, err := New(Options{Bucket: bkt, CacheDir: t.TempDir(), SyncInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	upload(t, bkt, raw.blocks[0], extA, block.ResolutionRaw, true)
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Blocks()) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not pick up the block")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// failingBucket fails every Get of an object whose name contains fail.
type failingBucket struct {
	objstore.Bucket
	fail string
}

func (b failingBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if strings.Contains(name, b.fail) {
		return nil, io.ErrUnexpectedEOF
	}
	return b.Bucket.Get(ctx, name)
}

func TestDownloadFailure(t *testing.T) {
	raw := makeRawDB(t, 2)
	inner := objstore.NewInMemBucket()
	upload(t, inner, raw.blocks[0], extA, block.ResolutionRaw, true)
	cacheDir := t.TempDir()
	s, _ := newStore(t, failingBucket{inner, "/index"}, cacheDir, Options{})

	qry, err := engine.NewInstantQuery(context.Background(), s, nil, `{job="mesh"}[1h]`, time.UnixMilli(base+hourMs))
	if err != nil {
		t.Fatal(err)
	}
	defer qry.Close()
	if res := qry.Exec(context.Background()); res.Err == nil {
		t.Fatal("query succeeded although the block cannot be downloaded")
	}
	if got := counterValue(t, s.metrics.downloadFailures); got != 1 {
		t.Errorf("download failures = %v, want 1", got)
	}
	des, err := os.ReadDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(des) != 0 {
		t.Errorf("failed download left %d entries in the cache", len(des))
	}
}
