// Package memreader is a traces.Reader over spans held in memory, for the
// query APIs' tests.
package memreader

import (
	"cmp"
	"context"
	"slices"

	"github.com/meshlens/meshlens/traces"
)

// Reader serves spans grouped in blocks, the first block the newest. A
// trace with spans in several blocks is passed to Traces once per block,
// as the real store does.
type Reader struct {
	Blocks [][]traces.Span
}

// New returns a Reader with one block.
func New(spans ...traces.Span) *Reader { return &Reader{Blocks: [][]traces.Span{spans}} }

func inRange(tr traces.TimeRange, s *traces.Span) bool {
	return (tr.Start == 0 || s.StartUnixNano >= tr.Start) && (tr.End == 0 || s.StartUnixNano <= tr.End)
}

func (r *Reader) all(tr traces.TimeRange) []*traces.Span {
	var out []*traces.Span
	for _, b := range r.Blocks {
		for i := range b {
			if inRange(tr, &b[i]) {
				out = append(out, &b[i])
			}
		}
	}
	return out
}

// Trace implements traces.Reader.
func (r *Reader) Trace(_ context.Context, id traces.TraceID, tr traces.TimeRange) ([]traces.Span, error) {
	var out []traces.Span
	seen := map[traces.SpanID]bool{}
	for _, s := range r.all(tr) {
		if s.TraceID == id && !seen[s.SpanID] {
			seen[s.SpanID] = true
			out = append(out, *s)
		}
	}
	if len(out) == 0 {
		return nil, traces.ErrNotFound
	}
	return out, nil
}

// Traces implements traces.Reader: block by block, within a block the
// traces with the latest start first.
func (r *Reader) Traces(ctx context.Context, tr traces.TimeRange, fn func([]traces.Span) bool) error {
	for _, b := range r.Blocks {
		byID := map[traces.TraceID][]traces.Span{}
		var ids []traces.TraceID
		for _, s := range b {
			if _, ok := byID[s.TraceID]; !ok {
				ids = append(ids, s.TraceID)
			}
			byID[s.TraceID] = append(byID[s.TraceID], s)
		}
		ids = slices.DeleteFunc(ids, func(id traces.TraceID) bool {
			return !slices.ContainsFunc(byID[id], func(s traces.Span) bool { return inRange(tr, &s) })
		})
		slices.SortStableFunc(ids, func(a, b traces.TraceID) int {
			return cmp.Compare(traces.Summarize(byID[b]).StartUnixNano, traces.Summarize(byID[a]).StartUnixNano)
		})
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !fn(slices.Clone(byID[id])) {
				return nil
			}
		}
	}
	return nil
}

// Services implements traces.Reader.
func (r *Reader) Services(_ context.Context, tr traces.TimeRange) ([]string, error) {
	var out []string
	for _, s := range r.all(tr) {
		if s.Service != "" {
			out = append(out, s.Service)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Operations implements traces.Reader.
func (r *Reader) Operations(_ context.Context, service string, tr traces.TimeRange) ([]traces.Operation, error) {
	var out []traces.Operation
	for _, s := range r.all(tr) {
		if service == "" || s.Service == service {
			out = append(out, traces.Operation{Name: s.Name, Kind: s.Kind})
		}
	}
	slices.SortFunc(out, func(a, b traces.Operation) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
	})
	return slices.Compact(out), nil
}

func scoped(s *traces.Span, scope traces.Scope) []traces.Attr {
	switch scope {
	case traces.ScopeSpan:
		return s.Attrs
	case traces.ScopeResource:
		return s.Resource
	}
	return append(slices.Clone(s.Attrs), s.Resource...)
}

// TagNames implements traces.Reader.
func (r *Reader) TagNames(_ context.Context, scope traces.Scope, tr traces.TimeRange) ([]string, error) {
	var out []string
	for _, s := range r.all(tr) {
		for _, a := range scoped(s, scope) {
			out = append(out, a.Key)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// TagValues implements traces.Reader.
func (r *Reader) TagValues(_ context.Context, scope traces.Scope, key string, tr traces.TimeRange, limit int) ([]traces.Attr, error) {
	var out []traces.Attr
	for _, s := range r.all(tr) {
		for _, a := range scoped(s, scope) {
			if a.Key == key && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, func(a, b traces.Attr) int { return cmp.Compare(a.Text(), b.Text()) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
