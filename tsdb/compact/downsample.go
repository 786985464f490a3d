package compact

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

// The block ranges from which Thanos downsamples: a raw block spanning at
// least 40h gets a 5m block, a 5m block spanning at least 10d a 1h block.
// Smaller blocks would give aggregate chunks of a few samples.
const (
	DefaultFiveMinutesAfter = 40 * time.Hour
	DefaultOneHourAfter     = 10 * 24 * time.Hour
)

// sample is one float sample.
type sample struct {
	t int64
	v float64
}

// Downsample writes a block of resolution res holding the aggregates of
// the block b, whose meta.json is meta, into a new directory under dir and
// returns its ULID. The new meta.json is meta's with the new ULID,
// resolution, statistics and files, and source "compactor"; the
// compaction section, sources included, is kept, so that the block can be
// recognised as b's downsampled copy.
//
// meta must carry external labels, as Thanos requires of every block. b
// must be opened with downsample.NewPool if it is downsampled already. Raw float
// series are aggregated per window of res into AggrChunks of count, sum,
// min, max and counter; 5m aggregates are aggregated again along their
// chunk boundaries. Native histogram samples are left out: Thanos would
// write histogram aggregates, which this package does not (yet) produce,
// so a series with only histogram samples has no downsampled copy.
func Downsample(ctx context.Context, meta *block.Meta, b promtsdb.BlockReader, dir string, res int64) (id ulid.ULID, err error) {
	if len(meta.Thanos.Labels) == 0 {
		return id, fmt.Errorf("downsample block %s: empty external labels: Thanos refuses blocks without them", meta.ULID)
	}
	if meta.Thanos.Downsample.Resolution >= res {
		return id, fmt.Errorf("downsample block %s: resolution %d is not lower than the target %d", meta.ULID, meta.Thanos.Downsample.Resolution, res)
	}
	indexr, err := b.Index()
	if err != nil {
		return id, fmt.Errorf("open index reader: %w", err)
	}
	defer indexr.Close()
	chunkr, err := b.Chunks()
	if err != nil {
		return id, fmt.Errorf("open chunk reader: %w", err)
	}
	defer chunkr.Close()

	id = ulid.Make()
	final := filepath.Join(dir, id.String())
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return id, err
	}
	defer os.RemoveAll(tmp)
	w, err := newBlockWriter(ctx, tmp, indexr)
	if err != nil {
		return id, err
	}
	defer w.close()

	k, v := index.AllPostingsKey()
	postings, err := indexr.Postings(ctx, k, v)
	if err != nil {
		return id, fmt.Errorf("read postings: %w", err)
	}
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		all     []sample
		out     []chunks.Meta
		aggrs   []*downsample.AggrChunk
		it      chunkenc.Iterator
	)
	for postings.Next() {
		if err := ctx.Err(); err != nil {
			return id, err
		}
		ref := postings.At()
		chks, all, out, aggrs = chks[:0], all[:0], out[:0], aggrs[:0]
		if err := indexr.Series(ref, &builder, &chks); err != nil {
			return id, fmt.Errorf("read series %d: %w", ref, err)
		}
		lset := builder.Labels()
		for i := 1; i < len(chks); i++ {
			if chks[i-1].MaxTime >= chks[i].MinTime {
				return id, fmt.Errorf("series %s: overlapping chunks", lset)
			}
		}
		for i := range chks {
			c, _, err := chunkr.ChunkOrIterable(chks[i])
			if err != nil {
				return id, fmt.Errorf("series %s: read chunk: %w", lset, err)
			}
			if c == nil {
				return id, fmt.Errorf("series %s: chunk %d is not stored whole", lset, chks[i].Ref)
			}
			chks[i].Chunk = c
		}

		if meta.Thanos.Downsample.Resolution == block.ResolutionRaw {
			for _, c := range chks {
				switch enc := c.Chunk.Encoding(); {
				case isFloatEncoding(enc):
					it = c.Chunk.Iterator(it)
					if err := expandFloats(it, &all); err != nil {
						return id, fmt.Errorf("series %s: %w", lset, err)
					}
				case isHistogramEncoding(enc):
					// Left out; see above.
				default:
					return id, fmt.Errorf("series %s: unexpected chunk encoding %s in a raw block", lset, enc)
				}
			}
			out = downsampleRaw(all, res)
		} else {
			var (
				mint, maxt int64
				seen       bool
			)
			for _, c := range chks {
				ac, ok := c.Chunk.(*downsample.AggrChunk)
				if !ok {
					// Thanos's downsampled blocks may hold plain chunks
					// (thanos-io/thanos#5272): empty ones are dropped, others
					// are aggregated to 5m first.
					if !isFloatEncoding(c.Chunk.Encoding()) || c.Chunk.NumSamples() == 0 {
						continue
					}
					all = all[:0]
					it = c.Chunk.Iterator(it)
					if err := expandFloats(it, &all); err != nil {
						return id, fmt.Errorf("series %s: %w", lset, err)
					}
					for _, m := range downsampleRaw(all, block.Resolution5m) {
						aggrs = append(aggrs, m.Chunk.(*downsample.AggrChunk))
					}
				} else {
					if isHistogramAggr(*ac) {
						continue
					}
					aggrs = append(aggrs, ac)
				}
				if !seen {
					mint, seen = c.MinTime, true
				}
				maxt = c.MaxTime
			}
			if len(aggrs) > 0 {
				out, err = downsampleAggr(aggrs, &all, mint, maxt, meta.Thanos.Downsample.Resolution, res)
				if err != nil {
					return id, fmt.Errorf("series %s: %w", lset, err)
				}
			}
		}
		if len(out) == 0 {
			continue
		}
		if err := w.writeSeries(lset, out); err != nil {
			return id, err
		}
	}
	if err := postings.Err(); err != nil {
		return id, fmt.Errorf("iterate postings: %w", err)
	}
	if err := w.close(); err != nil {
		return id, err
	}

	nm := *meta
	nm.ULID = id
	nm.Stats = promtsdb.BlockStats{NumSeries: w.series, NumChunks: w.chunks, NumSamples: w.samples}
	nm.Compaction.Sources = append([]ulid.ULID(nil), meta.Compaction.Sources...)
	nm.Compaction.Parents = append([]promtsdb.BlockDesc(nil), meta.Compaction.Parents...)
	nm.Thanos.Labels = cloneLabels(meta.Thanos.Labels)
	nm.Thanos.Downsample.Resolution = res
	nm.Thanos.Source = block.SourceCompactor
	nm.Thanos.IndexStats = block.IndexStats{}
	if err := block.WriteMeta(tmp, &nm); err != nil {
		return id, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return id, err
	}
	return id, nil
}

func isFloatEncoding(e chunkenc.Encoding) bool {
	return e == chunkenc.EncXOR || e == chunkenc.EncXOR2
}

func isHistogramEncoding(e chunkenc.Encoding) bool {
	switch e {
	case chunkenc.EncHistogram, chunkenc.EncFloatHistogram, chunkenc.EncHistogramST, chunkenc.EncFloatHistogramST:
		return true
	}
	return false
}

// isHistogramAggr reports whether c holds native histogram aggregates, as
// Thanos writes them: its counter is a histogram chunk.
func isHistogramAggr(c downsample.AggrChunk) bool {
	cntr, err := c.Get(downsample.AggrCounter)
	return err == nil && isHistogramEncoding(cntr.Encoding())
}

// blockWriter writes chunks and index of a block as series arrive, in
// label order (Thanos's streamedBlockWriter).
type blockWriter struct {
	chunkw                  *chunks.Writer
	indexw                  *index.Writer
	closed                  bool
	ref                     uint64
	series, chunks, samples uint64
}

func newBlockWriter(ctx context.Context, dir string, symbolsFrom promtsdb.IndexReader) (*blockWriter, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	chunkw, err := chunks.NewWriter(filepath.Join(dir, block.ChunksDirname))
	if err != nil {
		return nil, fmt.Errorf("open chunk writer: %w", err)
	}
	indexw, err := index.NewWriter(ctx, filepath.Join(dir, block.IndexFilename))
	if err != nil {
		chunkw.Close()
		return nil, fmt.Errorf("open index writer: %w", err)
	}
	w := &blockWriter{chunkw: chunkw, indexw: indexw}
	syms := symbolsFrom.Symbols()
	for syms.Next() {
		if err := indexw.AddSymbol(syms.At()); err != nil {
			w.close()
			return nil, fmt.Errorf("add symbol: %w", err)
		}
	}
	if err := syms.Err(); err != nil {
		w.close()
		return nil, fmt.Errorf("read symbols: %w", err)
	}
	return w, nil
}

func (w *blockWriter) writeSeries(lset labels.Labels, chks []chunks.Meta) error {
	if err := w.chunkw.WriteChunks(chks...); err != nil {
		return fmt.Errorf("write chunks: %w", err)
	}
	if err := w.indexw.AddSeries(storage.SeriesRef(w.ref), lset, chks...); err != nil {
		return fmt.Errorf("add series %s: %w", lset, err)
	}
	w.ref++
	w.series++
	w.chunks += uint64(len(chks))
	for _, c := range chks {
		w.samples += uint64(c.Chunk.NumSamples())
	}
	return nil
}

func (w *blockWriter) close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	return errors.Join(w.chunkw.Close(), w.indexw.Close())
}

// downsampleRaw aggregates the float samples data into AggrChunks of
// windows of res (Thanos's DownsampleRaw).
func downsampleRaw(data []sample, res int64) []chunks.Meta {
	if len(data) == 0 {
		return nil
	}
	mint, maxt := data[0].t, data[len(data)-1].t
	// Raw data is assumed to be scraped every minute; that only sizes the
	// chunks.
	numChunks := targetChunkCount(mint, maxt, 60*1000, res, len(data))
	return downsampleRawLoop(data, res, numChunks)
}

// downsampleRawLoop cuts data into about numChunks batches, each ending
// with a whole window, and aggregates each into one downsample.AggrChunk.
func downsampleRawLoop(data []sample, res int64, numChunks int) []chunks.Meta {
	batchSize := len(data)/numChunks + 1
	out := make([]chunks.Meta, 0, numChunks)
	for len(data) > 0 {
		j := min(batchSize, len(data))
		// Take the rest of the window the batch ends in, so that no window
		// is split between chunks.
		curW := currentWindow(data[j-1].t, res)
		for ; j < len(data) && data[j].t <= curW; j++ {
		}
		batch := make([]sample, 0, j)
		for _, s := range data[:j] {
			if math.IsNaN(s.v) {
				continue
			}
			batch = append(batch, s)
		}
		data = data[j:]
		if len(batch) == 0 {
			continue
		}
		out = append(out, downsampleFloatBatch(batch, res))
	}
	return out
}

func downsampleFloatBatch(batch []sample, res int64) chunks.Meta {
	ab := newAggrChunkBuilder()
	// The first raw value opens the counter; see
	// downsample.NewApplyCounterResetsIterator.
	ab.apps[downsample.AggrCounter].Append(0, batch[0].t, batch[0].v)
	lastT := downsampleBatch(batch, res, ab.add)
	// The last raw value closes it, at the timestamp of the last window.
	ab.apps[downsample.AggrCounter].Append(0, lastT, batch[len(batch)-1].v)
	return ab.encode()
}

// currentWindow returns the last timestamp of the window of res that t
// falls into.
func currentWindow(t, res int64) int64 {
	return t - (t % res) + res - 1
}

// rangeFullness returns how much of [mint, maxt] count samples step apart
// cover, at most 1.
func rangeFullness(mint, maxt, step int64, count int) float64 {
	f := float64(count) / (float64(maxt-mint) / float64(step))
	if f > 1 {
		return 1
	}
	return f
}

// targetChunkCount returns how many chunks a downsampled series gets: as
// many as keep them under 140 samples on average.
func targetChunkCount(mint, maxt, inRes, outRes int64, count int) (x int) {
	maxSamples := float64((maxt - mint) / outRes)
	expSamples := int(maxSamples*rangeFullness(mint, maxt, inRes, count)) + 1
	for x = 1; expSamples/x > 140; x++ {
	}
	return x
}

// aggregator accumulates the aggregates of one window, and the counter
// over all windows so far.
type aggregator struct {
	total   int     // Samples so far.
	count   int     // Samples in the window.
	sum     float64 // Sum of the window.
	min     float64 // Minimum of the window.
	max     float64 // Maximum of the window.
	counter float64 // Counter with resets removed, since the first sample.
	resets  int     // Counter resets so far.
	last    float64 // Last value.
}

func (a *aggregator) reset() {
	a.count = 0
	a.sum = 0
	a.min = math.MaxFloat64
	a.max = -math.MaxFloat64
}

func (a *aggregator) add(v float64) {
	switch {
	case a.total == 0:
		a.counter = v
	case v < a.last:
		// A reset: the counter restarted from 0.
		a.counter += v
		a.resets++
	default:
		a.counter += v - a.last
	}
	a.last = v
	a.sum += v
	a.count++
	a.total++
	if v < a.min {
		a.min = v
	}
	if v > a.max {
		a.max = v
	}
}

// downsampleBatch aggregates data per window of res and calls add with
// each window's timestamp: the window's last millisecond, or the batch's
// last sample for the batch's last window. It returns the last timestamp
// passed to add.
func downsampleBatch(data []sample, res int64, add func(int64, *aggregator)) int64 {
	var (
		aggr  aggregator
		nextT = int64(-1)
		lastT = data[len(data)-1].t
	)
	for _, s := range data {
		if value.IsStaleNaN(s.v) {
			continue
		}
		if s.t > nextT {
			if nextT != -1 {
				add(nextT, &aggr)
			}
			aggr.reset()
			// Do not reach past the batch: the next batch, cut at chunk
			// boundaries when aggregating aggregates, might start in the
			// same window.
			nextT = min(currentWindow(s.t, res), lastT)
		}
		aggr.add(s.v)
	}
	if aggr.total > 0 {
		add(nextT, &aggr)
	}
	return nextT
}

// aggrChunkBuilder builds the sub-chunks of one downsample.AggrChunk.
type aggrChunkBuilder struct {
	mint, maxt int64
	chunks     [5]chunkenc.Chunk
	apps       [5]chunkenc.Appender
}

func newAggrChunkBuilder() *aggrChunkBuilder {
	b := &aggrChunkBuilder{mint: math.MaxInt64, maxt: math.MinInt64}
	for i := range b.chunks {
		b.chunks[i] = chunkenc.NewXORChunk()
		b.apps[i], _ = b.chunks[i].Appender()
	}
	return b
}

func (b *aggrChunkBuilder) add(t int64, a *aggregator) {
	b.mint = min(b.mint, t)
	b.maxt = max(b.maxt, t)
	b.apps[downsample.AggrSum].Append(0, t, a.sum)
	b.apps[downsample.AggrMin].Append(0, t, a.min)
	b.apps[downsample.AggrMax].Append(0, t, a.max)
	b.apps[downsample.AggrCount].Append(0, t, float64(a.count))
	b.apps[downsample.AggrCounter].Append(0, t, a.counter)
}

func (b *aggrChunkBuilder) encode() chunks.Meta {
	return chunks.Meta{MinTime: b.mint, MaxTime: b.maxt, Chunk: downsample.EncodeAggrChunk(b.chunks)}
}

// downsampleAggr aggregates the AggrChunks chks of resolution inRes,
// spanning [mint, maxt], to resolution outRes.
func downsampleAggr(chks []*downsample.AggrChunk, buf *[]sample, mint, maxt, inRes, outRes int64) ([]chunks.Meta, error) {
	var numSamples int
	for _, c := range chks {
		numSamples += c.NumSamples()
	}
	return downsampleAggrLoop(chks, buf, outRes, targetChunkCount(mint, maxt, inRes, outRes, numSamples))
}

// downsampleAggrLoop aggregates chks in about numChunks batches of whole
// chunks into one downsample.AggrChunk each.
func downsampleAggrLoop(chks []*downsample.AggrChunk, buf *[]sample, res int64, numChunks int) ([]chunks.Meta, error) {
	// Aggregate only along the input chunks' boundaries: a chunk's first
	// and last counter samples are true raw values and must survive every
	// round of downsampling.
	batchSize := max(len(chks)/numChunks, 1)
	out := make([]chunks.Meta, 0, numChunks)
	for len(chks) > 0 {
		j := min(batchSize, len(chks))
		part := chks[:j]
		chks = chks[j:]
		chk, err := downsampleAggrBatch(part, buf, res)
		if err != nil {
			return nil, err
		}
		if chk.MinTime == math.MaxInt64 || chk.MaxTime == math.MinInt64 {
			return nil, fmt.Errorf("invalid range for downsampled aggregate chunk: mint=%d maxt=%d", chk.MinTime, chk.MaxTime)
		}
		out = append(out, chk)
	}
	return out, nil
}

func downsampleAggrBatch(chks []*downsample.AggrChunk, buf *[]sample, res int64) (chunks.Meta, error) {
	ab := &aggrChunkBuilder{}
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	var it chunkenc.Iterator

	// do aggregates count, sum, min and max: the value f picks from each
	// window's aggregator.
	do := func(at downsample.AggrType, f func(a *aggregator) float64) error {
		*buf = (*buf)[:0]
		for _, chk := range chks {
			c, err := chk.Get(at)
			if errors.Is(err, downsample.ErrAggrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			it = c.Iterator(it)
			if err := expandFloats(it, buf); err != nil {
				return err
			}
		}
		if len(*buf) == 0 {
			return nil
		}
		ab.chunks[at] = chunkenc.NewXORChunk()
		ab.apps[at], _ = ab.chunks[at].Appender()
		downsampleBatch(*buf, res, func(t int64, a *aggregator) {
			mint, maxt = min(mint, t), max(maxt, t)
			ab.apps[at].Append(0, t, f(a))
		})
		return nil
	}
	// The count of a window is the sum of the counts of its sub-windows.
	if err := do(downsample.AggrCount, func(a *aggregator) float64 { return a.sum }); err != nil {
		return chunks.Meta{}, err
	}
	if err := do(downsample.AggrSum, func(a *aggregator) float64 { return a.sum }); err != nil {
		return chunks.Meta{}, err
	}
	if err := do(downsample.AggrMin, func(a *aggregator) float64 { return a.min }); err != nil {
		return chunks.Meta{}, err
	}
	if err := do(downsample.AggrMax, func(a *aggregator) float64 { return a.max }); err != nil {
		return chunks.Meta{}, err
	}

	// The counter: remove the resets across all chunks, then aggregate.
	var its []chunkenc.Iterator
	for _, chk := range chks {
		c, err := chk.Get(downsample.AggrCounter)
		if errors.Is(err, downsample.ErrAggrNotExist) {
			continue
		}
		if err != nil {
			return chunks.Meta{}, err
		}
		its = append(its, c.Iterator(nil))
	}
	*buf = (*buf)[:0]
	cit := downsample.NewApplyCounterResetsIterator(its...)
	if err := expandFloats(cit, buf); err != nil {
		return chunks.Meta{}, err
	}
	if len(*buf) > 0 {
		ab.chunks[downsample.AggrCounter] = chunkenc.NewXORChunk()
		ab.apps[downsample.AggrCounter], _ = ab.chunks[downsample.AggrCounter].Appender()
		ab.apps[downsample.AggrCounter].Append(0, (*buf)[0].t, (*buf)[0].v)
		lastT := downsampleBatch(*buf, res, func(t int64, a *aggregator) {
			mint, maxt = min(mint, t), max(maxt, t)
			ab.apps[downsample.AggrCounter].Append(0, t, a.counter)
		})
		ab.apps[downsample.AggrCounter].Append(0, lastT, cit.LastRaw())
	}
	ab.mint, ab.maxt = mint, maxt
	return ab.encode(), nil
}

// expandFloats appends the float samples of it to buf, skipping stale
// markers and samples that go back in time.
func expandFloats(it chunkenc.Iterator, buf *[]sample) error {
	lastT := int64(math.MinInt64)
	if n := len(*buf); n > 0 {
		lastT = (*buf)[n-1].t
	}
	for typ := it.Next(); typ != chunkenc.ValNone; typ = it.Next() {
		if typ != chunkenc.ValFloat {
			return fmt.Errorf("unexpected %s sample in a float chunk", typ)
		}
		t, v := it.At()
		if value.IsStaleNaN(v) {
			continue
		}
		if t >= lastT {
			*buf = append(*buf, sample{t, v})
			lastT = t
		}
	}
	return it.Err()
}
