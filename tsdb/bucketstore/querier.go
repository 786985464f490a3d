package bucketstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/meshlens/meshlens/tsdb/block"
)

// part is a block and the closed time range of it that a query reads.
type part struct {
	meta       *block.Meta
	mint, maxt int64
}

// interval is a closed time range in milliseconds.
type interval struct{ lo, hi int64 }

// selectParts picks the blocks of metas that cover [mint, maxt] as
// Thanos's store gateway does (pkg/store/bucket.go bucketBlockSet.getFor):
// the blocks of the coarsest resolution not above maxRes, and where they
// leave gaps, blocks of the next finer resolutions in turn. Where even
// raw blocks leave gaps (raw data deleted by retention, say) coarser
// resolutions fill them, finest first; Thanos returns nothing there. All
// blocks of one resolution that overlap a gap are taken, so overlapping
// blocks of the same data are merged. Each part is cut to the gap it
// fills, so that data of different resolutions never overlap.
func selectParts(metas []*block.Meta, mint, maxt, maxRes int64) []part {
	if mint > maxt || len(metas) == 0 {
		return nil
	}
	var resolutions []int64
	for _, m := range metas {
		if r := m.Thanos.Downsample.Resolution; !slices.Contains(resolutions, r) {
			resolutions = append(resolutions, r)
		}
	}
	slices.Sort(resolutions)
	// Order of preference: the coarsest resolution <= maxRes, then finer
	// ones, coarsest first, then coarser ones, finest first.
	first := 0
	for i, r := range resolutions {
		if r <= maxRes {
			first = i
		}
	}
	order := make([]int64, 0, len(resolutions))
	for i := first; i >= 0; i-- {
		order = append(order, resolutions[i])
	}
	order = append(order, resolutions[first+1:]...)

	gaps := []interval{{mint, maxt}}
	var parts []part
	for _, res := range order {
		if len(gaps) == 0 {
			break
		}
		var covered []interval
		for _, m := range metas {
			if m.Thanos.Downsample.Resolution != res || m.MaxTime <= m.MinTime {
				continue
			}
			bmin, bmax := m.MinTime, m.MaxTime-1 // Blocks are [MinTime, MaxTime).
			used := false
			for _, g := range gaps {
				lo, hi := max(g.lo, bmin), min(g.hi, bmax)
				if lo <= hi {
					parts = append(parts, part{meta: m, mint: lo, maxt: hi})
					used = true
				}
			}
			if used {
				covered = append(covered, interval{bmin, bmax})
			}
		}
		gaps = subtract(gaps, covered)
	}
	return parts
}

// subtract returns the parts of the sorted, disjoint intervals gaps that
// no interval of covered overlaps.
func subtract(gaps, covered []interval) []interval {
	if len(covered) == 0 {
		return gaps
	}
	slices.SortFunc(covered, func(a, b interval) int { return compareInt64(a.lo, b.lo) })
	var out []interval
	for _, g := range gaps {
		lo, done := g.lo, false
		for _, c := range covered {
			if c.hi < lo || c.lo > g.hi {
				continue
			}
			if c.lo > lo {
				out = append(out, interval{lo, c.lo - 1})
			}
			if c.hi >= g.hi {
				done = true
				break
			}
			lo = c.hi + 1
		}
		if !done {
			out = append(out, interval{lo, g.hi})
		}
	}
	return out
}

// baseQuerier is what querier and chunkQuerier share: the blocks
// overlapping their range when they were made, and the blocks they have
// acquired from the cache.
type baseQuerier struct {
	s          *Store
	mint, maxt int64
	metas      []*block.Meta

	mu      sync.Mutex
	closed  bool
	blocks  map[ulid.ULID]*promtsdb.Block
	closers []func() error
}

func (s *Store) newBaseQuerier(mint, maxt int64) (*baseQuerier, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var metas []*block.Meta
	for _, m := range sortedMetas(s.metas) {
		if s.rawOnly && m.Thanos.Downsample.Resolution != block.ResolutionRaw {
			continue
		}
		if m.MinTime <= maxt && m.MaxTime > mint {
			metas = append(metas, m)
		}
	}
	return &baseQuerier{s: s, mint: mint, maxt: maxt, metas: metas, blocks: map[ulid.ULID]*promtsdb.Block{}}, nil
}

// parts returns the parts that a Select with hints reads, and the parts
// for the label methods when hints is nil. The maximum resolution is a
// fifth of the step, so that at least five samples fall in each step, as
// in Thanos's querier with auto-downsampling — and a fifth of the range of
// a range selector too, so that rate(x[5m]) at a 1h step reads raw data
// rather than one or two 5m aggregates per window (Thanos leaves those
// windows mostly empty).
func (q *baseQuerier) parts(hints *storage.SelectHints) []part {
	lo, hi, maxRes := q.mint, q.maxt, block.ResolutionRaw
	if hints != nil {
		lo, hi = max(lo, hints.Start), min(hi, hints.End)
		window := hints.Step
		if hints.Range > 0 {
			window = min(window, hints.Range)
		}
		maxRes = max(window/5, 0)
	}
	return selectParts(q.metas, lo, hi, maxRes)
}

// acquire gets the blocks of parts from the cache, downloading those it
// lacks, and returns them by ULID. A block that has vanished from the
// bucket since the last Sync is left out with a warning.
func (q *baseQuerier) acquire(ctx context.Context, parts []part) (map[ulid.ULID]*promtsdb.Block, annotations.Annotations, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, nil, errors.New("querier closed")
	}
	var need []*block.Meta
	for _, p := range parts {
		if _, ok := q.blocks[p.meta.ULID]; !ok && !slices.Contains(need, p.meta) {
			need = append(need, p.meta)
		}
	}
	q.mu.Unlock()

	var (
		wmu   sync.Mutex
		warns annotations.Annotations
	)
	err := forEach(ctx, downloadConcurrency, need, func(m *block.Meta) error {
		b, err := q.s.acquire(ctx, m)
		if errors.Is(err, block.ErrNotFound) {
			q.s.forget(m.ULID)
			q.s.logger.Warn("block vanished from the bucket; querying without it", "block", m.ULID, "err", err)
			wmu.Lock()
			warns.Add(fmt.Errorf("block %s vanished from the bucket; its data is missing", m.ULID))
			wmu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		q.mu.Lock()
		_, dup := q.blocks[m.ULID]
		if q.closed || dup {
			closed := q.closed
			q.mu.Unlock()
			q.s.release(m.ULID)
			if closed {
				return errors.New("querier closed")
			}
			return nil
		}
		q.blocks[m.ULID] = b
		q.mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	blocks := make(map[ulid.ULID]*promtsdb.Block, len(parts))
	for _, p := range parts {
		if b, ok := q.blocks[p.meta.ULID]; ok {
			blocks[p.meta.ULID] = b
		}
	}
	return blocks, warns, nil
}

// track makes Close call closeFn.
func (q *baseQuerier) track(closeFn func() error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return errors.New("querier closed")
	}
	q.closers = append(q.closers, closeFn)
	return nil
}

// Close closes the block queriers and then lets the cache delete the
// blocks.
func (q *baseQuerier) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	closers, blocks := q.closers, q.blocks
	q.closers, q.blocks = nil, nil
	q.mu.Unlock()

	var errs []error
	for _, c := range closers {
		errs = append(errs, c())
	}
	for id := range blocks {
		q.s.release(id)
	}
	return errors.Join(errs...)
}

// open returns the merge of the queriers that mk makes for the parts that
// hints select, and the warnings of getting their blocks. The merged
// querier is closed by Close.
func open[Q interface{ Close() error }](ctx context.Context, q *baseQuerier, hints *storage.SelectHints, mk func(*promtsdb.Block, part) (Q, error), merge func([]Q) Q) (Q, annotations.Annotations, error) {
	var zero Q
	parts := q.parts(hints)
	blocks, warns, err := q.acquire(ctx, parts)
	if err != nil {
		return zero, nil, err
	}
	subs := make([]Q, 0, len(parts))
	for _, p := range parts {
		b := blocks[p.meta.ULID]
		if b == nil {
			continue // Vanished; warned.
		}
		sq, err := mk(b, p)
		if err != nil {
			for _, sq := range subs {
				_ = sq.Close()
			}
			return zero, nil, fmt.Errorf("query block %s: %w", p.meta.ULID, err)
		}
		subs = append(subs, sq)
	}
	mq := merge(subs)
	if err := q.track(mq.Close); err != nil {
		_ = mq.Close()
		return zero, nil, err
	}
	return mq, warns, nil
}

// querier is the Querier of a Store.
type querier struct {
	*baseQuerier
}

func (q *querier) open(ctx context.Context, hints *storage.SelectHints) (storage.Querier, annotations.Annotations, error) {
	return open(ctx, q.baseQuerier, hints, q.s.partQuerier, func(qs []storage.Querier) storage.Querier {
		return storage.NewMergeQuerier(qs, nil, storage.ChainedSeriesMerge)
	})
}

func (q *querier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	mq, warns, err := q.open(ctx, hints)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	ss := mq.Select(ctx, sortSeries, hints, ms...)
	if len(warns) > 0 {
		ss = &warnSeriesSet{SeriesSet: ss, warns: warns}
	}
	return ss
}

func (q *querier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	mq, warns, err := q.open(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	vals, w, err := mq.LabelValues(ctx, name, hints, ms...)
	return vals, warns.Merge(w), err
}

func (q *querier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	mq, warns, err := q.open(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	names, w, err := mq.LabelNames(ctx, hints, ms...)
	return names, warns.Merge(w), err
}

// chunkQuerier is the ChunkQuerier of a Store.
type chunkQuerier struct {
	*baseQuerier
}

func (q *chunkQuerier) open(ctx context.Context, hints *storage.SelectHints) (storage.ChunkQuerier, annotations.Annotations, error) {
	return open(ctx, q.baseQuerier, hints, q.s.partChunkQuerier, func(qs []storage.ChunkQuerier) storage.ChunkQuerier {
		return storage.NewMergeChunkQuerier(qs, nil, storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge))
	})
}

func (q *chunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	mq, warns, err := q.open(ctx, hints)
	if err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	ss := mq.Select(ctx, sortSeries, hints, ms...)
	if len(warns) > 0 {
		ss = &warnChunkSeriesSet{ChunkSeriesSet: ss, warns: warns}
	}
	return ss
}

func (q *chunkQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	mq, warns, err := q.open(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	vals, w, err := mq.LabelValues(ctx, name, hints, ms...)
	return vals, warns.Merge(w), err
}

func (q *chunkQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	mq, warns, err := q.open(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	names, w, err := mq.LabelNames(ctx, hints, ms...)
	return names, warns.Merge(w), err
}

type warnSeriesSet struct {
	storage.SeriesSet
	warns annotations.Annotations
}

func (s *warnSeriesSet) Warnings() annotations.Annotations {
	return s.warns.Merge(s.SeriesSet.Warnings())
}

type warnChunkSeriesSet struct {
	storage.ChunkSeriesSet
	warns annotations.Annotations
}

func (s *warnChunkSeriesSet) Warnings() annotations.Annotations {
	return s.warns.Merge(s.ChunkSeriesSet.Warnings())
}
