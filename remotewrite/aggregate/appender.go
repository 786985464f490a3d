package aggregate

import (
	"context"
	"math"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/storage"
)

// appender buffers the samples of matched series and applies them on
// Commit, one lock per input shard; everything else goes to the next
// appender.
type appender struct {
	a    *Aggregator
	ctx  context.Context
	next storage.ExemplarAppenderV2 // created on first use
	sc   *scratch
	maxT int64
	n    int
}

// scratch is an appender's reusable memory.
type scratch struct {
	ops [][shards][]op // per rule, per input shard
	buf []byte
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
	if h == nil && fh == nil && ap.buffer(ls, t, v, nil) {
		return 0, nil
	}
	return ap.nextApp().Append(ref, ls, st, t, v, h, fh, opts)
}

// AppendExemplars keeps the newest exemplar of a dropped input for its
// output and passes the others on.
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
	var key inputKey
	hashed := false
	name := ls.Get(labels.MetricName)
	for i, r := range ap.a.rules {
		if !ap.a.matching(i, ls, name) {
			continue
		}
		drop = drop || r.DropInput
		if ex == nil && math.IsNaN(v) {
			ap.a.m.ignoredNaN.Inc() // a stale marker, or a gap: no increase
			continue
		}
		if !hashed {
			ap.sc.buf = ls.Bytes(ap.sc.buf)
			key, hashed = keyOf(ap.sc.buf), true
		}
		s := key[0] % shards
		ap.sc.ops[i][s] = append(ap.sc.ops[i][s], op{key: key, ls: ls, t: t, v: v, ex: ex})
		if ex == nil {
			ap.maxT = max(ap.maxT, t)
			ap.n++
		}
	}
	return drop
}

func (ap *appender) Commit() error {
	recv := timestamp.FromTime(ap.a.now())
	for i, r := range ap.a.rules {
		for s := range ap.sc.ops[i] {
			if ops := ap.sc.ops[i][s]; len(ops) > 0 {
				r.apply(&r.ins[s], ops, recv)
			}
		}
	}
	ap.a.m.inputSamples.Add(ap.n)
	for {
		cur := ap.a.maxT.Load()
		if ap.maxT <= cur || ap.a.maxT.CompareAndSwap(cur, ap.maxT) {
			break
		}
	}
	ap.release()
	if ap.next == nil {
		return nil
	}
	return ap.next.Commit()
}

func (ap *appender) Rollback() error {
	ap.release()
	if ap.next == nil {
		return nil
	}
	return ap.next.Rollback()
}

// release returns the scratch memory for the next appender.
func (ap *appender) release() {
	if ap.sc == nil {
		return
	}
	for i := range ap.sc.ops {
		for s := range ap.sc.ops[i] {
			clear(ap.sc.ops[i][s]) // drop references to labels
			ap.sc.ops[i][s] = ap.sc.ops[i][s][:0]
		}
	}
	ap.a.scratch.Put(ap.sc)
	ap.sc = nil
}
