package store

import (
	"slices"
	"time"

	"github.com/meshlens/meshlens/traces"
)

// headTrace holds the spans of one trace in the head. Spans are only ever
// appended to spans, and never changed in place: a reader may keep a
// prefix of the slice after it released the head's lock.
type headTrace struct {
	spans []traces.Span
	seqs  []uint64 // WAL record of each span, parallel to spans.
	ids   map[spanKey]struct{}

	minT, maxT uint64    // Earliest and latest span start.
	first      time.Time // When the trace entered the head.
	last       time.Time // When its latest span arrived.
	minSeg     int       // No span of the trace is in a WAL segment before it.
}

// idsIndexFrom is the number of spans from which a trace keeps a set of
// its span ids instead of scanning its spans for duplicates.
const idsIndexFrom = 32

// spanKey identifies a span within its trace: its id and kind, as
// spanblock deduplicates (a client span and its server span may share an
// id when Zipkin senders share span contexts).
type spanKey struct {
	id   traces.SpanID
	kind traces.Kind
}

func keyOf(s *traces.Span) spanKey { return spanKey{s.SpanID, s.Kind} }

// has reports whether the trace holds span k.
func (t *headTrace) has(k spanKey) bool {
	if t.ids != nil {
		_, ok := t.ids[k]
		return ok
	}
	for i := range t.spans {
		if keyOf(&t.spans[i]) == k {
			return true
		}
	}
	return false
}

func (t *headTrace) add(s traces.Span, seq uint64) {
	if len(t.spans) == 0 || s.StartUnixNano < t.minT {
		t.minT = s.StartUnixNano
	}
	t.maxT = max(t.maxT, s.StartUnixNano)
	t.spans = append(t.spans, s)
	t.seqs = append(t.seqs, seq)
	switch {
	case t.ids != nil:
		t.ids[keyOf(&s)] = struct{}{}
	case len(t.spans) >= idsIndexFrom:
		t.ids = make(map[spanKey]struct{}, 2*len(t.spans))
		for i := range t.spans {
			t.ids[keyOf(&t.spans[i])] = struct{}{}
		}
	}
}

// keep returns the trace with only the spans for which keep is true, in a
// new slice; nil when none is left.
func (t *headTrace) keep(keep func(s *traces.Span, seq uint64) bool) *headTrace {
	n := &headTrace{first: t.first, last: t.last, minSeg: t.minSeg}
	for i := range t.spans {
		if keep(&t.spans[i], t.seqs[i]) {
			n.add(t.spans[i], t.seqs[i])
		}
	}
	if len(n.spans) == 0 {
		return nil
	}
	return n
}

// view is the trace's spans as of now, safe to use after the head's lock
// is released.
func (t *headTrace) view() []traces.Span { return slices.Clip(t.spans) }

// head is the in-memory part of the store: the traces of the spans that
// are in the WAL and not yet in a block. It is guarded by Store.headMu.
type head struct {
	traces map[traces.TraceID]*headTrace
	// cutting holds the traces being written into a block by a cut; they
	// stay readable here until the block is opened.
	cutting []*headTrace
	spans   int    // Spans in traces (not cutting).
	seq     uint64 // Every span of a record up to seq is in the head.
}

func newHead() *head {
	return &head{traces: map[traces.TraceID]*headTrace{}}
}

// forEach calls fn with every trace of the head, those being cut included.
func (h *head) forEach(fn func(id traces.TraceID, t *headTrace) bool) {
	for id, t := range h.traces {
		if !fn(id, t) {
			return
		}
	}
	for _, t := range h.cutting {
		if !fn(t.spans[0].TraceID, t) {
			return
		}
	}
}
