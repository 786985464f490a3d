package downsample

import (
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// millis is a timestamp in milliseconds. Seek takes it so that vet does
// not mistake it for io.Seeker's.
type millis = int64

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
			if it.chks[it.i].Err() != nil {
				// Err reports it; the chunks after it are not read.
				return chunkenc.ValNone
			}
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

// LastRaw returns the last raw counter value seen: the value that closes
// the counter aggregate of a chunk downsampled from what it yielded.
func (it *ApplyCounterResetsIterator) LastRaw() float64 { return it.lastV }
