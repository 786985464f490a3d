package spanblock

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/oklog/ulid/v2"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/meshlens/meshlens/traces"
)

type compressCodec = compress.Codec

// defaultPageBufferBytes is the writer's page buffer per column; it bounds
// the uncompressed size of a page, which is what a lookup reads per column.
const defaultPageBufferBytes = 32 << 10

// writer writes one block, trace by trace in trace id order.
type writer struct {
	o   WriteOptions
	dir string
	id  ulid.ULID

	f   *os.File
	buf *bufio.Writer
	pw  *parquet.GenericWriter[spanRow]

	rows    []spanRow
	index   []rowGroupEntry
	cur     rowGroupEntry // the row group being written; Traces == 0 when empty
	lastID  traces.TraceID
	bloom   *bloom.BloomFilter
	sum     *summary
	meta    Meta
	started bool
}

// newWriter creates parentDir/<id>/ (refusing a complete block there) for
// about expectedTraces traces (sizing the bloom filter).
func newWriter(parentDir string, id ulid.ULID, expectedTraces int, o WriteOptions) (*writer, error) {
	o = o.withDefaults()
	dir := filepath.Join(parentDir, id.String())
	if _, err := os.Stat(filepath.Join(dir, MetaFilename)); err == nil {
		return nil, fmt.Errorf("write trace block %s: a complete block is already there", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write trace block: %w", err)
	}
	name := filepath.Join(dir, DataFilename)
	f, err := os.Create(name)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("write trace block: %w", err)
	}
	codec := o.codec
	if codec == nil {
		codec = &zstd.Codec{Level: zstd.SpeedDefault}
	}
	pageBytes := o.pageBufferBytes
	if pageBytes <= 0 {
		pageBytes = defaultPageBufferBytes
	}
	w := &writer{
		o: o, dir: dir, id: id, f: f,
		buf:   bufio.NewWriterSize(f, 1<<20),
		bloom: bloom.NewWithEstimates(uint(max(expectedTraces, 1)), o.BloomFPRate),
		sum:   newSummary(o),
	}
	w.pw = parquet.NewGenericWriter[spanRow](w.buf,
		parquet.Compression(codec),
		parquet.PageBufferSize(pageBytes),
		parquet.WriteBufferSize(0),
		parquet.CreatedBy("meshlens", "", ""),
		parquet.KeyValueMetadata("meshlens.block.ulid", id.String()),
	)
	return w, nil
}

// addTrace writes the spans of one trace, sorted by start. Traces must come
// in ascending trace id order.
func (w *writer) addTrace(spans []*traces.Span) error {
	if len(spans) == 0 {
		return nil
	}
	id := spans[0].TraceID
	if w.started && bytes.Compare(id[:], w.lastID[:]) <= 0 {
		return fmt.Errorf("write trace block %s: trace %s after %s, not in ascending order", w.dir, id, w.lastID)
	}
	if w.cur.Traces > 0 && int(w.cur.Spans)+len(spans) > w.o.RowGroupSpans {
		if err := w.flushRowGroup(); err != nil {
			return err
		}
	}
	w.rows = slices.Grow(w.rows[:0], len(spans))[:len(spans)]
	minStart, maxStart := spans[0].StartUnixNano, spans[0].StartUnixNano
	for i, s := range spans {
		w.rows[i].fromSpan(s)
		w.sum.add(s)
		minStart, maxStart = min(minStart, s.StartUnixNano), max(maxStart, s.StartUnixNano)
	}
	if _, err := w.pw.Write(w.rows); err != nil {
		return fmt.Errorf("write trace block %s: %w", filepath.Join(w.dir, DataFilename), err)
	}
	if w.cur.Traces == 0 {
		w.cur.MinID, w.cur.MinStart, w.cur.MaxStart = id, minStart, maxStart
	}
	if w.meta.Traces == 0 {
		w.meta.MinTime, w.meta.MaxTime = minStart, maxStart
	}
	w.cur.MinStart, w.cur.MaxStart = min(w.cur.MinStart, minStart), max(w.cur.MaxStart, maxStart)
	w.meta.MinTime, w.meta.MaxTime = min(w.meta.MinTime, minStart), max(w.meta.MaxTime, maxStart)
	w.cur.MaxID = id
	w.cur.Traces++
	w.cur.Spans += uint32(len(spans))
	w.bloom.Add(id[:])
	w.meta.Traces++
	w.meta.Spans += len(spans)
	w.lastID, w.started = id, true
	return nil
}

func (w *writer) flushRowGroup() error {
	if w.cur.Traces == 0 {
		return nil
	}
	if err := w.pw.Flush(); err != nil {
		return fmt.Errorf("write trace block %s: %w", filepath.Join(w.dir, DataFilename), err)
	}
	w.index = append(w.index, w.cur)
	w.cur = rowGroupEntry{}
	return nil
}

// abort closes and removes the partial block.
func (w *writer) abort() {
	w.f.Close()
	os.RemoveAll(w.dir)
}

// finish closes data.parquet, writes the other files and then meta.json.
func (w *writer) finish(level int, sources []ulid.ULID) (_ *Meta, err error) {
	defer func() {
		if err != nil {
			w.abort()
		}
	}()
	dataName := filepath.Join(w.dir, DataFilename)
	if err := w.flushRowGroup(); err != nil {
		return nil, err
	}
	if err := w.pw.Close(); err != nil {
		return nil, fmt.Errorf("write trace block %s: %w", dataName, err)
	}
	if err := w.buf.Flush(); err != nil {
		return nil, fmt.Errorf("write trace block %s: %w", dataName, err)
	}
	if err := w.f.Sync(); err != nil {
		return nil, fmt.Errorf("write trace block %s: %w", dataName, err)
	}
	if err := w.f.Close(); err != nil {
		return nil, fmt.Errorf("write trace block %s: %w", dataName, err)
	}
	tags, err := w.sum.tagsJSON()
	if err != nil {
		return nil, fmt.Errorf("write trace block %s: %w", filepath.Join(w.dir, TagsFilename), err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{BloomFilename, encodeBloom(w.bloom)},
		{IndexFilename, encodeIndex(w.index)},
		{TagsFilename, tags},
	} {
		if err := writeFileSync(filepath.Join(w.dir, f.name), f.data); err != nil {
			return nil, fmt.Errorf("write trace block: %w", err)
		}
	}

	m := &w.meta
	m.Version, m.ULID, m.Level = MetaVersion, w.id, level
	m.Sources = slices.Clone(sources)
	for _, name := range []string{BloomFilename, DataFilename, IndexFilename, TagsFilename} {
		fi, err := os.Stat(filepath.Join(w.dir, name))
		if err != nil {
			return nil, fmt.Errorf("write trace block: %w", err)
		}
		m.Files = append(m.Files, File{RelPath: name, SizeBytes: fi.Size()})
	}
	w.sum.fill(m)
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("write trace block %s: %w", filepath.Join(w.dir, MetaFilename), err)
	}
	if err := writeFileAtomic(filepath.Join(w.dir, MetaFilename), b); err != nil {
		return nil, fmt.Errorf("write trace block: %w", err)
	}
	return m, nil
}

func writeFileSync(name string, data []byte) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return f.Close()
}

// writeFileAtomic writes name through a synced temporary file renamed into
// place, then syncs the directory.
func writeFileAtomic(name string, data []byte) error {
	tmp := name + ".tmp"
	if err := writeFileSync(tmp, data); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(name))
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}
