package bucketstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/tombstones"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

// Downsampled blocks, as Thanos's compactor writes them, hold one
// aggregate chunk (downsample.AggrChunk) per series and time window; the
// blocks are opened with downsample.NewPool, and the queriers below turn
// the aggregates into samples.

// readMode is how samples are made from the aggregates of a downsampled
// block for a query.
type readMode uint8

const (
	readAvg     readMode = iota // sum / count of each window
	readCount                   // count
	readSum                     // sum
	readMin                     // min
	readMax                     // max
	readCounter                 // counter, with resets removed
)

// readModeFor picks the aggregates for the function that encloses a
// selector (storage.SelectHints.Func), as Thanos's querier does
// (pkg/query/querier.go aggrsFromFunc): min and max from their aggregates,
// count_* from count, sum_* from sum, rate and its kin from the counter,
// and the average of each window otherwise (sum(x) too: the sum over
// series of per-window averages approximates the sum of raw samples).
func readModeFor(fn string) readMode {
	switch {
	case fn == "min" || strings.HasPrefix(fn, "min_"):
		return readMin
	case fn == "max" || strings.HasPrefix(fn, "max_"):
		return readMax
	case fn == "count" || strings.HasPrefix(fn, "count_"):
		return readCount
	case strings.HasPrefix(fn, "sum_"):
		return readSum
	case fn == "increase" || fn == "rate" || fn == "irate" || fn == "resets":
		return readCounter
	}
	return readAvg
}

// aggrQuerier reads a downsampled block: it selects chunk series from the
// block and turns their aggregate chunks into samples by the read mode of
// each Select. The hints of Select must not be nil; they bound the
// samples.
type aggrQuerier struct {
	storage.ChunkQuerier
}

func (q aggrQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	h := *hints
	// Trimming would iterate the aggregate chunks themselves; the
	// iterators below bound the samples instead.
	h.DisableTrimming = true
	return &aggrSeriesSet{
		set:  q.ChunkQuerier.Select(ctx, sortSeries, &h, ms...),
		mode: readModeFor(hints.Func),
		mint: hints.Start,
		maxt: hints.End,
	}
}

// aggrSeriesSet turns the chunk series of a downsampled block into series.
type aggrSeriesSet struct {
	set        storage.ChunkSeriesSet
	mode       readMode
	mint, maxt int64
}

func (s *aggrSeriesSet) Next() bool                        { return s.set.Next() }
func (s *aggrSeriesSet) Err() error                        { return s.set.Err() }
func (s *aggrSeriesSet) Warnings() annotations.Annotations { return s.set.Warnings() }

func (s *aggrSeriesSet) At() storage.Series {
	cs := s.set.At()
	mode, mint, maxt := s.mode, s.mint, s.maxt
	return &storage.SeriesEntry{
		Lset: cs.Labels(),
		SampleIteratorFn: func(chunkenc.Iterator) chunkenc.Iterator {
			return newAggrSeriesIterator(cs, mode, mint, maxt)
		},
	}
}

// newAggrSeriesIterator returns the samples of the chunks of cs in
// [mint, maxt] by mode. Chunks that are not aggregate chunks (Thanos
// leaves some raw) give their own samples, in every mode. Averages are
// computed a chunk at a time and counters for the whole series, and kept
// encoded as chunks; the other modes read the aggregate chunks in place.
func newAggrSeriesIterator(cs storage.ChunkSeries, mode readMode, mint, maxt int64) chunkenc.Iterator {
	var its []chunkenc.Iterator
	ci := cs.Iterator(nil)
	for ci.Next() {
		it, err := chunkIterator(ci.At().Chunk, mode)
		if err != nil {
			return errIterator{chunkenc.NewNopIterator(), err}
		}
		if it != nil {
			its = append(its, it)
		}
	}
	if err := ci.Err(); err != nil {
		return errIterator{chunkenc.NewNopIterator(), err}
	}
	var it chunkenc.Iterator
	if mode == readCounter {
		c, err := counterChunk(its)
		if err != nil {
			return errIterator{chunkenc.NewNopIterator(), err}
		}
		it = c.Iterator(nil)
	} else {
		it = storage.ChainSampleIteratorFromIterators(nil, its)
	}
	return bound(it, mint, maxt)
}

// bound returns the samples of it in [mint, maxt].
func bound(it chunkenc.Iterator, mint, maxt int64) chunkenc.Iterator {
	var out tombstones.Intervals
	if mint > math.MinInt64 {
		out = append(out, tombstones.Interval{Mint: math.MinInt64, Maxt: mint - 1})
	}
	if maxt < math.MaxInt64 {
		out = append(out, tombstones.Interval{Mint: maxt + 1, Maxt: math.MaxInt64})
	}
	return &promtsdb.DeletedIterator{Iter: it, Intervals: out}
}

// chunkIterator returns the samples of one chunk by mode, or nil when the
// chunk lacks the aggregate. In counter mode it returns the counter
// aggregate as stored, for counterChunk.
func chunkIterator(c chunkenc.Chunk, mode readMode) (chunkenc.Iterator, error) {
	ac, ok := c.(*downsample.AggrChunk)
	if !ok {
		return c.Iterator(nil), nil
	}
	one := func(a downsample.AggrType) (chunkenc.Iterator, error) {
		sub, err := ac.Get(a)
		if errors.Is(err, downsample.ErrAggrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return sub.Iterator(nil), nil
	}
	switch mode {
	case readCount:
		return one(downsample.AggrCount)
	case readSum:
		return one(downsample.AggrSum)
	case readMin:
		return one(downsample.AggrMin)
	case readMax:
		return one(downsample.AggrMax)
	case readCounter:
		return one(downsample.AggrCounter)
	}
	cnt, err := one(downsample.AggrCount)
	if err != nil || cnt == nil {
		return nil, err
	}
	sum, err := one(downsample.AggrSum)
	if err != nil || sum == nil {
		return nil, err
	}
	avg, err := avgChunk(cnt, sum)
	if err != nil {
		return nil, err
	}
	return avg.Iterator(nil), nil
}

// errIterator has no samples and fails with err.
type errIterator struct {
	chunkenc.Iterator // A nop iterator.
	err               error
}

func (e errIterator) Err() error { return e.err }

// avgChunk returns a chunk of the sum of each window divided by its
// count.
func avgChunk(cnt, sum chunkenc.Iterator) (chunkenc.Chunk, error) {
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		return nil, err
	}
	for {
		ct, st := cnt.Next(), sum.Next()
		if ct == chunkenc.ValNone && st == chunkenc.ValNone {
			break
		}
		if ct != chunkenc.ValFloat || st != chunkenc.ValFloat {
			return nil, fmt.Errorf("average of aggregates: count is %s, sum is %s; want floats", ct, st)
		}
		tc, n := cnt.At()
		ts, v := sum.At()
		if tc != ts {
			return nil, fmt.Errorf("average of aggregates: count at %d but sum at %d", tc, ts)
		}
		app.Append(0, tc, v/n)
	}
	if err := cnt.Err(); err != nil {
		return nil, err
	}
	return c, sum.Err()
}

// counterChunk turns the counter aggregates of consecutive chunks (or
// raw counter samples) into one monotonic counter with
// downsample.ApplyCounterResetsIterator: a value lower than the one before
// is a reset, and the total goes on from it. NaNs (stale markers) are
// dropped. Counter resets are thereby hidden, so resets() over downsampled
// data is 0, as in Thanos. Only float samples are supported.
func counterChunk(its []chunkenc.Iterator) (chunkenc.Chunk, error) {
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		return nil, err
	}
	it := downsample.NewApplyCounterResetsIterator(its...)
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		if vt != chunkenc.ValFloat {
			return nil, fmt.Errorf("counter aggregate holds %s samples; only floats are supported", vt)
		}
		t, v := it.At()
		app.Append(0, t, v)
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	return c, nil
}
