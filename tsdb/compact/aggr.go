package compact

import (
	"encoding/binary"
	"errors"
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

// The aggregates of a downsampled series.
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
	return "<unknown>"
}

// ErrAggrNotExist is returned by AggrChunk.Get for an aggregate the chunk
// does not hold.
var ErrAggrNotExist = errors.New("aggregate does not exist")

// AggrChunk is a downsampled chunk in Thanos's layout: for each AggrType
// in order, a uvarint length n followed, when n > 0, by the sub-chunk's
// encoding byte and n bytes of sub-chunk data. A length of 0 marks an
// absent aggregate. The sub-chunks are XOR chunks.
//
// AggrChunk satisfies chunkenc.Chunk so that Prometheus's chunk writer and
// compactor can copy it, but it cannot be iterated as one series: its
// Iterator yields nothing. Read an aggregate with Get.
type AggrChunk []byte

// EncodeAggrChunk builds an AggrChunk from one chunk per aggregate,
// indexed by AggrType; nil entries are absent aggregates.
func EncodeAggrChunk(chks [5]chunkenc.Chunk) *AggrChunk {
	var b []byte
	var buf [binary.MaxVarintLen64]byte
	for _, c := range chks {
		if c == nil {
			n := binary.PutUvarint(buf[:], 0)
			b = append(b, buf[:n]...)
			continue
		}
		data := c.Bytes()
		n := binary.PutUvarint(buf[:], uint64(len(data)))
		b = append(b, buf[:n]...)
		b = append(b, byte(c.Encoding()))
		b = append(b, data...)
	}
	chk := AggrChunk(b)
	return &chk
}

// Get returns the sub-chunk of aggregate t, or ErrAggrNotExist.
func (c AggrChunk) Get(t AggrType) (chunkenc.Chunk, error) {
	b := []byte(c)
	var x []byte
	for i := AggrType(0); i <= t; i++ {
		l, n := binary.Uvarint(b)
		if n < 1 || (l > 0 && uint64(len(b[n:])) < l+1) {
			return nil, errors.New("aggregate chunk: invalid size")
		}
		b = b[n:]
		if l == 0 {
			if i == t {
				return nil, ErrAggrNotExist
			}
			continue
		}
		x = b[:l+1]
		b = b[l+1:]
	}
	return chunkenc.FromData(chunkenc.Encoding(x[0]), x[1:])
}

// Bytes returns the encoded chunk.
func (c AggrChunk) Bytes() []byte { return []byte(c) }

// Encoding returns ChunkEncAggr.
func (c AggrChunk) Encoding() chunkenc.Encoding { return ChunkEncAggr }

// Appender fails: aggregate chunks are built whole by EncodeAggrChunk.
func (c AggrChunk) Appender() (chunkenc.Appender, error) {
	return nil, errors.New("aggregate chunk: appending is not supported")
}

// Iterator returns an empty iterator; read the aggregates with Get.
func (c AggrChunk) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	return chunkenc.NewNopIterator()
}

// NumSamples returns the number of windows: the samples of the count
// aggregate, as Thanos counts them.
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
