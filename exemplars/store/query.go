package store

import (
	"container/heap"
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// matches reports whether lset matches any of the matcher sets (each set
// wholly); no sets match nothing, as in Prometheus.
func matches(lset labels.Labels, sets [][]*labels.Matcher) bool {
	for _, ms := range sets {
		ok := true
		for _, m := range ms {
			if !m.Matches(lset.Get(m.Name)) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// each calls fn with every series that matches sets and may hold
// exemplars in [start, end], and a function reading its exemplars
// (highest value first for blocks, in arrival order for the head); fn
// returning false stops. maxV is the highest value the series may hold.
// Blocks stay open until each returns.
func (s *Store) each(ctx context.Context, start, end int64, sets [][]*labels.Matcher, fn func(lset labels.Labels, maxV float64, read func(func(sample) bool) error) bool) error {
	// The head: copies of the matching series' exemplars in range.
	type copied struct {
		lset labels.Labels
		ex   []sample
		maxV float64
	}
	var head []copied
	s.mu.Lock()
	for pstart, p := range s.head {
		if pstart > end || pstart+s.o.BlockDuration.Milliseconds() <= start {
			continue
		}
		for _, chain := range p.series {
			for _, sr := range chain {
				if !matches(sr.lset, sets) {
					continue
				}
				c := copied{lset: sr.lset}
				for _, e := range sr.ex {
					if e.t >= start && e.t <= end {
						c.ex = append(c.ex, e)
					}
				}
				if len(c.ex) > 0 {
					slices.SortFunc(c.ex, byValue)
					c.maxV = c.ex[0].v
					head = append(head, c)
				}
			}
		}
	}
	s.mu.Unlock()
	for _, c := range head {
		if !fn(c.lset, c.maxV, func(f func(sample) bool) error {
			for _, e := range c.ex {
				if !f(e) {
					break
				}
			}
			return nil
		}) {
			return nil
		}
	}

	s.blocksMu.RLock()
	defer s.blocksMu.RUnlock()
	for _, b := range s.blocks {
		if b.meta.MaxTime < start || b.meta.MinTime > end {
			continue
		}
		for i := range b.r.index {
			if err := ctx.Err(); err != nil {
				return err
			}
			ie := &b.r.index[i]
			if ie.maxT < start || ie.minT > end || !matches(ie.lset, sets) {
				continue
			}
			var rerr error
			more := fn(ie.lset, ie.maxV, func(f func(sample) bool) error {
				rerr = b.r.section(ie, func(e sample) bool {
					if e.t < start || e.t > end {
						return true
					}
					return f(e)
				})
				return rerr
			})
			if rerr != nil {
				return rerr
			}
			if !more {
				return nil
			}
		}
	}
	return nil
}

// exemplarKey identifies an exemplar for deduplication.
type exemplarKey struct {
	series, labels uint64
	t              int64
	v              float64
}

// Select returns the exemplars of the series matching any of the matcher
// sets in [start, end], grouped by series and sorted by time, as
// storage.ExemplarQuerier does.
func (s *Store) Select(ctx context.Context, start, end int64, sets ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	bySeries := map[uint64]int{}
	var out []exemplar.QueryResult
	seen := map[exemplarKey]struct{}{}
	err := s.each(ctx, start, end, sets, func(lset labels.Labels, _ float64, read func(func(sample) bool) error) bool {
		h := lset.Hash()
		i, ok := bySeries[h]
		if !ok {
			i = len(out)
			bySeries[h] = i
			out = append(out, exemplar.QueryResult{SeriesLabels: lset})
		}
		_ = read(func(e sample) bool {
			k := exemplarKey{h, e.labels.Hash(), e.t, e.v}
			if _, dup := seen[k]; !dup {
				seen[k] = struct{}{}
				out[i].Exemplars = append(out[i].Exemplars, exemplar.Exemplar{Labels: e.labels, Value: e.v, Ts: e.t, HasTs: true})
			}
			return true
		})
		return true
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		slices.SortFunc(out[i].Exemplars, exemplar.Compare)
	}
	slices.SortFunc(out, func(a, b exemplar.QueryResult) int { return labels.Compare(a.SeriesLabels, b.SeriesLabels) })
	return out, nil
}

// Top returns the n highest-value exemplars of the series matching any of
// the matcher sets in [start, end], highest first (ties: oldest first).
// It reads only the sections of matching series, and of each only as far
// as its exemplars can still be among the n.
func (s *Store) Top(ctx context.Context, start, end int64, n int, sets ...[]*labels.Matcher) ([]Exemplar, error) {
	if n <= 0 {
		return nil, nil
	}
	h := &minHeap{}
	seen := map[exemplarKey]struct{}{}
	full := func() bool { return h.Len() >= n }
	err := s.each(ctx, start, end, sets, func(lset labels.Labels, maxV float64, read func(func(sample) bool) error) bool {
		if full() && maxV < (*h)[0].Value {
			return true
		}
		sh := lset.Hash()
		_ = read(func(e sample) bool {
			if full() && worse(e.v, e.t, (*h)[0]) {
				return false // the rest of the section is lower still
			}
			k := exemplarKey{sh, e.labels.Hash(), e.t, e.v}
			if _, dup := seen[k]; dup {
				return true
			}
			seen[k] = struct{}{}
			heap.Push(h, Exemplar{Series: lset, Exemplar: exemplar.Exemplar{Labels: e.labels, Value: e.v, Ts: e.t, HasTs: true}})
			if h.Len() > n {
				heap.Pop(h)
			}
			return true
		})
		return true
	})
	if err != nil {
		return nil, err
	}
	if h.Len() == 0 {
		return nil, nil
	}
	out := make([]Exemplar, h.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(h).(Exemplar)
	}
	return out, nil
}

// worse reports whether an exemplar of value v at t ranks at or below e:
// lower value, or the same value and not older.
func worse(v float64, t int64, e Exemplar) bool {
	return v < e.Value || (v == e.Value && t >= e.Ts)
}

// minHeap holds the best exemplars found so far, the worst on top.
type minHeap []Exemplar

func (h minHeap) Len() int { return len(h) }
func (h minHeap) Less(i, j int) bool {
	if h[i].Value != h[j].Value {
		return h[i].Value < h[j].Value
	}
	return h[i].Ts > h[j].Ts
}
func (h minHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)   { *h = append(*h, x.(Exemplar)) }
func (h *minHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// ExemplarQuerier implements storage.ExemplarQueryable.
func (s *Store) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return querier{s: s, ctx: ctx}, nil
}

type querier struct {
	s   *Store
	ctx context.Context
}

func (q querier) Select(start, end int64, sets ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	return q.s.Select(q.ctx, start, end, sets...)
}
