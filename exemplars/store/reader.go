package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
)

// errCorrupt says a block's file does not decode.
var errCorrupt = errors.New("corrupt exemplar block")

// maxIndexBytes bounds the decoded index of one block.
const maxIndexBytes = 1 << 30

// blockReader reads a block's sections; its index is in memory.
type blockReader struct {
	r     io.ReaderAt
	size  int64
	min   int64 // the block's MinTime: the base of every timestamp
	index []indexEntry
	close func() error
}

// openBlock opens the exemplar file of the block in dir.
func openBlock(dir string, m *Meta) (*blockReader, error) {
	f, err := os.Open(filepath.Join(dir, dataFile))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	b, err := newBlockReader(f, fi.Size(), m.MinTime)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("block %s: %w", m.ULID, err)
	}
	b.close = f.Close
	return b, nil
}

// newBlockReader reads the footer and the index of a block file of the
// given size whose timestamps count from minT.
func newBlockReader(r io.ReaderAt, size, minT int64) (*blockReader, error) {
	if size < int64(len(magic))+1+footerSize {
		return nil, fmt.Errorf("%w: %d bytes", errCorrupt, size)
	}
	head := make([]byte, len(magic)+1)
	if _, err := r.ReadAt(head, 0); err != nil {
		return nil, err
	}
	if !bytes.Equal(head[:len(magic)], magic) || head[len(magic)] != formatVersion {
		return nil, fmt.Errorf("%w: bad header", errCorrupt)
	}
	foot := make([]byte, footerSize)
	if _, err := r.ReadAt(foot, size-footerSize); err != nil {
		return nil, err
	}
	if !bytes.Equal(foot[20:], magic) {
		return nil, fmt.Errorf("%w: bad footer", errCorrupt)
	}
	off, n := binary.LittleEndian.Uint64(foot), binary.LittleEndian.Uint64(foot[8:])
	if off < uint64(len(head)) || n > uint64(size) || off+n != uint64(size-footerSize) {
		return nil, fmt.Errorf("%w: index at %d+%d in %d bytes", errCorrupt, off, n, size)
	}
	ci := make([]byte, n)
	if _, err := r.ReadAt(ci, int64(off)); err != nil {
		return nil, err
	}
	if crc32.Checksum(ci, castagnoli) != binary.LittleEndian.Uint32(foot[16:]) {
		return nil, fmt.Errorf("%w: index checksum", errCorrupt)
	}
	index, err := decodeSnappy(ci, maxIndexBytes)
	if err != nil {
		return nil, err
	}
	d := decoder{b: index}
	count := d.count(1)
	entries := make([]indexEntry, 0, count)
	for range count {
		var e indexEntry
		e.lset = d.labels()
		e.off, e.len = d.uvarint(), d.uvarint()
		e.minT, e.maxT = minT+d.varint(), minT+d.varint()
		e.maxV = d.float()
		e.count = int(d.uvarint())
		if d.err == nil && (e.off < uint64(len(head)) || e.len > off || e.off > off-e.len) {
			d.err = fmt.Errorf("%w: section at %d+%d beyond the data", errCorrupt, e.off, e.len)
		}
		if d.err != nil {
			break
		}
		entries = append(entries, e)
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d bytes after the index", errCorrupt, len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return &blockReader{r: r, size: size, min: minT, index: entries}, nil
}

// section reads the exemplars of e, highest value first, calling fn
// until it returns false; it reads the pages it needs only.
func (b *blockReader) section(e *indexEntry, fn func(s sample) bool) error {
	off, end := int64(e.off), int64(e.off+e.len)
	hdr := make([]byte, binary.MaxVarintLen64+4)
	seen := 0
	for off < end {
		h := hdr[:min(int64(len(hdr)), end-off)]
		if _, err := b.r.ReadAt(h, off); err != nil {
			return err
		}
		n, k := binary.Uvarint(h)
		if k <= 0 || len(h) < k+4 || n > uint64(end-off)-uint64(k+4) {
			return fmt.Errorf("%w: page header at %d", errCorrupt, off)
		}
		crc := binary.LittleEndian.Uint32(h[k:])
		off += int64(k + 4)
		comp := make([]byte, n)
		if _, err := b.r.ReadAt(comp, off); err != nil {
			return err
		}
		off += int64(n)
		if crc32.Checksum(comp, castagnoli) != crc {
			return fmt.Errorf("%w: page checksum", errCorrupt)
		}
		raw, err := decodeSnappy(comp, maxIndexBytes)
		if err != nil {
			return err
		}
		d := decoder{b: raw}
		count := d.count(10)
		for range count {
			s := sample{t: b.min + d.varint(), v: d.float(), labels: d.labels()}
			if d.err != nil {
				return d.err
			}
			seen++
			if !fn(s) {
				return nil
			}
		}
		if d.err != nil {
			return d.err
		}
	}
	if seen != e.count {
		return fmt.Errorf("%w: section holds %d exemplars, index says %d", errCorrupt, seen, e.count)
	}
	return nil
}

func (b *blockReader) Close() error {
	if b.close == nil {
		return nil
	}
	return b.close()
}

func decodeSnappy(b []byte, limit int) ([]byte, error) {
	n, err := snappy.DecodedLen(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %d bytes decoded", errCorrupt, n)
	}
	out, err := snappy.Decode(nil, b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return out, nil
}

// decoder reads the varints, floats and labels of blocks and WAL records;
// the first error sticks and every later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", errCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) fixed(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail("field")
		return make([]byte, n)
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) float() float64 {
	return math.Float64frombits(binary.LittleEndian.Uint64(d.fixed(8)))
}

func (d *decoder) uint64() uint64 { return binary.LittleEndian.Uint64(d.fixed(8)) }

// count reads a count of items that take at least min bytes each, so a
// corrupt count cannot make the caller allocate more than the input.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.err = fmt.Errorf("%w: count %d exceeds the %d bytes left", errCorrupt, n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("string")
	}
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) labels() labels.Labels {
	n := d.count(2)
	if d.err != nil || n == 0 {
		return labels.EmptyLabels()
	}
	b := labels.NewScratchBuilder(n)
	for range n {
		b.Add(d.str(), d.str())
	}
	if d.err != nil {
		return labels.EmptyLabels()
	}
	b.Sort()
	return b.Labels()
}
