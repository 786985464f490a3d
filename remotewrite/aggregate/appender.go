package aggregate

import (
	"context"
	"math"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// appender buffers the samples of matched series and applies them on
// Commit, one lock per shard; everything else goes to the next appender.
type appender struct {
	a    *Aggregator
	ctx  context.Context
	next storage.ExemplarAppenderV2 // created on first use

	ops   [][shards][]op // per rule, per shard
	arena []byte         // split labels of the buffered ops
	maxT  int64
	n     int
}

func (ap *appender) nextApp() storage.ExemplarAppenderV2 {
	if ap.next == nil {
		ap.next = ap.a.next.AppenderV2(ap.ctx).(storage.ExemplarAppenderV2)
	}
	return ap.next
}

// Append aggregates float samples of matched series; it returns 0 and no
// error for a series whose input is dropped.
func (ap *appender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AOptions) (storage.SeriesRef, error) {
	if h != nil || fh != nil {
		return ap.nextApp().Append(ref, ls, st, t, v, h, fh, opts)
	}
	drop := ap.buffer(ls, t, v, nil)
	if drop {
		return 0, nil
	}
	return ap.nextApp().Append(ref, ls, st, t, v, h, fh, opts)
}

// AppendExemplars keeps the exemplars of a dropped input for its output and
// passes the others on.
func (ap *appender) AppendExemplars(ref storage.SeriesRef, ls labels.Labels, es []exemplar.Exemplar) (storage.SeriesRef, error) {
	if len(es) > 0 {
		newest := es[len(es)-1] // sorted by time
		newest.Labels = newest.Labels.Copy()
		if ap.buffer(ls, newest.Ts, 0, &newest) {
			return 0, nil
		}
	}
	return ap.nextApp().AppendExemplars(ref, ls, es)
}

// buffer records a sample (or, with ex, an exemplar) for every rule
// matching ls and reports whether one of them drops the input.
func (ap *appender) buffer(ls labels.Labels, t int64, v float64, ex *exemplar.Exemplar) (drop bool) {
	for i, r := range ap.a.rules {
		if !r.matches(ls) {
			continue
		}
		drop = drop || r.DropInput
		if ex == nil && math.IsNaN(v) {
			ignoredNaN.Inc() // a stale marker, or a gap: no increase
			continue
		}
		if ap.ops == nil {
			ap.ops = make([][shards][]op, len(ap.a.rules))
		}
		// Offsets, not slices: the arena may still grow.
		o := op{start: len(ap.arena), ls: ls, t: t, v: v, ex: ex}
		ap.arena, _ = r.split(ls, ap.arena, nil)
		o.mid = len(ap.arena)
		_, ap.arena = r.split(ls, nil, ap.arena)
		o.end = len(ap.arena)
		s := shardIndex(ap.arena[o.start:o.mid])
		ap.ops[i][s] = append(ap.ops[i][s], o)
		if ex == nil {
			ap.maxT = max(ap.maxT, t)
			ap.n++
		}
	}
	return drop
}

func (ap *appender) Commit() error {
	if ap.ops != nil {
		for i, r := range ap.a.rules {
			for s := range ap.ops[i] {
				if ops := ap.ops[i][s]; len(ops) > 0 {
					r.apply(&r.shards[s], ops, ap.arena)
				}
			}
		}
		aggregatedSamples.Add(ap.n)
		for {
			cur := ap.a.maxT.Load()
			if ap.maxT <= cur || ap.a.maxT.CompareAndSwap(cur, ap.maxT) {
				break
			}
		}
		ap.ops, ap.arena = nil, ap.arena[:0]
	}
	if ap.next == nil {
		return nil
	}
	return ap.next.Commit()
}

func (ap *appender) Rollback() error {
	ap.ops, ap.arena = nil, ap.arena[:0]
	if ap.next == nil {
		return nil
	}
	return ap.next.Rollback()
}
