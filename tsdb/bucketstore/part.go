package bucketstore

import (
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/meshlens/meshlens/tsdb/block"
)

// partQuerier makes the querier of one part: a block querier for a raw
// block, an aggrQuerier for a downsampled one, limited to the part's time
// range and with the block's external labels when the Store adds them.
func (s *Store) partQuerier(b *promtsdb.Block, p part) (storage.Querier, error) {
	var inner storage.Querier
	if p.meta.Thanos.Downsample.Resolution == block.ResolutionRaw {
		q, err := promtsdb.NewBlockQuerier(b, p.mint, p.maxt)
		if err != nil {
			return nil, err
		}
		inner = q
	} else {
		cq, err := promtsdb.NewBlockChunkQuerier(b, p.mint, p.maxt)
		if err != nil {
			return nil, err
		}
		inner = aggrQuerier{cq}
	}
	return &partQuerier{
		inner:       inner,
		partLabels:  partLabels{inner: inner, ext: s.extLabels(p)},
		mint:        p.mint,
		maxt:        p.maxt,
		downsampled: p.meta.Thanos.Downsample.Resolution != block.ResolutionRaw,
	}, nil
}

// partChunkQuerier is partQuerier for chunks. Downsampled blocks give
// chunks encoded from the samples that their aggregates yield.
func (s *Store) partChunkQuerier(b *promtsdb.Block, p part) (storage.ChunkQuerier, error) {
	cq, err := promtsdb.NewBlockChunkQuerier(b, p.mint, p.maxt)
	if err != nil {
		return nil, err
	}
	var inner storage.ChunkQuerier = cq
	downsampled := p.meta.Thanos.Downsample.Resolution != block.ResolutionRaw
	if downsampled {
		inner = encodingQuerier{aggrQuerier{cq}}
	}
	return &partChunkQuerier{
		inner:       inner,
		partLabels:  partLabels{inner: inner, ext: s.extLabels(p)},
		mint:        p.mint,
		maxt:        p.maxt,
		downsampled: downsampled,
	}, nil
}

// extLabels are the labels to add to the series of part p.
func (s *Store) extLabels(p part) labels.Labels {
	if !s.externalLabels {
		return labels.EmptyLabels()
	}
	return labels.FromMap(p.meta.Thanos.Labels)
}

// clampHints returns hints for reading [mint, maxt] of a block: the
// caller's hints with their time range cut to it, never nil. ok is false
// when nothing of the range is left.
func clampHints(hints *storage.SelectHints, mint, maxt int64, downsampled bool) (h *storage.SelectHints, ok bool) {
	if hints == nil {
		h = &storage.SelectHints{Start: mint, End: maxt}
	} else {
		c := *hints
		c.Start, c.End = max(c.Start, mint), min(c.End, maxt)
		h = &c
	}
	// Samples outside the range belong to other blocks or resolutions;
	// trimming is what keeps them out of raw blocks (aggrQuerier bounds
	// its samples itself).
	h.DisableTrimming = downsampled
	return h, h.Start <= h.End
}

// allSeries is a matcher that selects every series of a block.
var allSeries = labels.MustNewMatcher(labels.MatchEqual, "", "")

// matchExternal applies the matchers on external label names to the
// external labels ext, as Thanos's store gateway does: ok is false if one
// does not match, and otherwise the other matchers are returned, for the
// block's own series.
func matchExternal(ext labels.Labels, ms []*labels.Matcher) (rest []*labels.Matcher, ok bool) {
	if ext.IsEmpty() {
		return ms, true
	}
	rest = make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		if !ext.Has(m.Name) {
			rest = append(rest, m)
			continue
		}
		if !m.Matches(ext.Get(m.Name)) {
			return nil, false
		}
	}
	return rest, true
}

// withExternal returns lset with the labels of ext added, replacing those
// of the same name.
func withExternal(b *labels.Builder, lset, ext labels.Labels) labels.Labels {
	b.Reset(lset)
	ext.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
	return b.Labels()
}

// partLabels answers the label methods for a part.
type partLabels struct {
	inner storage.LabelQuerier
	ext   labels.Labels
}

func (p partLabels) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	ms, ok := matchExternal(p.ext, ms)
	if !ok {
		return nil, nil, nil
	}
	if p.ext.Has(name) {
		return []string{p.ext.Get(name)}, nil, nil
	}
	return p.inner.LabelValues(ctx, name, hints, ms...)
}

func (p partLabels) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	ms, ok := matchExternal(p.ext, ms)
	if !ok {
		return nil, nil, nil
	}
	names, warns, err := p.inner.LabelNames(ctx, hints, ms...)
	if err != nil || p.ext.IsEmpty() {
		return names, warns, err
	}
	p.ext.Range(func(l labels.Label) {
		if !slices.Contains(names, l.Name) {
			names = append(names, l.Name)
		}
	})
	slices.Sort(names)
	return names, warns, nil
}

func (p partLabels) Close() error { return p.inner.Close() }

// partQuerier reads a part of a block.
type partQuerier struct {
	partLabels
	inner       storage.Querier
	mint, maxt  int64
	downsampled bool
}

func (p *partQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	h, ms, ok := prepareSelect(hints, p.mint, p.maxt, p.downsampled, p.ext, ms)
	if !ok {
		return storage.EmptySeriesSet()
	}
	if p.ext.IsEmpty() {
		return p.inner.Select(ctx, sortSeries, h, ms...)
	}
	return relabelSeries(p.inner.Select(ctx, false, h, ms...), p.ext)
}

// prepareSelect fits a Select of a part to the part's time range and
// external labels: the hints clamped to [mint, maxt], the matchers without
// those external labels match (all series when none is left); ok is false
// when the part cannot hold a matching series.
func prepareSelect(hints *storage.SelectHints, mint, maxt int64, downsampled bool, ext labels.Labels, ms []*labels.Matcher) (*storage.SelectHints, []*labels.Matcher, bool) {
	h, ok := clampHints(hints, mint, maxt, downsampled)
	if !ok {
		return nil, nil, false
	}
	ms, ok = matchExternal(ext, ms)
	if !ok {
		return nil, nil, false
	}
	if len(ms) == 0 {
		ms = []*labels.Matcher{allSeries}
	}
	return h, ms, true
}

// relabelSeries adds ext to the labels of every series of ss. Added
// labels can change the order of series, and replaced ones can make two
// series one, so the series are read into memory, sorted and merged.
func relabelSeries(ss storage.SeriesSet, ext labels.Labels) storage.SeriesSet {
	var (
		all []storage.Series
		b   = labels.NewBuilder(labels.EmptyLabels())
	)
	for ss.Next() {
		s := ss.At()
		all = append(all, &storage.SeriesEntry{Lset: withExternal(b, s.Labels(), ext), SampleIteratorFn: s.Iterator})
	}
	if err := ss.Err(); err != nil {
		return storage.ErrSeriesSet(err)
	}
	slices.SortStableFunc(all, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	merged := all[:0]
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && labels.Equal(all[i].Labels(), all[j].Labels()) {
			j++
		}
		if j-i == 1 {
			merged = append(merged, all[i])
		} else {
			merged = append(merged, storage.ChainedSeriesMerge(slices.Clone(all[i:j])...))
		}
		i = j
	}
	return &listSeriesSet{series: merged, warns: ss.Warnings()}
}

// partChunkQuerier reads a part of a block as chunks.
type partChunkQuerier struct {
	partLabels
	inner       storage.ChunkQuerier
	mint, maxt  int64
	downsampled bool
}

func (p *partChunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	h, ms, ok := prepareSelect(hints, p.mint, p.maxt, p.downsampled, p.ext, ms)
	if !ok {
		return storage.EmptyChunkSeriesSet()
	}
	if p.ext.IsEmpty() {
		return p.inner.Select(ctx, sortSeries, h, ms...)
	}
	return relabelChunkSeries(p.inner.Select(ctx, false, h, ms...), p.ext)
}

// relabelChunkSeries is relabelSeries for chunk series.
func relabelChunkSeries(ss storage.ChunkSeriesSet, ext labels.Labels) storage.ChunkSeriesSet {
	var (
		all   []storage.ChunkSeries
		b     = labels.NewBuilder(labels.EmptyLabels())
		merge = storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge)
	)
	for ss.Next() {
		s := ss.At()
		all = append(all, &storage.ChunkSeriesEntry{Lset: withExternal(b, s.Labels(), ext), ChunkIteratorFn: s.Iterator})
	}
	if err := ss.Err(); err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	slices.SortStableFunc(all, func(a, b storage.ChunkSeries) int { return labels.Compare(a.Labels(), b.Labels()) })
	merged := all[:0]
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && labels.Equal(all[i].Labels(), all[j].Labels()) {
			j++
		}
		if j-i == 1 {
			merged = append(merged, all[i])
		} else {
			merged = append(merged, merge(slices.Clone(all[i:j])...))
		}
		i = j
	}
	return &listChunkSeriesSet{series: merged, warns: ss.Warnings()}
}

// encodingQuerier is a ChunkQuerier of the series of a Querier, encoded
// into chunks.
type encodingQuerier struct {
	storage.Querier
}

func (q encodingQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	return storage.NewSeriesSetToChunkSet(q.Querier.Select(ctx, sortSeries, hints, ms...))
}

type listSeriesSet struct {
	series []storage.Series
	i      int
	warns  annotations.Annotations
}

func (s *listSeriesSet) Next() bool {
	if s.i >= len(s.series) {
		return false
	}
	s.i++
	return true
}

func (s *listSeriesSet) At() storage.Series                { return s.series[s.i-1] }
func (s *listSeriesSet) Err() error                        { return nil }
func (s *listSeriesSet) Warnings() annotations.Annotations { return s.warns }

type listChunkSeriesSet struct {
	series []storage.ChunkSeries
	i      int
	warns  annotations.Annotations
}

func (s *listChunkSeriesSet) Next() bool {
	if s.i >= len(s.series) {
		return false
	}
	s.i++
	return true
}

func (s *listChunkSeriesSet) At() storage.ChunkSeries           { return s.series[s.i-1] }
func (s *listChunkSeriesSet) Err() error                        { return nil }
func (s *listChunkSeriesSet) Warnings() annotations.Annotations { return s.warns }
