package store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/store/spanblock"
)

// clamp limits tr to the retention: spans that started before it are not
// read even while their block waits for deletion (a block goes when its
// newest span expires).
func (s *Store) clamp(tr traces.TimeRange) traces.TimeRange {
	cutoff := uint64(s.now().Add(-s.o.Retention).UnixNano())
	tr.Start = max(tr.Start, cutoff)
	return tr
}

// inRange reports whether the span starts in tr.
func inRange(tr traces.TimeRange, s *traces.Span) bool {
	return tr.Overlaps(s.StartUnixNano, s.StartUnixNano)
}

// headTraces returns the head's traces with a span starting in tr, as
// views that stay valid after the lock is released.
func (s *Store) headTraces(tr traces.TimeRange) [][]traces.Span {
	s.headMu.RLock()
	defer s.headMu.RUnlock()
	var out [][]traces.Span
	s.head.forEach(func(_ traces.TraceID, t *headTrace) bool {
		if !tr.Overlaps(t.minT, t.maxT) {
			return true
		}
		v := t.view()
		for i := range v {
			if inRange(tr, &v[i]) {
				out = append(out, v)
				break
			}
		}
		return true
	})
	return out
}

// eachBlock calls fn with every block a read over tr visits (see
// candidates), newest first, until fn returns false. Blocks deleted
// meanwhile are skipped: a compacted block or the retention took them.
func (s *Store) eachBlock(ctx context.Context, tr traces.TimeRange, keep blockFilter, fn func(b *spanblock.Block) (bool, error)) error {
	for _, e := range s.candidates(tr, keep) {
		if err := ctx.Err(); err != nil {
			return err
		}
		blk, release, err := s.acquire(ctx, e)
		if errors.Is(err, errBlockGone) {
			continue
		}
		if err != nil {
			return err
		}
		more, err := fn(blk)
		release()
		if err != nil {
			return fmt.Errorf("block %s: %w", e.id, err)
		}
		if !more {
			return nil
		}
	}
	return nil
}

// Trace returns the spans of the trace starting in tr from the head and
// every block, deduplicated by span id and kind (the head's copy, then the newest
// block's, wins).
func (s *Store) Trace(ctx context.Context, id traces.TraceID, tr traces.TimeRange) ([]traces.Span, error) {
	tr = s.clamp(tr)
	var out []traces.Span
	seen := map[spanKey]struct{}{}
	add := func(spans []traces.Span) {
		for i := range spans {
			sp := &spans[i]
			if _, ok := seen[keyOf(sp)]; ok || !inRange(tr, sp) {
				continue
			}
			seen[keyOf(sp)] = struct{}{}
			out = append(out, *sp)
		}
	}
	s.headMu.RLock()
	if t := s.head.traces[id]; t != nil {
		add(t.view())
	}
	for _, t := range s.head.cutting {
		if t.spans[0].TraceID == id {
			add(t.view())
		}
	}
	s.headMu.RUnlock()
	err := s.eachBlock(ctx, tr, nil, func(b *spanblock.Block) (bool, error) {
		spans, err := b.Trace(ctx, id, tr)
		add(spans)
		return true, err
	})
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", id, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("trace %s: %w", id, traces.ErrNotFound)
	}
	slices.SortStableFunc(out, func(a, b traces.Span) int { return cmp.Compare(a.StartUnixNano, b.StartUnixNano) })
	return out, nil
}

// Stored implements traces.Finder: the head is looked up by id, and each
// block in tr is read once for all the ids it may hold.
func (s *Store) Stored(ctx context.Context, ids []traces.TraceID, tr traces.TimeRange) ([]bool, error) {
	tr = s.clamp(tr)
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(ids[a][:], ids[b][:]) })
	sorted := make([]traces.TraceID, len(ids))
	for i, k := range order {
		sorted[i] = ids[k]
	}
	found := make([]bool, len(ids))
	left := len(ids)
	s.headMu.RLock()
	for i, id := range sorted {
		if t := s.head.traces[id]; t != nil && slices.ContainsFunc(t.spans, func(sp traces.Span) bool { return inRange(tr, &sp) }) {
			found[i] = true
			left--
		}
	}
	for _, t := range s.head.cutting {
		if i, ok := slices.BinarySearchFunc(sorted, t.spans[0].TraceID, func(a, b traces.TraceID) int { return bytes.Compare(a[:], b[:]) }); ok && !found[i] &&
			slices.ContainsFunc(t.spans, func(sp traces.Span) bool { return inRange(tr, &sp) }) {
			found[i] = true
			left--
		}
	}
	s.headMu.RUnlock()
	if left > 0 {
		err := s.eachBlock(ctx, tr, nil, func(b *spanblock.Block) (bool, error) {
			err := b.Contains(ctx, sorted, tr, found)
			return !allTrue(found), err
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]bool, len(ids))
	for i, k := range order {
		out[k] = found[i]
	}
	return out, nil
}

func allTrue(bs []bool) bool { return !slices.Contains(bs, false) }

// Traces calls fn with each trace of the head with a span starting in tr,
// then with those of each block, newest first.
func (s *Store) Traces(ctx context.Context, tr traces.TimeRange, fn func(spans []traces.Span) bool) error {
	tr = s.clamp(tr)
	for _, spans := range s.headTraces(tr) {
		if !fn(spans) {
			return nil
		}
	}
	return s.eachBlock(ctx, tr, nil, func(b *spanblock.Block) (bool, error) {
		more := true
		err := b.Traces(ctx, tr, func(spans []traces.Span) bool {
			more = fn(spans)
			return more
		})
		return more, err
	})
}

// eachHeadSpan calls fn with every head span starting in tr.
func (s *Store) eachHeadSpan(tr traces.TimeRange, fn func(sp *traces.Span)) {
	s.headMu.RLock()
	defer s.headMu.RUnlock()
	s.head.forEach(func(_ traces.TraceID, t *headTrace) bool {
		if !tr.Overlaps(t.minT, t.maxT) {
			return true
		}
		for i := range t.spans {
			if inRange(tr, &t.spans[i]) {
				fn(&t.spans[i])
			}
		}
		return true
	})
}

// metas returns the meta.json of every block a read over tr visits.
func (s *Store) metas(tr traces.TimeRange) []*spanblock.Meta {
	es := s.candidates(tr, nil)
	ms := make([]*spanblock.Meta, len(es))
	for i, e := range es {
		ms[i] = e.meta
	}
	return ms
}

// Services lists the services of the head's spans in tr and of the blocks
// overlapping tr (from their meta.json, without opening them).
func (s *Store) Services(ctx context.Context, tr traces.TimeRange) ([]string, error) {
	tr = s.clamp(tr)
	set := map[string]struct{}{}
	s.eachHeadSpan(tr, func(sp *traces.Span) {
		if sp.Service != "" {
			set[sp.Service] = struct{}{}
		}
	})
	for _, m := range s.metas(tr) {
		for _, svc := range m.Services {
			set[svc] = struct{}{}
		}
	}
	return sortedKeys(set, cmp.Compare[string]), nil
}

// Operations lists the span names and kinds of a service (of every
// service when it is empty), like Services.
func (s *Store) Operations(ctx context.Context, service string, tr traces.TimeRange) ([]traces.Operation, error) {
	tr = s.clamp(tr)
	set := map[traces.Operation]struct{}{}
	s.eachHeadSpan(tr, func(sp *traces.Span) {
		if service == "" || sp.Service == service {
			set[traces.Operation{Name: sp.Name, Kind: sp.Kind}] = struct{}{}
		}
	})
	for _, m := range s.metas(tr) {
		for _, op := range m.Operations {
			if service == "" || op.Service == service {
				set[traces.Operation{Name: op.Name, Kind: op.Kind}] = struct{}{}
			}
		}
	}
	return sortedKeys(set, func(a, b traces.Operation) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
	}), nil
}

// TagNames lists the attribute keys of the scope, like Services.
func (s *Store) TagNames(ctx context.Context, scope traces.Scope, tr traces.TimeRange) ([]string, error) {
	tr = s.clamp(tr)
	set := map[string]struct{}{}
	s.eachHeadSpan(tr, func(sp *traces.Span) {
		for _, a := range scopeAttrs(sp, scope) {
			set[a.Key] = struct{}{}
		}
	})
	for _, m := range s.metas(tr) {
		for _, k := range scopeTags(m, scope) {
			set[k] = struct{}{}
		}
	}
	return sortedKeys(set, cmp.Compare[string]), nil
}

func scopeAttrs(sp *traces.Span, scope traces.Scope) []traces.Attr {
	if scope == traces.ScopeResource {
		return sp.Resource
	}
	return sp.Attrs
}

func scopeTags(m *spanblock.Meta, scope traces.Scope) []string {
	if scope == traces.ScopeResource {
		return m.ResourceTags
	}
	return m.SpanTags
}

// valueKey identifies a distinct attribute value.
type valueKey struct {
	typ  traces.ValueType
	text string
}

// TagValues lists the distinct values of the key in the scope (both when
// empty) from the head's spans in tr and the blocks overlapping tr whose
// meta.json lists the key.
func (s *Store) TagValues(ctx context.Context, scope traces.Scope, key string, tr traces.TimeRange, limit int) ([]traces.Attr, error) {
	tr = s.clamp(tr)
	scopes := []traces.Scope{scope}
	if scope == "" {
		scopes = []traces.Scope{traces.ScopeSpan, traces.ScopeResource}
	}
	set := map[valueKey]traces.Attr{}
	add := func(a traces.Attr) {
		a.Key = key
		set[valueKey{a.Type, a.Text()}] = a
	}
	s.eachHeadSpan(tr, func(sp *traces.Span) {
		for _, sc := range scopes {
			for _, a := range scopeAttrs(sp, sc) {
				if a.Key == key {
					add(a)
				}
			}
		}
	})
	for _, sc := range scopes {
		hasKey := func(m *spanblock.Meta) bool { return slices.Contains(scopeTags(m, sc), key) }
		err := s.eachBlock(ctx, tr, hasKey, func(b *spanblock.Block) (bool, error) {
			vs, err := b.TagValues(ctx, sc, key, 0)
			for _, v := range vs {
				add(v)
			}
			return true, err
		})
		if err != nil {
			return nil, fmt.Errorf("tag values of %s: %w", key, err)
		}
	}
	out := make([]traces.Attr, 0, len(set))
	for _, a := range set {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b traces.Attr) int {
		return cmp.Or(cmp.Compare(a.Text(), b.Text()), cmp.Compare(a.Type, b.Type))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func sortedKeys[K comparable](m map[K]struct{}, c func(a, b K) int) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, c)
	return out
}
