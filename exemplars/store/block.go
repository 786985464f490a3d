package store

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/golang/snappy"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/tsdb/block"
)

// A block is a directory <ULID>/ holding meta.json and one file,
// "exemplars":
//
//	"MLEX" 0x01
//	a section per series, in the order of the index: pages of up to
//	  pageSize exemplars, highest value first, each
//	  uvarint length, 4 bytes crc32c, then snappy of: uvarint count,
//	  then per exemplar: varint t-MinTime, 8 bytes float64 value, labels
//	the index: snappy of
//	  uvarint series, then per series: labels, uvarint offset,
//	  uvarint length, varint minT-MinTime, varint maxT-MinTime,
//	  8 bytes max value, uvarint count
//	footer: 8 bytes index offset, 8 bytes index length, 4 bytes crc32c of
//	  the index, "MLEX"
//
// labels are uvarint count, then uvarint-length-prefixed names and values.
// Integers are little-endian. Sections sorted by value make "the highest
// exemplars of these series in this range" read only the sections of the
// matching series, and of each only its first pages when the range
// covers the block.
const (
	dataFile      = "exemplars"
	walSeqFile    = "wal-seq"
	formatVersion = 1
	footerSize    = 8 + 8 + 4 + 4
	pageSize      = 128
)

var magic = []byte("MLEX")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Meta is a block's meta.json.
type Meta struct {
	ULID    ulid.ULID `json:"ulid"`
	Version int       `json:"version"`
	// MinTime and MaxTime bound the exemplars' timestamps (milliseconds,
	// both inclusive).
	MinTime   int64 `json:"minTime"`
	MaxTime   int64 `json:"maxTime"`
	Series    int   `json:"series"`
	Exemplars int   `json:"exemplars"`
	// Period is the start of the block period the exemplars belong to.
	Period int64 `json:"period"`
}

// sample is one stored exemplar of a series.
type sample struct {
	t      int64
	v      float64
	labels labels.Labels
}

// series is a series' exemplars, in any order.
type series struct {
	lset labels.Labels
	ex   []sample
}

// indexEntry locates a series' section.
type indexEntry struct {
	lset       labels.Labels
	off, len   uint64
	minT, maxT int64
	maxV       float64
	count      int
}

// byValue orders exemplars highest value first, then oldest first.
func byValue(a, b sample) int {
	switch {
	case a.v > b.v:
		return -1
	case a.v < b.v:
		return 1
	}
	return cmpInt(a.t, b.t)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeBlock writes the exemplars of ss into a new block under dir and
// returns its meta. The series' exemplar slices are sorted in place.
func writeBlock(dir string, id ulid.ULID, period int64, seq uint64, ss []*series) (*Meta, error) {
	m := &Meta{ULID: id, Version: formatVersion, MinTime: math.MaxInt64, MaxTime: math.MinInt64, Period: period}
	for _, s := range ss {
		for _, e := range s.ex {
			m.MinTime, m.MaxTime = min(m.MinTime, e.t), max(m.MaxTime, e.t)
		}
		m.Exemplars += len(s.ex)
	}
	if m.Exemplars == 0 {
		return nil, errors.New("no exemplars")
	}
	slices.SortFunc(ss, func(a, b *series) int { return labels.Compare(a.lset, b.lset) })

	tmp := filepath.Join(dir, id.String()+".tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(tmp, 0o777); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(tmp, dataFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(magic)
	w.WriteByte(formatVersion)
	pos := uint64(len(magic) + 1)
	var buf, comp, hdr, index []byte
	for _, s := range ss {
		if len(s.ex) == 0 {
			continue
		}
		m.Series++
		slices.SortFunc(s.ex, byValue)
		minT, maxT := int64(math.MaxInt64), int64(math.MinInt64)
		start := pos
		for page := range slices.Chunk(s.ex, pageSize) {
			buf = binary.AppendUvarint(buf[:0], uint64(len(page)))
			for _, e := range page {
				buf = binary.AppendVarint(buf, e.t-m.MinTime)
				buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(e.v))
				buf = appendLabels(buf, e.labels)
				minT, maxT = min(minT, e.t), max(maxT, e.t)
			}
			comp = snappy.Encode(comp[:cap(comp)], buf)
			hdr := binary.AppendUvarint(hdr[:0], uint64(len(comp)))
			hdr = binary.LittleEndian.AppendUint32(hdr, crc32.Checksum(comp, castagnoli))
			w.Write(hdr)
			w.Write(comp)
			pos += uint64(len(hdr) + len(comp))
		}
		index = appendLabels(index, s.lset)
		index = binary.AppendUvarint(index, start)
		index = binary.AppendUvarint(index, pos-start)
		index = binary.AppendVarint(index, minT-m.MinTime)
		index = binary.AppendVarint(index, maxT-m.MinTime)
		index = binary.LittleEndian.AppendUint64(index, math.Float64bits(s.ex[0].v))
		index = binary.AppendUvarint(index, uint64(len(s.ex)))
	}
	ci := snappy.Encode(nil, append(binary.AppendUvarint(nil, uint64(m.Series)), index...))
	var footer []byte
	footer = binary.LittleEndian.AppendUint64(footer, pos)
	footer = binary.LittleEndian.AppendUint64(footer, uint64(len(ci)))
	footer = binary.LittleEndian.AppendUint32(footer, crc32.Checksum(ci, castagnoli))
	footer = append(footer, magic...)
	w.Write(ci)
	if _, err := w.Write(footer); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	// The last WAL record the block holds the period's exemplars of: the
	// replay skips them. Only blocks cut here have it, and it is never
	// shipped.
	if err := block.WriteFileAtomic(filepath.Join(tmp, walSeqFile), strconv.AppendUint(nil, seq, 10)); err != nil {
		return nil, err
	}
	if err := writeMeta(tmp, m); err != nil {
		return nil, err
	}
	final := filepath.Join(dir, id.String())
	if err := os.Rename(tmp, final); err != nil {
		return nil, err
	}
	return m, block.SyncDir(dir)
}

func writeMeta(dir string, m *Meta) error {
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return err
	}
	return block.WriteFileAtomic(filepath.Join(dir, block.MetaFilename), b)
}

func readMeta(dir string) (*Meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, block.MetaFilename))
	if err != nil {
		return nil, err
	}
	return parseMeta(b)
}

func parseMeta(b []byte) (*Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", block.ErrInvalidMeta, err)
	}
	if m.Version != formatVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", block.ErrInvalidMeta, m.Version, formatVersion)
	}
	if m.MinTime > m.MaxTime {
		return nil, fmt.Errorf("%w: minTime %d after maxTime %d", block.ErrInvalidMeta, m.MinTime, m.MaxTime)
	}
	return &m, nil
}

func appendLabels(b []byte, ls labels.Labels) []byte {
	b = binary.AppendUvarint(b, uint64(ls.Len()))
	ls.Range(func(l labels.Label) {
		b = binary.AppendUvarint(b, uint64(len(l.Name)))
		b = append(b, l.Name...)
		b = binary.AppendUvarint(b, uint64(len(l.Value)))
		b = append(b, l.Value...)
	})
	return b
}
