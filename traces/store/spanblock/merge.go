package spanblock

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/oklog/ulid/v2"
	"github.com/parquet-go/parquet-go"

	"github.com/meshlens/meshlens/traces"
)

// Merge writes one block id in parentDir/<id>/ holding the spans of all
// blocks, as Write does: spans with the same trace id, span id and kind are
// kept once (the first block's), the level is the highest of the blocks'
// plus one and the sources are the union of theirs. It streams: it holds
// one batch of rows and the current trace of each block, not the blocks'
// spans.
func Merge(parentDir string, id ulid.ULID, blocks []*Block, o WriteOptions) (*Meta, error) {
	if len(blocks) == 0 {
		return nil, errors.New("merge trace blocks: no blocks")
	}
	level, expected := 0, 0
	var sources []ulid.ULID
	its := make([]*traceIter, len(blocks))
	for i, b := range blocks {
		level = max(level, b.meta.Level)
		expected += b.meta.Traces
		sources = append(sources, b.meta.Sources...)
		its[i] = &traceIter{b: b, rows: make([]spanRow, scanBatchRows)}
	}
	defer func() {
		for _, it := range its {
			it.close()
		}
	}()
	slices.SortFunc(sources, func(a, b ulid.ULID) int { return a.Compare(b) })
	sources = slices.Compact(sources)

	w, err := newWriter(parentDir, id, expected, o)
	if err != nil {
		return nil, err
	}
	active := make([]*traceIter, 0, len(its))
	for _, it := range its {
		ok, err := it.next()
		if err != nil {
			w.abort()
			return nil, fmt.Errorf("merge trace blocks: %w", err)
		}
		if ok {
			active = append(active, it)
		}
	}
	var trace []*traces.Span
	for len(active) > 0 {
		minID := active[0].id
		for _, it := range active[1:] {
			if bytes.Compare(it.id[:], minID[:]) < 0 {
				minID = it.id
			}
		}
		trace = trace[:0]
		for _, it := range active {
			if it.id == minID {
				for k := range it.trace {
					trace = append(trace, &it.trace[k])
				}
			}
		}
		slices.SortStableFunc(trace, func(a, b *traces.Span) int { return cmp.Compare(a.StartUnixNano, b.StartUnixNano) })
		if err := w.addTrace(dedupe(trace)); err != nil {
			w.abort()
			return nil, fmt.Errorf("merge trace blocks: %w", err)
		}
		next := active[:0]
		for _, it := range active {
			if it.id != minID {
				next = append(next, it)
				continue
			}
			ok, err := it.next()
			if err != nil {
				w.abort()
				return nil, fmt.Errorf("merge trace blocks: %w", err)
			}
			if ok {
				next = append(next, it)
			}
		}
		active = next
	}
	return w.finish(level+1, sources)
}

// traceIter reads a block's traces in trace id order, a batch of rows at a
// time.
type traceIter struct {
	b     *Block
	rg    int // the next row group to open
	r     *parquet.GenericReader[spanRow]
	rows  []spanRow
	pos   int
	n     int
	in    interner
	id    traces.TraceID
	trace []traces.Span
	read  bool // whether id is set
}

// next loads the next trace into it.id and it.trace; false at the end.
func (it *traceIter) next() (ok bool, err error) {
	defer recoverErr(&err)
	prev, hadPrev := it.id, it.read
	it.trace = it.trace[:0]
	for {
		if it.pos == it.n {
			if err := it.fill(); err == io.EOF {
				return len(it.trace) > 0, nil
			} else if err != nil {
				return false, fmt.Errorf("read %s: %w", filepath.Join(it.b.dir, DataFilename), err)
			}
		}
		row := &it.rows[it.pos]
		if len(it.trace) > 0 && row.TraceID != it.id {
			return true, nil
		}
		if len(it.trace) == 0 {
			if hadPrev && bytes.Compare(row.TraceID[:], prev[:]) <= 0 {
				return false, fmt.Errorf("read %s: trace %x after %x, not in ascending order", filepath.Join(it.b.dir, DataFilename), row.TraceID, prev)
			}
			it.id, it.read = row.TraceID, true
		}
		it.trace = append(it.trace, row.span(&it.in))
		it.pos++
	}
}

// fill reads the next batch of rows, opening the next row group when the
// current one is done; io.EOF after the last.
func (it *traceIter) fill() error {
	for {
		if it.r == nil {
			rgs := it.b.pf.RowGroups()
			if it.rg == len(rgs) {
				return io.EOF
			}
			it.r = parquet.NewGenericRowGroupReader[spanRow](rgs[it.rg])
			it.rg++
			it.in.reset()
		}
		n, err := it.r.Read(it.rows)
		it.pos, it.n = 0, n
		if n > 0 {
			return nil
		}
		if err != io.EOF {
			if err == nil {
				err = io.ErrNoProgress
			}
			return fmt.Errorf("row group %d: %w", it.rg-1, err)
		}
		it.r.Close()
		it.r = nil
	}
}

func (it *traceIter) close() {
	if it.r != nil {
		it.r.Close()
		it.r = nil
	}
}
