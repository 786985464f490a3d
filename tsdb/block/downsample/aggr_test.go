package downsample

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

type sample struct {
	t int64
	v float64
}

func xorChunk(t *testing.T, ss []sample) chunkenc.Chunk {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		app.Append(0, s.t, s.v)
	}
	return c
}

// aggrSamples decodes every aggregate of c.
func aggrSamples(t *testing.T, c AggrChunk) map[AggrType][]sample {
	t.Helper()
	out := map[AggrType][]sample{}
	for at := AggrCount; at <= AggrCounter; at++ {
		sub, err := c.Get(at)
		if errors.Is(err, ErrAggrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		it := sub.Iterator(nil)
		for it.Next() != chunkenc.ValNone {
			ts, v := it.At()
			out[at] = append(out[at], sample{ts, v})
		}
	}
	return out
}

func TestAggrChunkLayout(t *testing.T) {
	count := xorChunk(t, []sample{{99, 4}, {199, 3}})
	counter := xorChunk(t, []sample{{20, 1}, {99, 4}, {199, 13}, {199, 1}})
	ac := EncodeAggrChunk([5]chunkenc.Chunk{count, nil, nil, nil, counter})

	// Thanos's layout: per aggregate a uvarint length, then the encoding
	// byte and the data; length 0 for an absent aggregate.
	var want []byte
	want = binary.AppendUvarint(want, uint64(len(count.Bytes())))
	want = append(want, byte(chunkenc.EncXOR))
	want = append(want, count.Bytes()...)
	want = append(want, 0, 0, 0)
	want = binary.AppendUvarint(want, uint64(len(counter.Bytes())))
	want = append(want, byte(chunkenc.EncXOR))
	want = append(want, counter.Bytes()...)
	if !slices.Equal(ac.Bytes(), want) {
		t.Fatalf("encoded %x, want %x", ac.Bytes(), want)
	}
	if ac.Encoding() != 0xff || ac.NumSamples() != 2 {
		t.Errorf("encoding %d, samples %d", ac.Encoding(), ac.NumSamples())
	}
	for _, at := range []AggrType{AggrSum, AggrMin, AggrMax} {
		if _, err := ac.Get(at); !errors.Is(err, ErrAggrNotExist) {
			t.Errorf("Get(%s): %v", at, err)
		}
	}
	got := aggrSamples(t, *ac)
	if !slices.Equal(got[AggrCounter], []sample{{20, 1}, {99, 4}, {199, 13}, {199, 1}}) {
		t.Errorf("counter %v", got[AggrCounter])
	}
	if _, err := AggrChunk([]byte{5, 1}).Get(AggrCount); err == nil {
		t.Error("truncated chunk decoded")
	}

	// The pool hands out AggrChunks for 0xff and Prometheus's chunks
	// otherwise.
	p := NewPool()
	c, err := p.Get(ChunkEncAggr, ac.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*AggrChunk); !ok || c.NumSamples() != 2 {
		t.Errorf("pool returned %T", c)
	}
	if err := p.Put(c); err != nil {
		t.Fatal(err)
	}
	x, err := p.Get(chunkenc.EncXOR, count.Bytes())
	if err != nil || x.NumSamples() != 2 {
		t.Fatalf("pool XOR chunk: %v", err)
	}
}

func TestAggrChunkGet(t *testing.T) {
	x := chunkenc.NewXORChunk()
	app, _ := x.Appender()
	app.Append(0, 1, 2)
	c := EncodeAggrChunk([5]chunkenc.Chunk{nil, x, nil, nil, nil})
	if _, err := c.Get(AggrCount); !errors.Is(err, ErrAggrNotExist) {
		t.Errorf("absent count: %v", err)
	}
	sub, err := c.Get(AggrSum)
	if err != nil || sub.NumSamples() != 1 {
		t.Errorf("sum: %v", err)
	}
	if _, err := c.Get(AggrCounter); !errors.Is(err, ErrAggrNotExist) {
		t.Errorf("absent counter: %v", err)
	}
	truncated := (*c)[:len(*c)-5]
	if _, err := truncated.Get(AggrSum); err == nil {
		t.Error("truncated chunk decoded")
	}
	if c.Iterator(nil).Next() != chunkenc.ValNone || c.Iterator(nil).Err() == nil {
		t.Error("iterating an aggregate chunk without an aggregate did not fail")
	}
}

func FuzzAggrChunk(f *testing.F) {
	x := chunkenc.NewXORChunk()
	app, _ := x.Appender()
	for i := range 10 {
		app.Append(0, int64(i)*1000, float64(i))
	}
	f.Add([]byte(*EncodeAggrChunk([5]chunkenc.Chunk{x, x, nil, x, x})))
	f.Add([]byte{0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := AggrChunk(b)
		_ = c.NumSamples()
		for a := range AggrType(numAggrs) {
			sub, err := c.Get(a)
			if err != nil || sub.Encoding() != chunkenc.EncXOR {
				continue
			}
			it := sub.Iterator(nil)
			for n := 0; n < 1000 && it.Next() != chunkenc.ValNone; n++ {
			}
		}
	})
}
