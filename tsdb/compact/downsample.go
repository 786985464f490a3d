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
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/meshlens/meshlens/tsdb/block"
)

// The block ranges from which Thanos downsamples: a raw block spanning at
// least 40h gets a 5m block, a 5m block spanning at least 10d a 1h block.
// Smaller blocks would give aggregate chunks of a few samples.
const (
	DefaultFiveMinutesAfter = 40 * time.Hour
	DefaultOneHourAfter     = 10 * 24 * time.Hour
)

// millis is a timestamp in milliseconds. Seek methods take it so that
// vet does not mistake them for io.Seeker's.
type millis = int64

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
// must be opened with NewPool if it is downsampled already. Raw float
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
		aggrs   []*AggrChunk
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
				ac, ok := c.Chunk.(*AggrChunk)
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
						aggrs = append(aggrs, m.Chunk.(*AggrChunk))
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
func isHistogramAggr(c AggrChunk) bool {
	cntr, err := c.Get(AggrCounter)
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
// with a whole window, and aggregates each into one AggrChunk.
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
	// NewApplyCounterResetsIterator.
	ab.apps[AggrCounter].Append(0, batch[0].t, batch[0].v)
	lastT := downsampleBatch(batch, res, ab.add)
	// The last raw value closes it, at the timestamp of the last window.
	ab.apps[AggrCounter].Append(0, lastT, batch[len(batch)-1].v)
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

// aggrChunkBuilder builds the sub-chunks of one AggrChunk.
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
	b.apps[AggrSum].Append(0, t, a.sum)
	b.apps[AggrMin].Append(0, t, a.min)
	b.apps[AggrMax].Append(0, t, a.max)
	b.apps[AggrCount].Append(0, t, float64(a.count))
	b.apps[AggrCounter].Append(0, t, a.counter)
}

func (b *aggrChunkBuilder) encode() chunks.Meta {
	return chunks.Meta{MinTime: b.mint, MaxTime: b.maxt, Chunk: EncodeAggrChunk(b.chunks)}
}

// downsampleAggr aggregates the AggrChunks chks of resolution inRes,
// spanning [mint, maxt], to resolution outRes.
func downsampleAggr(chks []*AggrChunk, buf *[]sample, mint, maxt, inRes, outRes int64) ([]chunks.Meta, error) {
	var numSamples int
	for _, c := range chks {
		numSamples += c.NumSamples()
	}
	return downsampleAggrLoop(chks, buf, outRes, targetChunkCount(mint, maxt, inRes, outRes, numSamples))
}

// downsampleAggrLoop aggregates chks in about numChunks batches of whole
// chunks into one AggrChunk each.
func downsampleAggrLoop(chks []*AggrChunk, buf *[]sample, res int64, numChunks int) ([]chunks.Meta, error) {
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

func downsampleAggrBatch(chks []*AggrChunk, buf *[]sample, res int64) (chunks.Meta, error) {
	ab := &aggrChunkBuilder{}
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	var it chunkenc.Iterator

	// do aggregates count, sum, min and max: the value f picks from each
	// window's aggregator.
	do := func(at AggrType, f func(a *aggregator) float64) error {
		*buf = (*buf)[:0]
		for _, chk := range chks {
			c, err := chk.Get(at)
			if errors.Is(err, ErrAggrNotExist) {
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
	if err := do(AggrCount, func(a *aggregator) float64 { return a.sum }); err != nil {
		return chunks.Meta{}, err
	}
	if err := do(AggrSum, func(a *aggregator) float64 { return a.sum }); err != nil {
		return chunks.Meta{}, err
	}
	if err := do(AggrMin, func(a *aggregator) float64 { return a.min }); err != nil {
		return chunks.Meta{}, err
	}
	if err := do(AggrMax, func(a *aggregator) float64 { return a.max }); err != nil {
		return chunks.Meta{}, err
	}

	// The counter: remove the resets across all chunks, then aggregate.
	var its []chunkenc.Iterator
	for _, chk := range chks {
		c, err := chk.Get(AggrCounter)
		if errors.Is(err, ErrAggrNotExist) {
			continue
		}
		if err != nil {
			return chunks.Meta{}, err
		}
		its = append(its, c.Iterator(nil))
	}
	*buf = (*buf)[:0]
	cit := NewApplyCounterResetsIterator(its...)
	if err := expandFloats(cit, buf); err != nil {
		return chunks.Meta{}, err
	}
	if len(*buf) > 0 {
		ab.chunks[AggrCounter] = chunkenc.NewXORChunk()
		ab.apps[AggrCounter], _ = ab.chunks[AggrCounter].Appender()
		ab.apps[AggrCounter].Append(0, (*buf)[0].t, (*buf)[0].v)
		lastT := downsampleBatch(*buf, res, func(t int64, a *aggregator) {
			mint, maxt = min(mint, t), max(maxt, t)
			ab.apps[AggrCounter].Append(0, t, a.counter)
		})
		ab.apps[AggrCounter].Append(0, lastT, cit.lastV)
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

// ApplyCounterResetsIterator iterates over the counter aggregates of
// consecutive AggrChunks (or raw counter chunks) and yields a counter that
// never decreases: what PromQL's rate and increase need. It is Thanos's
// downsample.ApplyCounterResetsSeriesIterator.
//
// Every counter sub-chunk starts with the first raw value of its data and
// ends with a sample that repeats the previous timestamp with the last raw
// value; comparing that value with the next chunk's first one finds a
// reset between chunks. The repeated sample itself is not yielded.
// Overlapping chunks are cut so that time never goes back. Resets are
// hidden from PromQL, so its resets() does not work on the result.
type ApplyCounterResetsIterator struct {
	chks    []chunkenc.Iterator
	i       int
	total   int
	started bool // A value was yielded.
	lastT   int64
	lastV   float64 // Last raw value seen.
	totalV  float64 // Counter with resets removed.
	lastTyp chunkenc.ValueType
}

// NewApplyCounterResetsIterator returns an iterator over chks in order.
func NewApplyCounterResetsIterator(chks ...chunkenc.Iterator) *ApplyCounterResetsIterator {
	return &ApplyCounterResetsIterator{chks: chks}
}

// Next implements chunkenc.Iterator.
func (it *ApplyCounterResetsIterator) Next() chunkenc.ValueType {
	for {
		if it.i >= len(it.chks) {
			return chunkenc.ValNone
		}
		it.lastTyp = it.chks[it.i].Next()
		if it.lastTyp == chunkenc.ValNone {
			it.i++
			// Iterators are ordered but may overlap: go on past lastT.
			return it.Seek(it.lastT + 1)
		}
		if it.lastTyp != chunkenc.ValFloat {
			// Resets of histograms are not handled.
			it.lastT = it.chks[it.i].AtT()
			it.started = true
			return it.lastTyp
		}
		t, v := it.chks[it.i].At()
		if math.IsNaN(v) {
			continue
		}
		it.started = true
		if it.total == 0 {
			it.total++
			it.lastT, it.lastV = t, v
			it.totalV = v
			return chunkenc.ValFloat
		}
		if t > it.lastT {
			if v >= it.lastV {
				it.totalV += v - it.lastV
			} else {
				it.totalV += v
			}
			it.lastT, it.lastV = t, v
			it.total++
			return chunkenc.ValFloat
		}
		// The repeated timestamp carries the true last raw value, against
		// which the next chunk's first value is compared.
		if t == it.lastT {
			it.lastV = v
		}
	}
}

// Seek implements chunkenc.Iterator. It calls Next rather than the
// chunks' Seek, not to miss resets.
func (it *ApplyCounterResetsIterator) Seek(t millis) chunkenc.ValueType {
	for {
		if it.started && it.lastT >= t {
			return it.lastTyp
		}
		if it.Next() == chunkenc.ValNone {
			return chunkenc.ValNone
		}
	}
}

// At implements chunkenc.Iterator.
func (it *ApplyCounterResetsIterator) At() (int64, float64) { return it.lastT, it.totalV }

// AtHistogram implements chunkenc.Iterator.
func (it *ApplyCounterResetsIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.chks[it.i].AtHistogram(h)
}

// AtFloatHistogram implements chunkenc.Iterator.
func (it *ApplyCounterResetsIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.chks[it.i].AtFloatHistogram(fh)
}

// AtT implements chunkenc.Iterator.
func (it *ApplyCounterResetsIterator) AtT() int64 { return it.lastT }

// AtST implements chunkenc.Iterator; there are no start timestamps.
func (it *ApplyCounterResetsIterator) AtST() int64 { return 0 }

// Err implements chunkenc.Iterator.
func (it *ApplyCounterResetsIterator) Err() error {
	if it.i >= len(it.chks) {
		return nil
	}
	return it.chks[it.i].Err()
}

// AverageChunkIterator yields sum/count of aligned sum and count
// aggregates (Thanos's downsample.AverageChunkIterator), for
// avg_over_time over downsampled data. Seek is not supported.
type AverageChunkIterator struct {
	cntIt, sumIt chunkenc.Iterator
	t            int64
	v            float64
	err          error
}

// NewAverageChunkIterator returns the average of the aggregates cnt and
// sum.
func NewAverageChunkIterator(cnt, sum chunkenc.Iterator) *AverageChunkIterator {
	return &AverageChunkIterator{cntIt: cnt, sumIt: sum}
}

// Next implements chunkenc.Iterator.
func (it *AverageChunkIterator) Next() chunkenc.ValueType {
	ct, st := it.cntIt.Next(), it.sumIt.Next()
	if (ct == chunkenc.ValNone) != (st == chunkenc.ValNone) {
		it.err = errors.New("sum and count iterator not aligned")
		return chunkenc.ValNone
	}
	if ct == chunkenc.ValNone {
		return chunkenc.ValNone
	}
	if ct != chunkenc.ValFloat || st != chunkenc.ValFloat {
		it.err = errors.New("average of histogram aggregates is not supported")
		return chunkenc.ValNone
	}
	cntT, cntV := it.cntIt.At()
	sumT, sumV := it.sumIt.At()
	if cntT != sumT {
		it.err = errors.New("sum and count timestamps not aligned")
		return chunkenc.ValNone
	}
	it.t, it.v = cntT, sumV/cntV
	return chunkenc.ValFloat
}

// Seek implements chunkenc.Iterator; it fails.
func (it *AverageChunkIterator) Seek(millis) chunkenc.ValueType {
	it.err = errors.New("seek used, but not implemented")
	return chunkenc.ValNone
}

// At implements chunkenc.Iterator.
func (it *AverageChunkIterator) At() (int64, float64) { return it.t, it.v }

// AtHistogram implements chunkenc.Iterator; there are no histograms.
func (it *AverageChunkIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	return it.t, nil
}

// AtFloatHistogram implements chunkenc.Iterator; there are no histograms.
func (it *AverageChunkIterator) AtFloatHistogram(*histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.t, nil
}

// AtT implements chunkenc.Iterator.
func (it *AverageChunkIterator) AtT() int64 { return it.t }

// AtST implements chunkenc.Iterator.
func (it *AverageChunkIterator) AtST() int64 { return 0 }

// Err implements chunkenc.Iterator.
func (it *AverageChunkIterator) Err() error {
	return errors.Join(it.cntIt.Err(), it.sumIt.Err(), it.err)
}
