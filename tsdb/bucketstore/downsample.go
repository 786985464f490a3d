package bucketstore

import (
	"context"
	"encoding/binary"
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
)

// Downsampled blocks, as Thanos's compactor writes them
// (github.com/thanos-io/thanos pkg/compact/downsample), hold one chunk per
// series and time window whose encoding byte is encAggr and whose data is
// five sub-chunks, one per aggregate in the order count, sum, min, max,
// counter. Each sub-chunk is a uvarint length n followed, when n > 0, by
// one encoding byte and n bytes of an ordinary chunk (XOR for floats);
// n == 0 marks an absent aggregate. Each aggregate has one sample per
// resolution window, stamped with the window's last millisecond. The
// counter aggregate also starts with the first raw value of the chunk and
// ends with the last raw value repeated at the timestamp of the last
// window, so that a reader can tell counter resets between chunks.

// encAggr is the chunk encoding byte of a Thanos aggregate chunk.
const encAggr = chunkenc.Encoding(0xff)

// aggr is an aggregate of a downsampled chunk, numbered as in the chunk.
type aggr uint8

const (
	aggrCount aggr = iota
	aggrSum
	aggrMin
	aggrMax
	aggrCounter
	numAggrs
)

func (a aggr) String() string {
	switch a {
	case aggrCount:
		return "count"
	case aggrSum:
		return "sum"
	case aggrMin:
		return "min"
	case aggrMax:
		return "max"
	case aggrCounter:
		return "counter"
	}
	return fmt.Sprintf("aggregate(%d)", uint8(a))
}

// errAggrAbsent says that a chunk lacks the aggregate asked for.
var errAggrAbsent = errors.New("aggregate not in chunk")

// aggrChunk is a Thanos aggregate chunk. It is read-only: the bytes belong
// to the block's memory-mapped chunk files.
type aggrChunk []byte

// get returns the sub-chunk of aggregate a, or errAggrAbsent.
func (c aggrChunk) get(a aggr) (chunkenc.Chunk, error) {
	if a >= numAggrs {
		return nil, fmt.Errorf("unknown aggregate %d", a)
	}
	b := []byte(c)
	for i := aggr(0); ; i++ {
		l, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("aggregate chunk: bad length of %s", i)
		}
		b = b[n:]
		if l == 0 {
			if i == a {
				return nil, errAggrAbsent
			}
			continue
		}
		if l >= uint64(len(b)) { // One encoding byte and l data bytes.
			return nil, fmt.Errorf("aggregate chunk: %s needs %d bytes, %d left", i, l+1, len(b))
		}
		if l < 2 { // Every chunk starts with its number of samples.
			return nil, fmt.Errorf("aggregate chunk: %s has only %d bytes", i, l)
		}
		if i == a {
			return chunkenc.FromData(chunkenc.Encoding(b[0]), b[1:l+1])
		}
		b = b[l+1:]
	}
}

func (c aggrChunk) Bytes() []byte             { return c }
func (aggrChunk) Encoding() chunkenc.Encoding { return encAggr }
func (aggrChunk) Compact()                    {}
func (c *aggrChunk) Reset(stream []byte)      { *c = stream }
func (aggrChunk) Appender() (chunkenc.Appender, error) {
	return nil, errors.New("aggregate chunks are read-only")
}

// NumSamples is the number of windows, as Thanos counts them.
func (c aggrChunk) NumSamples() int {
	x, err := c.get(aggrCount)
	if err != nil {
		return 0
	}
	return x.NumSamples()
}

// Iterator fails: an aggregate chunk has no samples of its own, a reader
// must pick an aggregate (aggrSeriesIterator).
func (aggrChunk) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	return errIterator{chunkenc.NewNopIterator(), errors.New("aggregate chunk iterated without choosing an aggregate")}
}

// chunkPool is the chunk pool of the blocks the Store opens: Prometheus's,
// which knows the raw encodings, and aggrChunk for encAggr.
type chunkPool struct {
	chunkenc.Pool
}

func newChunkPool() chunkPool { return chunkPool{chunkenc.NewPool()} }

func (p chunkPool) Get(e chunkenc.Encoding, b []byte) (chunkenc.Chunk, error) {
	if e == encAggr {
		c := aggrChunk(b)
		return &c, nil
	}
	return p.Pool.Get(e, b)
}

func (p chunkPool) Put(c chunkenc.Chunk) error {
	if c.Encoding() == encAggr {
		return nil
	}
	return p.Pool.Put(c)
}

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
	ac, ok := c.(*aggrChunk)
	if !ok {
		return c.Iterator(nil), nil
	}
	one := func(a aggr) (chunkenc.Iterator, error) {
		sub, err := ac.get(a)
		if errors.Is(err, errAggrAbsent) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return sub.Iterator(nil), nil
	}
	switch mode {
	case readCount:
		return one(aggrCount)
	case readSum:
		return one(aggrSum)
	case readMin:
		return one(aggrMin)
	case readMax:
		return one(aggrMax)
	case readCounter:
		return one(aggrCounter)
	}
	cnt, err := one(aggrCount)
	if err != nil || cnt == nil {
		return nil, err
	}
	sum, err := one(aggrSum)
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
// raw counter samples) into one monotonic counter, as Thanos's
// ApplyCounterResetsSeriesIterator does: a value lower than the one
// before is a reset, and the total goes on from it. A sample at the same
// timestamp as the one before is the last raw value of a chunk; it is not
// returned but becomes the value the next chunk's first sample is
// compared with. NaNs (stale markers) are dropped. Counter resets are
// thereby hidden, so resets() over downsampled data is 0, as in Thanos.
func counterChunk(its []chunkenc.Iterator) (chunkenc.Chunk, error) {
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		return nil, err
	}
	var (
		n            int
		lastT        int64
		lastV, total float64
	)
	for _, it := range its {
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat {
				return nil, fmt.Errorf("counter aggregate holds %s samples; only floats are supported", vt)
			}
			t, v := it.At()
			if math.IsNaN(v) {
				continue
			}
			switch {
			case n == 0:
				total = v
			case t > lastT:
				if v >= lastV {
					total += v - lastV
				} else {
					total += v
				}
			case t == lastT:
				lastV = v
				continue
			default:
				continue // Back in time.
			}
			n++
			lastT, lastV = t, v
			app.Append(0, t, total)
		}
		if err := it.Err(); err != nil {
			return nil, err
		}
	}
	return c, nil
}
