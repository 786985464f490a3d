package aggregate

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// inShard holds the inputs whose key falls in it.
type inShard struct {
	mu     sync.Mutex
	inputs map[inputKey]input
}

// outShard holds the outputs whose labels hash to it. Outputs are keyed by
// the hash of their labels, collisions chained and told apart by the
// labels, which are shared with the TSDB head: an output costs no copy of
// its labels.
type outShard struct {
	mu      sync.Mutex
	outputs map[uint64]*output
	n       int
}

// inputKey identifies an input series by two independent 64-bit hashes of
// its labels: a collision of both among even billions of series is beyond
// practical concern, and the labels themselves need not be kept.
type inputKey [2]uint64

var seed = maphash.MakeSeed()

// keyOf hashes the encoding of a label set.
func keyOf(b []byte) inputKey {
	return inputKey{xxhash.Sum64(b), maphash.Bytes(seed, b)}
}

type input struct {
	last  float64
	lastT int64
	out   *output
}

// output is one aggregated series. ls never changes, next is guarded by
// the shard's mutex, ref is used by the flush alone; mu guards the rest.
type output struct {
	ls      labels.Labels
	next    *output           // with the same hash
	ref     storage.SeriesRef // in the next storage, once written
	mu      sync.Mutex
	dead    bool              // forgotten as stale; its inputs find a new one
	total   float64           // sum of increases through the last written interval
	written int64             // end of the last written interval; minTime if none
	pending []bucket          // increases of unwritten intervals, by ascending end
	lastIn  int64             // newest input sample time
	recv    int64             // wall-clock time of the newest input sample, ms
	ex      exemplar.Exemplar // newest exemplar of a dropped input not yet written
	hasEx   bool
}

type bucket struct {
	end int64
	sum float64
}

// op is a buffered sample or exemplar of a matched series.
type op struct {
	key inputKey
	ls  labels.Labels
	t   int64
	v   float64
	ex  *exemplar.Exemplar // an exemplar, not a sample, when set
}

// output finds or creates the output of the input series ls.
func (r *rule) output(ls labels.Labels) *output {
	ols := r.outputLabels(ls)
	h := ols.Hash()
	s := &r.outs[h%shards]
	s.mu.Lock()
	defer s.mu.Unlock()
	for out := s.outputs[h]; out != nil; out = out.next {
		if labels.Equal(out.ls, ols) {
			return out
		}
	}
	out := &output{ls: ols, next: s.outputs[h], written: minTime, lastIn: minTime}
	s.outputs[h] = out
	s.n++
	return out
}

// apply adds the buffered ops of one input shard, in their order, received
// at wall-clock time recv.
func (r *rule) apply(s *inShard, ops []op, recv int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ops {
		o := &ops[i]
		in, known := s.inputs[o.key]
		if o.ex != nil {
			if known {
				in.out.setExemplar(*o.ex)
			}
			continue
		}
		if known && o.t <= in.lastT {
			r.m.ignoredOld.Inc()
			continue
		}
		d := o.v - in.last
		if o.v < in.last {
			d = o.v // counter reset
		}
		if !known {
			d = 0 // the first sample sets the base
			in.out = r.output(o.ls)
		}
		in.last, in.lastT = o.v, o.t
		for !in.out.add(r, o.t, d, recv) {
			in.out = r.output(o.ls) // its output was forgotten
		}
		s.inputs[o.key] = in
	}
}

// add counts an increase at sample time t; false if the output is dead.
func (o *output) add(r *rule, t int64, d float64, recv int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead {
		return false
	}
	o.lastIn = max(o.lastIn, t)
	o.recv = max(o.recv, recv)
	end := r.bucketEnd(t)
	if end <= o.written {
		end = o.written + r.interval // late: counted in the first unwritten interval
	}
	i := len(o.pending)
	for i > 0 && o.pending[i-1].end > end {
		i--
	}
	if i > 0 && o.pending[i-1].end == end {
		o.pending[i-1].sum += d
		return true
	}
	o.pending = append(o.pending, bucket{})
	copy(o.pending[i+1:], o.pending[i:])
	o.pending[i] = bucket{end: end, sum: d}
	return true
}

func (o *output) setExemplar(e exemplar.Exemplar) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.hasEx || e.Ts > o.ex.Ts {
		o.ex, o.hasEx = e, true
	}
}

// point is one output sample to write.
type point struct {
	out *output
	t   int64
	v   float64
	ex  exemplar.Exemplar
	has bool
}

// flush writes the intervals that are due at sample time now (the newest
// sample of all, or the wall clock if earlier) and forgets what went stale
// by wall-clock time wall. An interval of an output is due when it ended
// more than delay before both now and the output's newest sample; every
// interval is due with all (at shutdown) or once the output received
// nothing for the staleness interval. An input is stale once it received
// nothing for that long while its output did, or its output is.
func (r *rule) flush(ctx context.Context, next storage.AppendableV2, now, wall, delay int64, all bool) error {
	sweep := !all && wall-r.swept >= r.staleness
	if !all && !sweep && r.bucketEnd(now-delay) == r.bucketEnd(r.lastWM) {
		return nil // no interval ended since the last flush
	}
	r.lastWM = now - delay
	var pts []point
	for i := range r.outs {
		s := &r.outs[i]
		s.mu.Lock()
		for h, head := range s.outputs {
			var kept *output // the chain without forgotten outputs
			for out := head; out != nil; {
				next := out.next
				if r.flushOutput(out, now, wall, delay, all, &pts) {
					s.n--
				} else {
					out.next, kept = kept, out
				}
				out = next
			}
			if kept == nil {
				delete(s.outputs, h)
			} else {
				s.outputs[h] = kept
			}
		}
		s.mu.Unlock()
	}
	if sweep {
		for i := range r.ins {
			s := &r.ins[i]
			s.mu.Lock()
			for key, in := range s.inputs {
				in.out.mu.Lock()
				gone := in.out.dead || in.lastT < in.out.lastIn-r.staleness
				in.out.mu.Unlock()
				if gone {
					delete(s.inputs, key)
				}
			}
			s.mu.Unlock()
		}
		r.swept = wall
	}
	return r.write(ctx, next, pts)
}

// flushOutput appends the due intervals of out to pts and reports whether
// out went stale and is forgotten.
func (r *rule) flushOutput(out *output, now, wall, delay int64, all bool, pts *[]point) bool {
	out.mu.Lock()
	defer out.mu.Unlock()
	stale := out.recv < wall-r.staleness
	limit := min(now, out.lastIn) - delay
	if all || stale {
		limit = 1 << 62
	}
	n := len(*pts)
	for len(out.pending) > 0 && out.pending[0].end < limit {
		b := out.pending[0]
		out.total += b.sum
		out.written = b.end
		out.pending = out.pending[1:]
		*pts = append(*pts, point{out: out, t: b.end, v: out.total})
	}
	if out.hasEx && len(*pts) > n {
		p := &(*pts)[len(*pts)-1]
		p.ex, p.has, out.hasEx = out.ex, true, false
	}
	if len(out.pending) > 0 {
		return false
	}
	out.pending = nil
	if stale && !all {
		out.dead = true
		return true
	}
	return false
}

// write appends the points in transactions of at most 10,000 samples.
func (r *rule) write(ctx context.Context, next storage.AppendableV2, pts []point) error {
	const batch = 10000
	var firstErr error
	for len(pts) > 0 {
		n := min(batch, len(pts))
		if err := r.writeBatch(ctx, next, pts[:n]); err != nil && firstErr == nil {
			firstErr = err
		}
		pts = pts[n:]
	}
	return firstErr
}

// writeBatch appends points in one transaction. Only the flush goroutine
// reads and writes output refs.
func (r *rule) writeBatch(ctx context.Context, next storage.AppendableV2, pts []point) error {
	app := next.AppenderV2(ctx)
	failed := 0
	var firstErr error
	for i := range pts {
		p := &pts[i]
		ref, err := app.Append(p.out.ref, p.out.ls, 0, p.t, p.v, nil, nil, storage.AOptions{})
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("append %s at %d: %w", p.out.ls, p.t, err)
			}
			continue
		}
		p.out.ref = ref
		if p.has {
			if ea, ok := app.(storage.ExemplarAppenderV2); ok {
				_, _ = ea.AppendExemplars(ref, p.out.ls, []exemplar.Exemplar{p.ex})
			}
		}
	}
	if err := app.Commit(); err != nil {
		r.m.outputFailures.Add(len(pts))
		return fmt.Errorf("commit %d aggregated samples: %w", len(pts), err)
	}
	r.m.outputSamples.Add(len(pts) - failed)
	r.m.outputFailures.Add(failed)
	return firstErr
}
