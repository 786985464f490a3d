package compact

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/prometheus/prometheus/model/labels"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

// openBlock opens the block in dir with a pool that reads aggregate
// chunks too. Failing to open it is a *blockError.
func openBlock(logger *slog.Logger, dir string, m *block.Meta) (*promtsdb.Block, error) {
	b, err := promtsdb.OpenBlock(logger, dir, downsample.NewPool(), nil)
	if err != nil {
		return nil, &blockError{id: m.ULID, reason: NoCompactCorrupt, err: fmt.Errorf("open: %w", err)}
	}
	return b, nil
}

// verifyBlock checks the block in dir, whose meta.json is m, before it is
// compacted or downsampled, and a block the compactor made before it is
// uploaded: the index and chunks open, series are in order and unique,
// every chunk lies within the block's time range, the chunks of a series
// are ordered and do not overlap, and every chunk passes its checksum and
// decodes to samples within its time range. What it finds is a
// *blockError. The checks are those of Thanos's index health statistics
// plus reading every chunk.
func verifyBlock(ctx context.Context, logger *slog.Logger, dir string, m *block.Meta) error {
	b, err := openBlock(logger, dir, m)
	if err != nil {
		return err
	}
	defer b.Close()
	corrupt := func(err error) error {
		return &blockError{id: m.ULID, reason: NoCompactCorrupt, err: err}
	}
	bm := b.Meta()
	if bm.ULID != m.ULID || bm.MinTime != m.MinTime || bm.MaxTime != m.MaxTime {
		return corrupt(fmt.Errorf("local meta.json (%s, %d-%d) differs from the bucket's", bm.ULID, bm.MinTime, bm.MaxTime))
	}
	ir, err := b.Index()
	if err != nil {
		return corrupt(fmt.Errorf("open index: %w", err))
	}
	defer ir.Close()
	cr, err := b.Chunks()
	if err != nil {
		return corrupt(fmt.Errorf("open chunks: %w", err))
	}
	defer cr.Close()

	k, v := index.AllPostingsKey()
	p, err := ir.Postings(ctx, k, v)
	if err != nil {
		return corrupt(fmt.Errorf("read postings: %w", err))
	}
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		prev    labels.Labels
		it      chunkenc.Iterator
		n       uint64
	)
	for p.Next() {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n++
		if err := ir.Series(p.At(), &builder, &chks); err != nil {
			return corrupt(fmt.Errorf("read series %d: %w", p.At(), err))
		}
		lset := builder.Labels()
		if lset.IsEmpty() {
			return corrupt(fmt.Errorf("series %d has no labels", p.At()))
		}
		if n > 1 && labels.Compare(prev, lset) >= 0 {
			return corrupt(fmt.Errorf("series %s after %s: out of order or duplicated", lset, prev))
		}
		prev = lset.Copy()
		for i, c := range chks {
			if c.MinTime > c.MaxTime {
				return corrupt(fmt.Errorf("series %s: chunk %d ends (%d) before it starts (%d)", lset, i, c.MaxTime, c.MinTime))
			}
			if c.MinTime < m.MinTime || c.MaxTime > m.MaxTime {
				return corrupt(fmt.Errorf("series %s: chunk %d-%d outside the block's range %d-%d", lset, c.MinTime, c.MaxTime, m.MinTime, m.MaxTime))
			}
			if i > 0 && c.MinTime <= chks[i-1].MaxTime {
				return corrupt(fmt.Errorf("series %s: out-of-order or overlapping chunks %d-%d and %d-%d", lset, chks[i-1].MinTime, chks[i-1].MaxTime, c.MinTime, c.MaxTime))
			}
			chk, iterable, err := cr.ChunkOrIterable(c)
			if err != nil {
				return corrupt(fmt.Errorf("series %s: read chunk: %w", lset, err))
			}
			if chk == nil {
				it = iterable.Iterator(it)
				err = checkSamples(it, c, false)
			} else if ac, ok := chk.(*downsample.AggrChunk); ok {
				err = checkAggr(*ac, c)
			} else {
				it = chk.Iterator(it)
				err = checkSamples(it, c, false)
			}
			if err != nil {
				return corrupt(fmt.Errorf("series %s: chunk %d-%d: %w", lset, c.MinTime, c.MaxTime, err))
			}
		}
	}
	if err := p.Err(); err != nil {
		return corrupt(fmt.Errorf("iterate postings: %w", err))
	}
	return nil
}

// checkSamples checks that the samples of it are in order and within the
// chunk's range. The counter aggregate starts with the first raw sample,
// before the first window's timestamp that starts the chunk's range, so
// with early the start is not checked.
func checkSamples(it chunkenc.Iterator, c chunks.Meta, early bool) error {
	last := c.MinTime
	if early {
		last = math.MinInt64
	}
	for typ := it.Next(); typ != chunkenc.ValNone; typ = it.Next() {
		t := it.AtT()
		if t < last || t > c.MaxTime {
			return fmt.Errorf("sample at %d out of order or outside the chunk", t)
		}
		last = t
	}
	return it.Err()
}

func checkAggr(ac downsample.AggrChunk, c chunks.Meta) error {
	found := false
	for at := downsample.AggrCount; at <= downsample.AggrCounter; at++ {
		sub, err := ac.Get(at)
		if errors.Is(err, downsample.ErrAggrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s aggregate: %w", at, err)
		}
		found = true
		if err := checkSamples(sub.Iterator(nil), c, at == downsample.AggrCounter); err != nil {
			return fmt.Errorf("%s aggregate: %w", at, err)
		}
	}
	if !found {
		return errors.New("aggregate chunk without aggregates")
	}
	return nil
}
