package tsdb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	promtsdb "github.com/prometheus/prometheus/tsdb"
)

// Names of the files of a block, the same in a local block directory and
// under <ULID>/ in the bucket (the Thanos bucket layout).
const (
	MetaFilename          = "meta.json"
	IndexFilename         = "index"
	ChunksDirname         = "chunks"
	DeletionMarkFilename  = "deletion-mark.json"
	NoCompactMarkFilename = "no-compact-mark.json"
)

// Versions of the JSON documents of a block. Thanos accepts only these.
const (
	// BlockMetaVersion1 is the version of Prometheus's part of meta.json.
	BlockMetaVersion1 = 1
	// ThanosMetaVersion1 is the version of the thanos section of meta.json.
	ThanosMetaVersion1 = 1
	// MarkVersion1 is the version of deletion-mark.json and no-compact-mark.json.
	MarkVersion1 = 1
)

// SourceType names what put a block into the bucket (Thanos's
// metadata.SourceType). Thanos shows it but does not act on it.
type SourceType string

// SourceShipper is the source of blocks that the Shipper uploads: level-1
// blocks cut from the head that remote write fills, what Thanos marks
// "receive" (or "sidecar" for a Prometheus beside a sidecar). A distinct name
// tells an operator which blocks meshlens wrote.
const SourceShipper SourceType = "meshlens"

// Meta is a block's meta.json as Thanos reads and writes it: Prometheus's
// BlockMeta with a thanos section (github.com/thanos-io/thanos
// pkg/block/metadata.Meta, same field names and JSON layout).
type Meta struct {
	promtsdb.BlockMeta

	Thanos ThanosMeta `json:"thanos"`
}

// ThanosMeta is the thanos section of meta.json.
type ThanosMeta struct {
	// Version is ThanosMetaVersion1; Thanos reads an absent version as 1.
	Version int `json:"version,omitempty"`
	// Labels are the external labels of the producer; Thanos refuses a block
	// without them and groups blocks by them for compaction.
	Labels     map[string]string `json:"labels"`
	Downsample ThanosDownsample  `json:"downsample"`
	// Source is what uploaded the block.
	Source SourceType `json:"source"`
	// SegmentFiles are the names of the files in chunks/, sorted. Thanos
	// keeps writing them for older readers.
	SegmentFiles []string `json:"segment_files,omitempty"`
	// Files lists chunks/*, index and meta.json (without a size), sorted by
	// path.
	Files []BlockFile `json:"files,omitempty"`
	// IndexStats is written by Thanos's compactor; the shipper leaves it
	// empty, as Thanos's shipper does.
	IndexStats IndexStats `json:"index_stats,omitempty"`
}

// ThanosDownsample is the resolution of a block's samples in milliseconds;
// 0 is raw data.
type ThanosDownsample struct {
	Resolution int64 `json:"resolution"`
}

// BlockFile is one file of a block, relative to the block directory.
type BlockFile struct {
	RelPath string `json:"rel_path"`
	// SizeBytes is 0, and omitted, for meta.json.
	SizeBytes int64 `json:"size_bytes,omitempty"`
}

// IndexStats are the index sizes Thanos's compactor records.
type IndexStats struct {
	SeriesMaxSize int64 `json:"series_max_size,omitempty"`
	ChunkMaxSize  int64 `json:"chunk_max_size,omitempty"`
}

// ReadBlockMeta reads Prometheus's meta.json in the block directory dir.
func ReadBlockMeta(dir string) (*promtsdb.BlockMeta, error) {
	b, err := os.ReadFile(filepath.Join(dir, MetaFilename))
	if err != nil {
		return nil, err
	}
	var m promtsdb.BlockMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(dir, MetaFilename), err)
	}
	if m.Version != BlockMetaVersion1 {
		return nil, fmt.Errorf("%s: unexpected meta version %d", filepath.Join(dir, MetaFilename), m.Version)
	}
	return &m, nil
}

// NewMeta returns the meta.json to upload for the block in dir: its own
// meta.json with a thanos section carrying the external labels lset (which
// must not be empty), resolution 0, source and the block's files as they
// are on disk now.
func NewMeta(dir string, lset labels.Labels, source SourceType) (*Meta, error) {
	if lset.IsEmpty() {
		return nil, errors.New("empty external labels: Thanos refuses blocks without them")
	}
	bm, err := ReadBlockMeta(dir)
	if err != nil {
		return nil, err
	}
	segments, files, err := blockFiles(dir)
	if err != nil {
		return nil, err
	}
	return &Meta{
		BlockMeta: *bm,
		Thanos: ThanosMeta{
			Version:      ThanosMetaVersion1,
			Labels:       lset.Map(),
			Downsample:   ThanosDownsample{Resolution: 0},
			Source:       source,
			SegmentFiles: segments,
			Files:        files,
		},
	}, nil
}

// blockFiles lists the files of the block in dir the way Thanos's
// GatherFileStats does: every file in chunks/ and the index with their
// sizes, and meta.json without one, sorted by path. segments are the chunk
// file names.
func blockFiles(dir string) (segments []string, files []BlockFile, err error) {
	entries, err := os.ReadDir(filepath.Join(dir, ChunksDirname))
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, nil, err
		}
		segments = append(segments, e.Name())
		files = append(files, BlockFile{RelPath: ChunksDirname + "/" + e.Name(), SizeBytes: fi.Size()})
	}
	fi, err := os.Stat(filepath.Join(dir, IndexFilename))
	if err != nil {
		return nil, nil, err
	}
	files = append(files, BlockFile{RelPath: IndexFilename, SizeBytes: fi.Size()})
	if _, err := os.Stat(filepath.Join(dir, MetaFilename)); err != nil {
		return nil, nil, err
	}
	files = append(files, BlockFile{RelPath: MetaFilename})
	sort.Strings(segments)
	sort.Slice(files, func(i, j int) bool { return files[i].RelPath < files[j].RelPath })
	return segments, files, nil
}

// Marshal encodes m as Thanos writes meta.json: tab-indented, with a
// trailing newline.
func (m *Meta) Marshal() ([]byte, error) {
	return marshalIndent(m)
}

// ReadMeta decodes a meta.json with a thanos section, as read from the
// bucket, and checks both versions.
func ReadMeta(r io.Reader) (*Meta, error) {
	var m Meta
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode meta.json: %w", err)
	}
	if m.Version != BlockMetaVersion1 {
		return nil, fmt.Errorf("unexpected meta.json version %d", m.Version)
	}
	if v := m.Thanos.Version; v != 0 && v != ThanosMetaVersion1 {
		return nil, fmt.Errorf("unexpected meta.json thanos section version %d", v)
	}
	if m.Thanos.Labels == nil {
		m.Thanos.Labels = map[string]string{}
	}
	return &m, nil
}

// DeletionMark is deletion-mark.json: the block is to be deleted from the
// bucket once DeletionTime (Unix seconds) is old enough that no reader
// still uses it (Thanos's metadata.DeletionMark).
type DeletionMark struct {
	ID      ulid.ULID `json:"id"`
	Version int       `json:"version"`
	// Details says why, for people.
	Details      string `json:"details,omitempty"`
	DeletionTime int64  `json:"deletion_time"`
}

// NewDeletionMark returns the deletion mark of block id made at t.
func NewDeletionMark(id ulid.ULID, t time.Time, details string) DeletionMark {
	return DeletionMark{ID: id, Version: MarkVersion1, Details: details, DeletionTime: t.Unix()}
}

// NoCompactReason says why a block is excluded from compaction.
type NoCompactReason string

// The reasons Thanos writes.
const (
	NoCompactManual             NoCompactReason = "manual"
	NoCompactIndexSizeExceeding NoCompactReason = "index-size-exceeding"
	NoCompactOutOfOrderChunks   NoCompactReason = "block-index-out-of-order-chunk"
)

// NoCompactMark is no-compact-mark.json: the compactor leaves the block
// alone (Thanos's metadata.NoCompactMark). NoCompactTime is Unix seconds.
type NoCompactMark struct {
	ID            ulid.ULID       `json:"id"`
	Version       int             `json:"version"`
	Details       string          `json:"details,omitempty"`
	NoCompactTime int64           `json:"no_compact_time"`
	Reason        NoCompactReason `json:"reason"`
}

// NewNoCompactMark returns the no-compact mark of block id made at t.
func NewNoCompactMark(id ulid.ULID, t time.Time, reason NoCompactReason, details string) NoCompactMark {
	return NoCompactMark{ID: id, Version: MarkVersion1, Details: details, NoCompactTime: t.Unix(), Reason: reason}
}

// marshalIndent encodes v tab-indented with a trailing newline, as Thanos
// writes its JSON files.
func marshalIndent(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "\t")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
