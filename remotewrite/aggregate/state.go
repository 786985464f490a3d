package aggregate

import (
	"context"
	"fmt"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// shard holds the outputs whose labels hash to it and their inputs.
type shard struct {
	mu      sync.Mutex
	outputs map[string]*output // by the encoding of their kept labels
	inputs  map[inputKey]*input
}

// inputKey identifies an input among the inputs of its output by a hash of
// the labels the output drops; two inputs of one output colliding on 64
// bits is not a practical concern.
type inputKey struct {
	out     *output
	dropped uint64
}

type input struct {
	last  float64
	lastT int64
}

// output is one aggregated series.
type output struct {
	ls      labels.Labels
	ref     storage.SeriesRef // in the next storage, once written
	total   float64           // sum of increases through the last written interval
	written int64             // end of the last written interval; minTime if none
	pending []bucket          // increases of unwritten intervals, by ascending end
	lastIn  int64             // newest input sample time
	ex      exemplar.Exemplar // newest exemplar of a dropped input not yet written
	hasEx   bool
}

type bucket struct {
	end int64
	sum float64
}

// op is a buffered sample or exemplar of a matched series.
type op struct {
	// arena[start:mid] encodes the labels the output keeps, arena[mid:end]
	// the ones it drops.
	start, mid, end int
	ls              labels.Labels
	t               int64
	v               float64
	ex              *exemplar.Exemplar // an exemplar, not a sample, when set
}

func shardIndex(kept []byte) int { return int(xxhash.Sum64(kept) % shards) }

// apply adds buffered ops of one shard, in their order.
func (r *rule) apply(s *shard, ops []op, arena []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ops {
		o := &ops[i]
		kept := arena[o.start:o.mid]
		out := s.outputs[string(kept)]
		if out == nil {
			if o.ex != nil {
				continue // no sample of this output yet: nothing to attach to
			}
			out = &output{ls: r.outputLabels(o.ls), written: minTime, lastIn: minTime}
			s.outputs[string(kept)] = out
		}
		if o.ex != nil {
			if !out.hasEx || o.ex.Ts > out.ex.Ts {
				out.ex, out.hasEx = *o.ex, true
			}
			continue
		}
		key := inputKey{out: out, dropped: xxhash.Sum64(arena[o.mid:o.end])}
		in := s.inputs[key]
		if in == nil {
			s.inputs[key] = &input{last: o.v, lastT: o.t}
			out.add(r, o.t, 0)
			continue
		}
		if o.t <= in.lastT {
			ignoredOld.Inc()
			continue
		}
		d := o.v - in.last
		if o.v < in.last {
			d = o.v // counter reset
		}
		in.last, in.lastT = o.v, o.t
		out.add(r, o.t, d)
	}
}

// add counts an increase at sample time t.
func (o *output) add(r *rule, t int64, d float64) {
	o.lastIn = max(o.lastIn, t)
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
		return
	}
	o.pending = append(o.pending, bucket{})
	copy(o.pending[i+1:], o.pending[i:])
	o.pending[i] = bucket{end: end, sum: d}
}

// point is one output sample to write.
type point struct {
	out *output
	t   int64
	v   float64
	ex  exemplar.Exemplar
	has bool
}

// flush writes the intervals ending before wm and forgets outputs and
// inputs that went stale.
func (r *rule) flush(ctx context.Context, next storage.AppendableV2, wm int64, all bool) error {
	var pts []point
	sweep := !all && wm-r.swept >= r.staleness
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for key, out := range s.outputs {
			n := len(pts)
			for len(out.pending) > 0 && out.pending[0].end < wm {
				b := out.pending[0]
				out.total += b.sum
				out.written = b.end
				out.pending = out.pending[1:]
				pts = append(pts, point{out: out, t: b.end, v: out.total})
			}
			if out.hasEx && len(pts) > n {
				pts[len(pts)-1].ex, pts[len(pts)-1].has, out.hasEx = out.ex, true, false
			}
			if len(out.pending) == 0 {
				out.pending = nil
				if !all && out.lastIn < wm-r.staleness {
					delete(s.outputs, key)
				}
			}
		}
		if sweep {
			for key, in := range s.inputs {
				if in.lastT < wm-r.staleness {
					delete(s.inputs, key)
				}
			}
		}
		s.mu.Unlock()
	}
	if sweep {
		r.swept = wm
	}
	return write(ctx, next, pts)
}

// write appends the points in transactions of at most 10,000 samples.
func write(ctx context.Context, next storage.AppendableV2, pts []point) error {
	const batch = 10000
	var firstErr error
	for len(pts) > 0 {
		n := min(batch, len(pts))
		if err := writeBatch(ctx, next, pts[:n]); err != nil && firstErr == nil {
			firstErr = err
		}
		pts = pts[n:]
	}
	return firstErr
}

func writeBatch(ctx context.Context, next storage.AppendableV2, pts []point) error {
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
		outputFailures.Add(len(pts))
		return fmt.Errorf("commit %d aggregated samples: %w", len(pts), err)
	}
	outputSamples.Add(len(pts) - failed)
	outputFailures.Add(failed)
	return firstErr
}
