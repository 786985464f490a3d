package bucketstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path"
	"slices"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/blocktest"
)

var discard = slog.New(slog.DiscardHandler)

// base is the start of the test data, on an hour boundary.
var base = time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC).UnixMilli()

const (
	hourMs = int64(time.Hour / time.Millisecond)
	// scrapeMs is the interval of the test samples; they are offset by
	// sampleOffset so that none falls on a block or window boundary.
	scrapeMs     = int64(15 * time.Second / time.Millisecond)
	sampleOffset = int64(1000)
)

var extA = labels.FromStrings("cluster", "eu-1", "replica", "a")

// sample is a float sample.
type sample struct {
	t int64
	v float64
}

// dataset is the samples of each series, by the series' labels.
type dataset map[string][]sample

func (d dataset) add(lset labels.Labels, t int64, v float64) {
	d[lset.String()] = append(d[lset.String()], sample{t, v})
}

// in returns the samples of d with mint <= t < maxt.
func (d dataset) in(mint, maxt int64) dataset {
	out := dataset{}
	for k, ss := range d {
		for _, s := range ss {
			if s.t >= mint && s.t < maxt {
				out[k] = append(out[k], s)
			}
		}
	}
	return out
}

// testSeries are the series of the test data: gauges with integer values
// and a counter that resets.
func testSeries() []labels.Labels {
	var ls []labels.Labels
	for i := range 4 {
		ls = append(ls, labels.FromStrings("__name__", "test_metric", "instance", fmt.Sprintf("i%d", i), "job", "mesh"))
	}
	ls = append(ls, labels.FromStrings("__name__", "test_counter_total", "instance", "i0", "job", "mesh"))
	return ls
}

// value is the value of series k at sample number i.
func value(k, i int) float64 {
	if k == 4 { // The counter: +3 per sample, reset every 500 samples.
		return float64((i % 500) * 3)
	}
	return float64((i*7 + k*13) % 101)
}

// rawDB is a TSDB with the test data written into it.
type rawDB struct {
	db     *promtsdb.DB
	data   dataset  // Everything appended.
	blocks []string // Block directories, oldest first.
	metas  []promtsdb.BlockMeta
}

// makeRawDB opens a TSDB in a temporary directory with 1h blocks, appends
// the test series for hours, and compacts its head into blocks up to
// hours-1 (the head keeps the rest). The TSDB stays open.
func makeRawDB(t *testing.T, hours int) *rawDB {
	t.Helper()
	opts := promtsdb.DefaultOptions()
	opts.MinBlockDuration = hourMs
	opts.MaxBlockDuration = hourMs
	opts.RetentionDuration = 0
	db, err := promtsdb.Open(t.TempDir(), discard, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	// Blocks come only from the CompactHead calls below, never from the
	// background compaction racing them.
	db.DisableCompactions()
	r := &rawDB{db: db, data: dataset{}}
	app := db.Appender(context.Background())
	n := int(int64(hours) * hourMs / scrapeMs)
	for i := range n {
		ts := base + sampleOffset + int64(i)*scrapeMs
		for k, lset := range testSeries() {
			v := value(k, i)
			if _, err := app.Append(0, lset, ts, v); err != nil {
				t.Fatal(err)
			}
			r.data.add(lset, ts, v)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	for h := range hours - 1 {
		mint := base + int64(h)*hourMs
		if err := db.CompactHead(promtsdb.NewRangeHead(db.Head(), mint, mint+hourMs-1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range db.Blocks() {
		r.blocks = append(r.blocks, b.Dir())
		r.metas = append(r.metas, b.Meta())
	}
	if len(r.blocks) != hours-1 {
		t.Fatalf("got %d blocks, want %d", len(r.blocks), hours-1)
	}
	return r
}

// upload puts the block in dir into bkt with a meta.json whose thanos
// section has lset, resolution and source (blocktest.Upload); without
// meta.json when withMeta is false (a partial upload). It returns the
// meta.
func upload(t *testing.T, bkt objstore.Bucket, dir string, lset labels.Labels, resolution int64, withMeta bool) *block.Meta {
	t.Helper()
	m := blocktest.Upload(t, bkt, dir, lset, resolution)
	if !withMeta {
		if err := bkt.Delete(context.Background(), path.Join(m.ULID.String(), block.MetaFilename)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// uploadJSON puts v as JSON at <id>/name.
func uploadJSON(t *testing.T, bkt objstore.Bucket, id ulid.ULID, name string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := bkt.Upload(context.Background(), path.Join(id.String(), name), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// deleteBlock deletes every object of block id.
func deleteBlock(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
	t.Helper()
	ctx := context.Background()
	err := bkt.Iter(ctx, id.String()+"/", func(name string) error {
		return bkt.Delete(ctx, name)
	}, objstore.WithRecursiveIter())
	if err != nil {
		t.Fatal(err)
	}
}

// newStore returns a synced Store on bkt with its own registry.
func newStore(t *testing.T, bkt objstore.BucketReader, cacheDir string, o Options) (*Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.Bucket, o.CacheDir, o.Logger, o.Registerer = bkt, cacheDir, discard, reg
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return promtestutil.ToFloat64(c)
}

var engine = promql.NewEngine(promql.EngineOpts{
	Logger:        discard,
	MaxSamples:    50_000_000,
	Timeout:       time.Minute,
	LookbackDelta: 5 * time.Minute,
})

// rangeQuery runs a PromQL range query and returns its matrix by series.
func rangeQuery(t *testing.T, q storage.Queryable, expr string, start, end, step int64) dataset {
	t.Helper()
	qry, err := engine.NewRangeQuery(context.Background(), q, nil, expr, time.UnixMilli(start), time.UnixMilli(end), time.Duration(step)*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer qry.Close()
	return matrixOf(t, qry.Exec(context.Background()))
}

// instantQuery runs a PromQL instant query that yields a matrix (a range
// selector) and returns it by series.
func instantQuery(t *testing.T, q storage.Queryable, expr string, ts int64) dataset {
	t.Helper()
	qry, err := engine.NewInstantQuery(context.Background(), q, nil, expr, time.UnixMilli(ts))
	if err != nil {
		t.Fatal(err)
	}
	defer qry.Close()
	return matrixOf(t, qry.Exec(context.Background()))
}

func matrixOf(t *testing.T, res *promql.Result) dataset {
	t.Helper()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	m, err := res.Matrix()
	if err != nil {
		t.Fatal(err)
	}
	out := dataset{}
	for _, s := range m {
		if len(s.Histograms) > 0 {
			t.Fatalf("unexpected histograms in %s", s.Metric)
		}
		for _, p := range s.Floats {
			out.add(s.Metric, p.T, p.F)
		}
	}
	return out
}

// equalData fails t unless got and want hold the same samples, with
// values within tol of each other.
func equalData(t *testing.T, got, want dataset, tol float64) {
	t.Helper()
	keys := func(d dataset) []string {
		var ks []string
		for k := range d {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	if !slices.Equal(keys(got), keys(want)) {
		t.Fatalf("series: got %v, want %v", keys(got), keys(want))
	}
	for _, k := range keys(want) {
		g, w := got[k], want[k]
		if len(g) != len(w) {
			t.Fatalf("%s: got %d samples, want %d (got %v..., want %v...)", k, len(g), len(w), head(g), head(w))
		}
		for i := range w {
			if g[i].t != w[i].t || math.Abs(g[i].v-w[i].v) > tol*math.Max(1, math.Abs(w[i].v)) {
				t.Fatalf("%s: sample %d: got %v, want %v", k, i, g[i], w[i])
			}
		}
	}
}

func head(s []sample) []sample {
	return s[:min(len(s), 5)]
}

func count(d dataset) int {
	n := 0
	for _, s := range d {
		n += len(s)
	}
	return n
}

// cachedBlocks lists the block directories in the cache directory.
func cachedBlocks(t *testing.T, dir string) []ulid.ULID {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ulid.ULID
	for _, de := range des {
		if id, err := ulid.ParseStrict(de.Name()); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// downsampleRaw makes one aggregate chunk of the samples ss at resolution
// res (blocktest.AggrChunk).
func downsampleRaw(ss []sample, res int64) chunks.Meta {
	return blocktest.AggrChunk(toBlocktest(ss), res)
}

func toBlocktest(ss []sample) []blocktest.Sample {
	out := make([]blocktest.Sample, len(ss))
	for i, s := range ss {
		out[i] = blocktest.Sample{T: s.t, V: s.v}
	}
	return out
}

// writeDownsampledBlock writes a block of resolution res over
// [mint, maxt) into a new directory under parent, with one aggregate
// chunk per series of data, and returns the block's directory.
func writeDownsampledBlock(t *testing.T, parent string, data dataset, mint, maxt, res int64) string {
	t.Helper()
	in := data.in(mint, maxt)
	var series []blocktest.Series
	for _, lset := range testSeries() {
		series = append(series, blocktest.Series{Labels: lset, Samples: toBlocktest(in[lset.String()])})
	}
	return blocktest.WriteAggrBlock(t, parent, series, mint, maxt, res)
}
