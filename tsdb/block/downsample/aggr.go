// Package downsample is the chunk format of downsampled blocks, as
// Thanos's compactor writes them (github.com/thanos-io/thanos
// pkg/compact/downsample): aggregate chunks, a chunk pool that reads them,
// and the iterator that removes counter resets from their counter
// aggregates. The bucket compactor writes these chunks, the bucket store
// reads them.
package downsample

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// ChunkEncAggr is the chunk encoding of an AggrChunk, Thanos's
// downsample.ChunkEncAggr: the highest encoding byte, far from the ones
// Prometheus allocates.
const ChunkEncAggr = chunkenc.Encoding(0xff)

// AggrType is one aggregate of an AggrChunk, numbered as Thanos numbers
// them: the position of its sub-chunk.
type AggrType uint8

// The aggregates of a downsampled series. Each has one sample per
// resolution window, stamped with the window's last millisecond (the last
// window of a chunk with the time of its last raw sample).
const (
	// AggrCount is the number of raw samples of each window.
	AggrCount AggrType = iota
	// AggrSum is the sum of the raw values of each window.
	AggrSum
	// AggrMin is the smallest raw value of each window.
	AggrMin
	// AggrMax is the largest raw value of each window.
	AggrMax
	// AggrCounter is the counter with resets removed, at the end of each
	// window; its first sample is the first raw value of the chunk and its
	// last sample repeats the last timestamp with the last raw value, so
	// that resets between chunks can be found (see
	// NewApplyCounterResetsIterator).
	AggrCounter
)

// numAggrs is the number of aggregates of an AggrChunk.
const numAggrs = int(AggrCounter) + 1

func (t AggrType) String() string {
	switch t {
	case AggrCount:
		return "count"
	case AggrSum:
		return "sum"
	case AggrMin:
		return "min"
	case AggrMax:
		return "max"
	case AggrCounter:
		return "counter"
	}
	return fmt.Sprintf("aggregate(%d)", uint8(t))
}

// ErrAggrNotExist is returned by AggrChunk.Get for an aggregate the chunk
// does not hold.
var ErrAggrNotExist = errors.New("aggregate does not exist")

// AggrChunk is a downsampled chunk in Thanos's layout: for each AggrType
// in order, a uvarint length n followed, when n > 0, by the sub-chunk's
// encoding byte and n bytes of sub-chunk data. A length of 0 marks an
// absent aggregate. The sub-chunks are XOR chunks (Thanos writes histogram
// chunks for native histograms).
//
// AggrChunk satisfies chunkenc.Chunk so that Prometheus's chunk writer and
// compactor can copy it, but it cannot be iterated as one series: its
// Iterator fails. Read an aggregate with Get. Chunks that a pool hands
// out are read-only: their bytes belong to the block's memory-mapped
// chunk files.
type AggrChunk []byte

// EncodeAggrChunk builds an AggrChunk from one chunk per aggregate,
// indexed by AggrType; nil entries are absent aggregates.
func EncodeAggrChunk(chks [5]chunkenc.Chunk) *AggrChunk {
	var b []byte
	for _, c := range chks {
		if c == nil {
			b = binary.AppendUvarint(b, 0)
			continue
		}
		data := c.Bytes()
		b = binary.AppendUvarint(b, uint64(len(data)))
		b = append(b, byte(c.Encoding()))
		b = append(b, data...)
	}
	chk := AggrChunk(b)
	return &chk
}

// Get returns the sub-chunk of aggregate t, or ErrAggrNotExist. It checks
// the lengths of the sub-chunks up to t, so that a corrupt chunk fails
// rather than panics.
func (c AggrChunk) Get(t AggrType) (chunkenc.Chunk, error) {
	if int(t) >= numAggrs {
		return nil, fmt.Errorf("unknown aggregate %d", t)
	}
	b := []byte(c)
	for i := AggrType(0); ; i++ {
		l, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("aggregate chunk: bad length of %s", i)
		}
		b = b[n:]
		if l == 0 {
			if i == t {
				return nil, ErrAggrNotExist
			}
			continue
		}
		if l >= uint64(len(b)) { // One encoding byte and l data bytes.
			return nil, fmt.Errorf("aggregate chunk: %s needs %d bytes, %d left", i, l+1, len(b))
		}
		if l < 2 { // Every chunk starts with its number of samples.
			return nil, fmt.Errorf("aggregate chunk: %s has only %d bytes", i, l)
		}
		if i == t {
			return chunkenc.FromData(chunkenc.Encoding(b[0]), b[1:l+1])
		}
		b = b[l+1:]
	}
}

// Bytes returns the encoded chunk.
func (c AggrChunk) Bytes() []byte { return []byte(c) }

// Encoding returns ChunkEncAggr.
func (c AggrChunk) Encoding() chunkenc.Encoding { return ChunkEncAggr }

// Appender fails: aggregate chunks are built whole by EncodeAggrChunk.
func (c AggrChunk) Appender() (chunkenc.Appender, error) {
	return nil, errors.New("aggregate chunk: appending is not supported")
}

// Iterator returns an iterator without samples that fails: an aggregate
// chunk has no samples of its own, a reader must pick an aggregate with
// Get.
func (c AggrChunk) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	return errIterator{chunkenc.NewNopIterator(), errors.New("aggregate chunk iterated without choosing an aggregate")}
}

// NumSamples returns the number of windows: the samples of the count
// aggregate, as Thanos counts them; 0 without one.
func (c AggrChunk) NumSamples() int {
	x, err := c.Get(AggrCount)
	if err != nil {
		return 0
	}
	return x.NumSamples()
}

// Compact does nothing.
func (c AggrChunk) Compact() {}

// Reset makes the chunk hold stream.
func (c *AggrChunk) Reset(stream []byte) { *c = stream }

var _ chunkenc.Chunk = (*AggrChunk)(nil)

// errIterator has no samples and fails with err.
type errIterator struct {
	chunkenc.Iterator // A nop iterator.
	err               error
}

func (e errIterator) Err() error { return e.err }

// aggrPool is a chunkenc.Pool that knows AggrChunk as well as Prometheus's
// encodings (Thanos's downsample.NewPool).
type aggrPool struct {
	wrapped chunkenc.Pool
	aggr    sync.Pool
}

// NewPool returns a chunk pool that reads AggrChunks besides Prometheus's
// encodings. Blocks of a downsampled resolution must be opened with it.
func NewPool() chunkenc.Pool {
	return &aggrPool{
		wrapped: chunkenc.NewPool(),
		aggr:    sync.Pool{New: func() any { return new(AggrChunk) }},
	}
}

func (p *aggrPool) Get(e chunkenc.Encoding, b []byte) (chunkenc.Chunk, error) {
	if e == ChunkEncAggr {
		c := p.aggr.Get().(*AggrChunk)
		*c = AggrChunk(b)
		return c, nil
	}
	return p.wrapped.Get(e, b)
}

func (p *aggrPool) Put(c chunkenc.Chunk) error {
	if c.Encoding() != ChunkEncAggr {
		return p.wrapped.Put(c)
	}
	// Wrapped chunks cannot be pooled; that is no error.
	if ac, ok := c.(*AggrChunk); ok {
		*ac = nil
		p.aggr.Put(ac)
	}
	return nil
}
