package compact

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/blocktest"
	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

var discard = slog.New(slog.DiscardHandler)

const (
	minute = int64(60 * 1000)
	hour   = 60 * minute
	day    = 24 * hour
)

// testSeries is a series to write into test blocks: floats from f, or
// native histograms when hist is set, every step from the block's start.
type testSeries struct {
	lset labels.Labels
	f    func(t int64) float64
	hist bool
	step int64
	// points, when set, are the samples instead.
	points []testSample
}

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// writeBlock writes a block spanning exactly [mint, maxt) with the
// samples of ss in that range into dir, the way a TSDB cuts blocks from
// its head, and returns its directory.
func writeBlock(t *testing.T, dir string, mint, maxt int64, ss []testSeries) string {
	t.Helper()
	ctx := context.Background()
	opts := promtsdb.DefaultHeadOptions()
	opts.ChunkDirRoot = t.TempDir()
	opts.ChunkRange = maxt - mint
	h, err := promtsdb.NewHead(nil, discard, nil, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	app := h.Appender(ctx)
	for _, s := range ss {
		for _, p := range s.points {
			if _, err := app.Append(0, s.lset, p.t, p.v); err != nil {
				t.Fatal(err)
			}
		}
		if s.points != nil {
			continue
		}
		step := s.step
		if step == 0 {
			step = minute
		}
		for ts := mint; ts < maxt; ts += step {
			if s.hist {
				_, err = app.AppendHistogram(0, s.lset, ts, tsdbutil.GenerateTestHistogram(ts/step), nil)
			} else {
				_, err = app.Append(0, s.lset, ts, s.f(ts))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	comp, err := promtsdb.NewLeveledCompactor(ctx, nil, discard, []int64{maxt - mint}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := comp.Write(dir, promtsdb.NewRangeHead(h, mint, maxt-1), mint, maxt, nil)
	if err != nil || len(ids) != 1 {
		t.Fatalf("write block: %v %v", ids, err)
	}
	return filepath.Join(dir, ids[0].String())
}

// putBlock writes a block of ss over [mint, maxt) and uploads it with a
// meta.json carrying the external labels ext, as a shipper does. It
// returns the uploaded meta.
func putBlock(t *testing.T, bkt objstore.Bucket, ext labels.Labels, mint, maxt int64, ss []testSeries) *block.Meta {
	t.Helper()
	return putBlockRes(t, bkt, ext, block.ResolutionRaw, mint, maxt, ss)
}

// putBlockRes is putBlock for blocks claiming resolution res (their chunks
// stay raw; for tests that look at metas only).
func putBlockRes(t *testing.T, bkt objstore.Bucket, ext labels.Labels, res, mint, maxt int64, ss []testSeries) *block.Meta {
	t.Helper()
	return blocktest.Upload(t, bkt, writeBlock(t, t.TempDir(), mint, maxt, ss), ext, res)
}

// counter is a counter rising by about one per second with a reset every
// 7h and a little noise.
func counter(ts int64) float64 {
	x := float64(ts%(7*hour)) / 1000
	return x + 3*math.Sin(float64(ts)/7e5) + 3
}

func gauge(ts int64) float64 { return 50 + 40*math.Sin(float64(ts)/3.6e6) }

func testSeriesSet() []testSeries {
	return []testSeries{
		{lset: labels.FromStrings("__name__", "istio_requests_total", "source_workload", "a"), f: counter},
		{lset: labels.FromStrings("__name__", "istio_requests_total", "source_workload", "b"), f: func(ts int64) float64 { return counter(ts + 3*hour) }},
		{lset: labels.FromStrings("__name__", "envoy_cluster_upstream_cx_active", "cluster_name", "x"), f: gauge},
	}
}

type testSample struct {
	t int64
	v float64
}

// readSamples reads every float sample of the block in dir.
func readSamples(t *testing.T, dir string) map[string][]testSample {
	t.Helper()
	b, err := promtsdb.OpenBlock(discard, dir, downsample.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q, err := promtsdb.NewBlockQuerier(b, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string][]testSample{}
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		key := ss.At().Labels().String()
		it := ss.At().Iterator(nil)
		for typ := it.Next(); typ != chunkenc.ValNone; typ = it.Next() {
			if typ != chunkenc.ValFloat {
				out[key] = append(out[key], testSample{it.AtT(), math.Inf(1)})
				continue
			}
			ts, v := it.At()
			out[key] = append(out[key], testSample{ts, v})
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

// download fetches block id from bkt into a new directory.
func download(t *testing.T, bkt objstore.Bucket, id ulid.ULID) string {
	t.Helper()
	return blocktest.Download(t, bkt, id)
}

// bucketBlock is a block as the bucket holds it.
type bucketBlock struct {
	meta                *block.Meta // nil without meta.json.
	deletion, noCompact bool
	objects             []string
}

// listBlocks returns every block directory in bkt.
func listBlocks(t *testing.T, bkt objstore.Bucket) map[ulid.ULID]*bucketBlock {
	t.Helper()
	ctx := context.Background()
	out := map[ulid.ULID]*bucketBlock{}
	err := bkt.Iter(ctx, "", func(name string) error {
		id, err := ulid.ParseStrict(strings.Split(name, "/")[0])
		if err != nil {
			t.Errorf("unexpected object %s", name)
			return nil
		}
		b := out[id]
		if b == nil {
			b = &bucketBlock{}
			out[id] = b
		}
		rel := strings.TrimPrefix(name, id.String()+"/")
		b.objects = append(b.objects, rel)
		switch rel {
		case block.MetaFilename:
			r, err := bkt.Get(ctx, name)
			if err != nil {
				return err
			}
			defer r.Close()
			if b.meta, err = block.ReadMeta(r); err != nil {
				return err
			}
		case block.DeletionMarkFilename:
			b.deletion = true
		case block.NoCompactMarkFilename:
			b.noCompact = true
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range out {
		slices.Sort(b.objects)
	}
	return out
}

// visible returns the blocks that readers use: complete and not marked
// for deletion.
func visible(t *testing.T, bkt objstore.Bucket) map[ulid.ULID]*block.Meta {
	t.Helper()
	out := map[ulid.ULID]*block.Meta{}
	for id, b := range listBlocks(t, bkt) {
		if b.meta != nil && !b.deletion {
			out[id] = b.meta
		}
	}
	return out
}

// mergedSamples reads the blocks ids from bkt and merges their samples per
// series, in time order, failing on a timestamp that two blocks hold.
func mergedSamples(t *testing.T, bkt objstore.Bucket, ids ...ulid.ULID) map[string][]testSample {
	t.Helper()
	out := map[string][]testSample{}
	for _, id := range ids {
		for k, s := range readSamples(t, download(t, bkt, id)) {
			out[k] = append(out[k], s...)
		}
	}
	for k, s := range out {
		slices.SortFunc(s, func(a, b testSample) int { return int(a.t - b.t) })
		for i := 1; i < len(s); i++ {
			if s[i].t == s[i-1].t {
				t.Fatalf("series %s: two samples at %d", k, s[i].t)
			}
		}
		out[k] = s
	}
	return out
}

func equalSamples(t *testing.T, got, want map[string][]testSample) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d series, want %d", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if len(g) != len(w) {
			t.Fatalf("series %s: got %d samples, want %d", k, len(g), len(w))
		}
		for i := range w {
			if g[i].t != w[i].t || math.Float64bits(g[i].v) != math.Float64bits(w[i].v) {
				t.Fatalf("series %s: sample %d is %v, want %v", k, i, g[i], w[i])
			}
		}
	}
}

// newTestCompactor returns a compactor on bkt with the clock clk and a
// fresh registry.
func newTestCompactor(t *testing.T, bkt objstore.Bucket, clk *fakeClock, mod func(*Options)) *Compactor {
	t.Helper()
	o := Options{Bucket: bkt, WorkDir: t.TempDir(), Logger: discard, Now: clk.Now}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func objectBytes(t *testing.T, bkt objstore.Bucket, name string) []byte {
	t.Helper()
	r, err := bkt.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func putObject(t *testing.T, bkt objstore.Bucket, name string, b []byte) {
	t.Helper()
	if err := bkt.Upload(context.Background(), name, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// writeMetaOnly writes m as dir/meta.json.
func writeMetaOnly(dir string, m *block.Meta) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, block.MetaFilename), b, 0o644)
}

// prometheusPlan is what Prometheus's leveled compactor plans for the
// block directories in dir.
func prometheusPlan(t *testing.T, dir string, ranges []int64) []string {
	t.Helper()
	comp, err := promtsdb.NewLeveledCompactorWithOptions(context.Background(), nil, discard, ranges, nil, promtsdb.LeveledCompactorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := comp.Plan(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
