// Package blocktest makes the metric blocks that the tests of the
// shipper, the bucket compactor and the bucket store start from: blocks
// uploaded as a shipper uploads them, downloaded object by object, and
// downsampled blocks written directly from samples. It is for tests only.
package blocktest

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

// Sample is a float sample.
type Sample struct {
	T int64
	V float64
}

// Series is a series to write into a block: its labels and float
// samples in time order.
type Series struct {
	Labels  labels.Labels
	Samples []Sample
}

// Upload uploads the block in dir to bkt as the shipper does: with a
// meta.json whose thanos section carries the external labels ext, source
// block.SourceShipper and resolution res, uploaded last. It returns the
// uploaded meta.
func Upload(t testing.TB, bkt objstore.Bucket, dir string, ext labels.Labels, res int64) *block.Meta {
	t.Helper()
	m, err := block.NewMeta(dir, ext, block.SourceShipper)
	if err != nil {
		t.Fatal(err)
	}
	m.Thanos.Downsample.Resolution = res
	if err := block.UploadWithMeta(context.Background(), bkt, dir, m, block.RetryOptions{}); err != nil {
		t.Fatal(err)
	}
	return m
}

// Download copies every object under <id>/ in bkt, as it is and marks
// included, into a new directory named by id, and returns the directory.
func Download(t testing.TB, bkt objstore.BucketReader, id ulid.ULID) string {
	t.Helper()
	ctx := context.Background()
	dst := filepath.Join(t.TempDir(), id.String())
	prefix := id.String() + objstore.DirDelim
	err := bkt.Iter(ctx, prefix, func(name string) error {
		r, err := bkt.Get(ctx, name)
		if err != nil {
			return err
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		p := filepath.Join(dst, filepath.FromSlash(strings.TrimPrefix(name, prefix)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, b, 0o644)
	}, objstore.WithRecursiveIter())
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// AggrChunk makes one aggregate chunk of the samples ss at resolution
// res, as Thanos's downsampleRawLoop does for one batch: per window
// count, sum, min, max and the counter with resets removed, stamped with
// the window's last millisecond (the last window with the last sample's
// time), and the counter framed by the first and last raw values. It is
// written apart from the compactor's downsampler, so that tests of the
// two check each other.
func AggrChunk(ss []Sample, res int64) chunks.Meta {
	var (
		xs   [5]chunkenc.Chunk
		apps [5]chunkenc.Appender
	)
	for i := range xs {
		xs[i] = chunkenc.NewXORChunk()
		apps[i], _ = xs[i].Appender()
	}
	lastT := ss[len(ss)-1].T
	apps[downsample.AggrCounter].Append(0, ss[0].T, ss[0].V)
	var (
		cnt                  int
		sum, mn, mx, counter float64
		last                 float64
		total                int
		windowEnd            = int64(-1)
	)
	flush := func() {
		apps[downsample.AggrCount].Append(0, windowEnd, float64(cnt))
		apps[downsample.AggrSum].Append(0, windowEnd, sum)
		apps[downsample.AggrMin].Append(0, windowEnd, mn)
		apps[downsample.AggrMax].Append(0, windowEnd, mx)
		apps[downsample.AggrCounter].Append(0, windowEnd, counter)
	}
	for _, s := range ss {
		if s.T > windowEnd {
			if windowEnd != -1 {
				flush()
			}
			cnt, sum, mn, mx = 0, 0, math.MaxFloat64, -math.MaxFloat64
			windowEnd = min(s.T-s.T%res+res-1, lastT)
		}
		switch {
		case total == 0:
			counter = s.V
		case s.V < last:
			counter += s.V
		default:
			counter += s.V - last
		}
		last = s.V
		total++
		cnt++
		sum += s.V
		mn, mx = min(mn, s.V), max(mx, s.V)
	}
	flush()
	apps[downsample.AggrCounter].Append(0, windowEnd, ss[len(ss)-1].V)
	return chunks.Meta{MinTime: ss[0].T, MaxTime: windowEnd, Chunk: downsample.EncodeAggrChunk(xs)}
}

// WriteAggrBlock writes a block of resolution res over [mint, maxt) into
// a new directory under parent, with one aggregate chunk (AggrChunk) per
// series, and returns the block's directory. Series without samples are
// left out. Its meta.json is Prometheus's; the resolution goes into the
// thanos section on upload.
func WriteAggrBlock(t testing.TB, parent string, series []Series, mint, maxt, res int64) string {
	t.Helper()
	id := ulid.Make()
	dir := filepath.Join(parent, id.String())
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	series = slices.DeleteFunc(slices.Clone(series), func(s Series) bool { return len(s.Samples) == 0 })
	slices.SortFunc(series, func(a, b Series) int { return labels.Compare(a.Labels, b.Labels) })
	syms := map[string]struct{}{}
	for _, s := range series {
		s.Labels.Range(func(l labels.Label) { syms[l.Name], syms[l.Value] = struct{}{}, struct{}{} })
	}
	cw, err := chunks.NewWriter(filepath.Join(dir, block.ChunksDirname))
	if err != nil {
		t.Fatal(err)
	}
	iw, err := index.NewWriter(context.Background(), filepath.Join(dir, block.IndexFilename))
	if err != nil {
		t.Fatal(err)
	}
	sorted := make([]string, 0, len(syms))
	for s := range syms {
		sorted = append(sorted, s)
	}
	slices.Sort(sorted)
	for _, s := range sorted {
		if err := iw.AddSymbol(s); err != nil {
			t.Fatal(err)
		}
	}
	stats := promtsdb.BlockStats{}
	for i, s := range series {
		chk := []chunks.Meta{AggrChunk(s.Samples, res)}
		if err := cw.WriteChunks(chk...); err != nil { // Sets the references.
			t.Fatal(err)
		}
		if err := iw.AddSeries(storage.SeriesRef(i+1), s.Labels, chk...); err != nil {
			t.Fatal(err)
		}
		stats.NumSeries++
		stats.NumChunks++
		stats.NumSamples += uint64(chk[0].Chunk.NumSamples())
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := iw.Close(); err != nil {
		t.Fatal(err)
	}
	bm := promtsdb.BlockMeta{ULID: id, MinTime: mint, MaxTime: maxt, Stats: stats, Version: block.MetaVersion1}
	bm.Compaction.Level = 1
	bm.Compaction.Sources = []ulid.ULID{id}
	b, err := json.Marshal(bm)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, block.MetaFilename), b, 0o666); err != nil {
		t.Fatal(err)
	}
	return dir
}

// OrderBucket records the names of the objects uploaded through it, in
// order, for tests of the order of uploads (meta.json last).
type OrderBucket struct {
	objstore.Bucket
	mu      sync.Mutex
	uploads []string
}

// Upload records name and uploads to the wrapped bucket.
func (b *OrderBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	b.mu.Lock()
	b.uploads = append(b.uploads, name)
	b.mu.Unlock()
	return b.Bucket.Upload(ctx, name, r, opts...)
}

// Uploads returns the names uploaded so far, in order.
func (b *OrderBucket) Uploads() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.uploads)
}

// Reset forgets the uploads so far.
func (b *OrderBucket) Reset() {
	b.mu.Lock()
	b.uploads = nil
	b.mu.Unlock()
}
