package spanblock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/parquet-go/parquet-go"

	"github.com/meshlens/meshlens/traces"
)

// Block is an opened block directory. Its methods may be called
// concurrently.
type Block struct {
	dir   string
	meta  *Meta
	data  *os.File
	pf    *parquet.File
	index []rowGroupEntry
	bloom *bloom.BloomFilter

	tagsOnce sync.Once
	tags     *tagsFile
	tagsErr  error
}

var spanSchema = parquet.SchemaOf(spanRow{})

// Open opens the block in dir: it reads meta.json, checks that every file
// it lists has its size, reads the bloom filter and the index and opens
// data.parquet, checking its schema and row groups against the index.
func Open(dir string) (*Block, error) {
	m, err := ReadMeta(dir)
	if err != nil {
		return nil, fmt.Errorf("open trace block: %w", err)
	}
	sizes := map[string]int64{}
	for _, f := range m.Files {
		name := filepath.Join(dir, filepath.FromSlash(f.RelPath))
		fi, err := os.Stat(name)
		if err != nil {
			return nil, fmt.Errorf("open trace block: %w", err)
		}
		if fi.Size() != f.SizeBytes {
			return nil, fmt.Errorf("open trace block: %s has %d bytes, meta.json says %d", name, fi.Size(), f.SizeBytes)
		}
		sizes[f.RelPath] = f.SizeBytes
	}
	for _, name := range []string{DataFilename, BloomFilename, IndexFilename, TagsFilename} {
		if _, ok := sizes[name]; !ok {
			return nil, fmt.Errorf("open trace block %s: meta.json lists no %s", dir, name)
		}
	}
	b := &Block{dir: dir, meta: m}
	if b.bloom, err = readSmallFile(filepath.Join(dir, BloomFilename), decodeBloom); err != nil {
		return nil, fmt.Errorf("open trace block: %w", err)
	}
	if b.index, err = readSmallFile(filepath.Join(dir, IndexFilename), decodeIndex); err != nil {
		return nil, fmt.Errorf("open trace block: %w", err)
	}
	dataName := filepath.Join(dir, DataFilename)
	if b.data, err = os.Open(dataName); err != nil {
		return nil, fmt.Errorf("open trace block: %w", err)
	}
	if err := b.openData(b.data, sizes[DataFilename]); err != nil {
		b.data.Close()
		return nil, fmt.Errorf("open trace block %s: %w", dataName, err)
	}
	return b, nil
}

// openData opens data.parquet through r and checks it against the index
// and meta.json. r may be any io.ReaderAt (a cache, an object).
func (b *Block) openData(r io.ReaderAt, size int64) (err error) {
	defer recoverErr(&err)
	pf, err := parquet.OpenFile(r, size, parquet.SkipBloomFilters(true), parquet.FileSchema(spanSchema))
	if err != nil {
		return err
	}
	if !parquet.EqualNodes(pf.Schema(), spanSchema) {
		return fmt.Errorf("unexpected schema %s", pf.Schema())
	}
	rgs := pf.RowGroups()
	if len(rgs) != len(b.index) {
		return fmt.Errorf("%d row groups, the index has %d", len(rgs), len(b.index))
	}
	var spans, ntraces int64
	for i, rg := range rgs {
		if rg.NumRows() != int64(b.index[i].Spans) {
			return fmt.Errorf("row group %d has %d rows, the index says %d", i, rg.NumRows(), b.index[i].Spans)
		}
		spans += rg.NumRows()
		ntraces += int64(b.index[i].Traces)
	}
	if spans != int64(b.meta.Spans) || ntraces != int64(b.meta.Traces) {
		return fmt.Errorf("%d spans in %d traces, meta.json says %d in %d", spans, ntraces, b.meta.Spans, b.meta.Traces)
	}
	b.pf = pf
	return nil
}

// maxSmallFileBytes bounds the bloom and index files read whole.
const maxSmallFileBytes = 1 << 30

func readSmallFile[T any](name string, decode func([]byte) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(name)
	if err != nil {
		return zero, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return zero, err
	}
	if fi.Size() > maxSmallFileBytes {
		return zero, fmt.Errorf("%s: %d bytes, more than %d", name, fi.Size(), maxSmallFileBytes)
	}
	buf := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, buf); err != nil {
		return zero, fmt.Errorf("read %s: %w", name, err)
	}
	v, err := decode(buf)
	if err != nil {
		return zero, fmt.Errorf("decode %s: %w", name, err)
	}
	return v, nil
}

// recoverErr turns a panic of the Parquet reader on damaged data into an
// error: blocks come from a shared bucket and must not crash the process.
func recoverErr(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("damaged data: %v", r)
	}
}

// Meta is the block's meta.json.
func (b *Block) Meta() *Meta { return b.meta }

// Dir is the block's directory.
func (b *Block) Dir() string { return b.dir }

// Close closes the block's data file.
func (b *Block) Close() error {
	if err := b.data.Close(); err != nil {
		return fmt.Errorf("close trace block %s: %w", b.dir, err)
	}
	return nil
}

// Trace returns the trace's spans starting in tr (zero tr: all), sorted by
// start, or (nil, nil) when the block doesn't hold it. It tests the bloom
// filter, then the index's trace id bounds, and reads only the pages that
// hold the trace's rows.
func (b *Block) Trace(ctx context.Context, id traces.TraceID, tr traces.TimeRange) (_ []traces.Span, err error) {
	if !b.bloom.Test(id[:]) {
		return nil, nil
	}
	i := sort.Search(len(b.index), func(i int) bool { return bytes.Compare(b.index[i].MaxID[:], id[:]) >= 0 })
	if i == len(b.index) || bytes.Compare(b.index[i].MinID[:], id[:]) > 0 || !tr.Overlaps(b.index[i].MinStart, b.index[i].MaxStart) {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer recoverErr(&err)
	defer func() {
		if err != nil {
			err = fmt.Errorf("read trace %s from %s: %w", id, filepath.Join(b.dir, DataFilename), err)
		}
	}()
	rg := b.pf.RowGroups()[i]
	lo, hi, err := findRows(rg, id)
	if err != nil || lo == hi {
		return nil, err
	}
	r := parquet.NewGenericRowGroupReader[spanRow](rg)
	defer r.Close()
	if err := r.SeekToRow(lo); err != nil {
		return nil, err
	}
	rows := make([]spanRow, hi-lo)
	if n, err := readFull(r, rows); err != nil {
		return nil, fmt.Errorf("read rows %d-%d: %d read: %w", lo, hi, n, err)
	}
	var in interner
	var spans []traces.Span
	for k := range rows {
		if rows[k].TraceID != id {
			return nil, fmt.Errorf("row %d has trace id %x, want %x", lo+int64(k), rows[k].TraceID, id)
		}
		if inRange(tr, rows[k].Start) {
			spans = append(spans, rows[k].span(&in))
		}
	}
	return spans, nil
}

func inRange(tr traces.TimeRange, t uint64) bool {
	return (tr.Start == 0 || t >= tr.Start) && (tr.End == 0 || t <= tr.End)
}

// Contains sets found[i] for each ids[i] (sorted ascending) that the block
// holds a span of, starting in tr, leaving the other entries as they are.
// It reads each row group's trace ids once, and only of the row groups
// whose bounds and bloom filter admit one of the ids not found yet: the
// cost of many lookups in one pass.
func (b *Block) Contains(ctx context.Context, ids []traces.TraceID, tr traces.TimeRange, found []bool) (err error) {
	defer recoverErr(&err)
	var want []int // indexes into ids, sorted as ids
	for i := range b.index {
		e := &b.index[i]
		if !tr.Overlaps(e.MinStart, e.MaxStart) {
			continue
		}
		lo := sort.Search(len(ids), func(k int) bool { return bytes.Compare(ids[k][:], e.MinID[:]) >= 0 })
		want = want[:0]
		for k := lo; k < len(ids) && bytes.Compare(ids[k][:], e.MaxID[:]) <= 0; k++ {
			if !found[k] && b.bloom.Test(ids[k][:]) {
				want = append(want, k)
			}
		}
		if len(want) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := containsRows(b.pf.RowGroups()[i], ids, want, found); err != nil {
			return fmt.Errorf("read trace ids from %s: %w", filepath.Join(b.dir, DataFilename), err)
		}
	}
	return nil
}

// containsRows merges the row group's sorted trace ids with ids[want...]
// and sets found for those present.
func containsRows(rg parquet.RowGroup, ids []traces.TraceID, want []int, found []bool) error {
	pages := rg.ColumnChunks()[0].Pages()
	defer pages.Close()
	w := 0
	for w < len(want) {
		page, err := pages.ReadPage()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		values := page.Data()
		data, size := values.FixedLenByteArray()
		if size != len(traces.TraceID{}) || int64(len(data)) != page.NumRows()*int64(size) {
			parquet.Release(page)
			return fmt.Errorf("trace_id page of %d rows has %d bytes of %d-byte values", page.NumRows(), len(data), size)
		}
		for k := 0; k < len(data) && w < len(want); {
			switch c := bytes.Compare(data[k:k+size], ids[want[w]][:]); {
			case c < 0:
				k += size
			case c == 0:
				found[want[w]] = true
				w++
			default:
				w++
			}
		}
		parquet.Release(page)
	}
	return nil
}

// findRows returns the rows [lo, hi) of id in the row group, reading only
// the trace_id pages whose bounds in the column index can hold it.
func findRows(rg parquet.RowGroup, id traces.TraceID) (lo, hi int64, err error) {
	chunk := rg.ColumnChunks()[0]
	first, last, firstRow := 0, -1, int64(0)
	ci, cerr := chunk.ColumnIndex()
	oi, oerr := chunk.OffsetIndex()
	if cerr == nil && oerr == nil && ci.NumPages() == oi.NumPages() {
		first = sort.Search(ci.NumPages(), func(p int) bool { return bytes.Compare(ci.MaxValue(p).ByteArray(), id[:]) >= 0 })
		last = first
		for last < ci.NumPages() && bytes.Compare(ci.MinValue(last).ByteArray(), id[:]) <= 0 {
			last++
		}
		if first == last {
			return 0, 0, nil
		}
		firstRow = oi.FirstRowIndex(first)
	}
	pages := chunk.Pages()
	defer pages.Close()
	if err := pages.SeekToRow(firstRow); err != nil {
		return 0, 0, err
	}
	row, found := firstRow, false
	for p := first; last < 0 || p < last; p++ {
		page, err := pages.ReadPage()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, err
		}
		values := page.Data()
		data, size := values.FixedLenByteArray()
		if size != len(id) || int64(len(data)) != page.NumRows()*int64(size) {
			parquet.Release(page)
			return 0, 0, fmt.Errorf("trace_id page of %d rows has %d bytes of %d-byte values", page.NumRows(), len(data), size)
		}
		for k := 0; k < len(data); k += size {
			switch c := bytes.Compare(data[k:k+size], id[:]); {
			case c == 0 && !found:
				lo, found = row, true
			case c > 0:
				parquet.Release(page)
				if !found {
					return 0, 0, nil
				}
				return lo, row, nil
			}
			row++
		}
		parquet.Release(page)
	}
	if !found {
		return 0, 0, nil
	}
	return lo, row, nil
}

// readFull reads len(rows) rows, as io.ReadFull reads bytes.
func readFull[T any](r *parquet.GenericReader[T], rows []T) (int, error) {
	n := 0
	for n < len(rows) {
		k, err := r.Read(rows[n:])
		n += k
		if n == len(rows) {
			return n, nil
		}
		if err == io.EOF {
			return n, io.ErrUnexpectedEOF
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

// Traces calls fn with each trace (every span the block holds of it,
// sorted by start) that has a span starting in tr, in trace id order, until
// fn returns false. fn must not keep the slice after it returns.
func (b *Block) Traces(ctx context.Context, tr traces.TimeRange, fn func([]traces.Span) bool) error {
	for i, rg := range b.pf.RowGroups() {
		if !tr.Overlaps(b.index[i].MinStart, b.index[i].MaxStart) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		more, err := scanRowGroup(ctx, rg, tr, fn)
		if err != nil {
			return fmt.Errorf("read traces from %s, row group %d: %w", filepath.Join(b.dir, DataFilename), i, err)
		}
		if !more {
			return nil
		}
	}
	return nil
}

const scanBatchRows = 512

// scanRowGroup passes the row group's traces with a span in tr to fn. It
// returns false when fn asked to stop.
func scanRowGroup(ctx context.Context, rg parquet.RowGroup, tr traces.TimeRange, fn func([]traces.Span) bool) (_ bool, err error) {
	defer recoverErr(&err)
	r := parquet.NewGenericRowGroupReader[spanRow](rg)
	defer r.Close()
	var (
		in     interner
		rows   = make([]spanRow, scanBatchRows)
		trace  []traces.Span
		cur    traces.TraceID
		inTR   bool
		nrows  int64
		prev   traces.TraceID
		sorted = true
	)
	emit := func() bool {
		if len(trace) == 0 || !inTR {
			return true
		}
		return fn(trace)
	}
	for {
		n, err := r.Read(rows)
		for k := range rows[:n] {
			row := &rows[k]
			if row.TraceID != cur || len(trace) == 0 {
				if nrows > 0 && bytes.Compare(row.TraceID[:], prev[:]) < 0 {
					sorted = false
				}
				if !emit() {
					return false, nil
				}
				trace, cur, inTR = trace[:0], row.TraceID, false
			}
			prev = row.TraceID
			nrows++
			inTR = inTR || inRange(tr, row.Start)
			trace = append(trace, row.span(&in))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, err
		}
		if n == 0 {
			return false, io.ErrNoProgress
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
	if !sorted {
		return false, errors.New("rows not sorted by trace id")
	}
	if nrows != rg.NumRows() {
		return false, fmt.Errorf("read %d rows of %d", nrows, rg.NumRows())
	}
	return emit(), nil
}

// TagValues lists distinct values of the attribute key in the scope (""
// both scopes), sorted by text, at most limit (0: no limit). It reads
// tags.json, which keeps at most WriteOptions.MaxTagValues values per key
// and no value longer than 256 bytes.
func (b *Block) TagValues(ctx context.Context, scope traces.Scope, key string, limit int) ([]traces.Attr, error) {
	b.tagsOnce.Do(func() {
		name := filepath.Join(b.dir, TagsFilename)
		data, err := os.ReadFile(name)
		if err != nil {
			b.tagsErr = fmt.Errorf("read tag values: %w", err)
			return
		}
		var t tagsFile
		if err := json.Unmarshal(data, &t); err != nil {
			b.tagsErr = fmt.Errorf("read tag values %s: %w", name, err)
			return
		}
		b.tags = &t
	})
	if b.tagsErr != nil {
		return nil, b.tagsErr
	}
	var vals []tagValue
	if scope == "" || scope == traces.ScopeSpan {
		if tv := b.tags.Span[key]; tv != nil {
			vals = append(vals, tv.Values...)
		}
	}
	if scope == "" || scope == traces.ScopeResource {
		if tv := b.tags.Resource[key]; tv != nil {
			vals = append(vals, tv.Values...)
		}
	}
	slices.SortFunc(vals, compareTagValues)
	vals = slices.Compact(vals)
	if limit > 0 && len(vals) > limit {
		vals = vals[:limit]
	}
	attrs := make([]traces.Attr, 0, len(vals))
	for _, v := range vals {
		a, err := v.attr(key)
		if err != nil {
			return nil, fmt.Errorf("read tag values %s: %w", filepath.Join(b.dir, TagsFilename), err)
		}
		attrs = append(attrs, a)
	}
	return attrs, nil
}
