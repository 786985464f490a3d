package block

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

	"github.com/prometheus/prometheus/model/labels"
	promtsdb "github.com/prometheus/prometheus/tsdb"
)

// Names of the files of a metric block, the same in a local block
// directory and under <ULID>/ in the bucket (the Thanos bucket layout).
// MetaFilename and DeletionMarkFilename are declared with the generic
// block operations.
const (
	IndexFilename         = "index"
	ChunksDirname         = "chunks"
	NoCompactMarkFilename = "no-compact-mark.json"
)

// Versions of the JSON documents of a block. Thanos accepts only these.
const (
	// MetaVersion1 is the version of Prometheus's part of meta.json.
	MetaVersion1 = 1
	// ThanosVersion1 is the version of the thanos section of meta.json.
	ThanosVersion1 = 1
	// MarkVersion1 is the version of deletion-mark.json and no-compact-mark.json.
	MarkVersion1 = 1
)

// Resolutions of downsampled blocks in milliseconds, the values of
// thanos.downsample.resolution in meta.json, as Thanos's compactor makes
// them.
const (
	ResolutionRaw = int64(0)
	Resolution5m  = int64(5 * time.Minute / time.Millisecond)
	Resolution1h  = int64(time.Hour / time.Millisecond)
)

// SourceType names what put a block into the bucket (Thanos's
// metadata.SourceType). Thanos shows it but does not act on it.
type SourceType string

const (
	// SourceShipper is the source of blocks that the shipper uploads:
	// level-1 blocks cut from the head that remote write fills, what Thanos
	// marks "receive" (or "sidecar" for a Prometheus beside a sidecar). A
	// distinct name tells an operator which blocks meshlens wrote.
	SourceShipper SourceType = "meshlens"
	// SourceCompactor is the source of the blocks the bucket compactor
	// makes, Thanos's metadata.CompactorSource.
	SourceCompactor SourceType = "compactor"
)

// Meta is a block's meta.json as Thanos reads and writes it: Prometheus's
// BlockMeta with a thanos section (github.com/thanos-io/thanos
// pkg/block/metadata.Meta, same field names and JSON layout).
type Meta struct {
	promtsdb.BlockMeta

	Thanos ThanosMeta `json:"thanos"`
}

// ThanosMeta is the thanos section of meta.json.
type ThanosMeta struct {
	// Version is ThanosVersion1; Thanos reads an absent version as 1.
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
	// path. Empty for blocks written before Thanos recorded it.
	Files []File `json:"files,omitempty"`
	// IndexStats is written by Thanos's compactor; the shipper leaves it
	// empty, as Thanos's shipper does.
	IndexStats IndexStats `json:"index_stats,omitempty"`
}

// ThanosDownsample is the resolution of a block's samples in milliseconds;
// ResolutionRaw (0) is raw data.
type ThanosDownsample struct {
	Resolution int64 `json:"resolution"`
}

// File is one file of a block, relative to the block directory.
type File struct {
	RelPath string `json:"rel_path"`
	// SizeBytes is 0, and omitted, for meta.json and for files of blocks
	// written before Thanos recorded sizes.
	SizeBytes int64 `json:"size_bytes,omitempty"`
}

// IndexStats are the index sizes Thanos's compactor records.
type IndexStats struct {
	SeriesMaxSize int64 `json:"series_max_size,omitempty"`
	ChunkMaxSize  int64 `json:"chunk_max_size,omitempty"`
}

// ReadPrometheusMeta reads Prometheus's meta.json in the block directory
// dir.
func ReadPrometheusMeta(dir string) (*promtsdb.BlockMeta, error) {
	b, err := os.ReadFile(filepath.Join(dir, MetaFilename))
	if err != nil {
		return nil, err
	}
	var m promtsdb.BlockMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(dir, MetaFilename), err)
	}
	if m.Version != MetaVersion1 {
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
	bm, err := ReadPrometheusMeta(dir)
	if err != nil {
		return nil, err
	}
	segments, files, err := gatherFiles(dir)
	if err != nil {
		return nil, err
	}
	return &Meta{
		BlockMeta: *bm,
		Thanos: ThanosMeta{
			Version:      ThanosVersion1,
			Labels:       lset.Map(),
			Downsample:   ThanosDownsample{Resolution: ResolutionRaw},
			Source:       source,
			SegmentFiles: segments,
			Files:        files,
		},
	}, nil
}

// WriteMeta writes m as dir/meta.json, with its files section (and
// segment files) set to the files in dir: chunks, index and meta.json, as
// Thanos's GatherFileStats lists them.
func WriteMeta(dir string, m *Meta) error {
	b, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("encode meta.json: %w", err)
	}
	name := filepath.Join(dir, MetaFilename)
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return err
	}
	segments, files, err := gatherFiles(dir)
	if err != nil {
		return fmt.Errorf("list block files: %w", err)
	}
	m.Thanos.Files, m.Thanos.SegmentFiles = files, segments
	if b, err = m.Marshal(); err != nil {
		return fmt.Errorf("encode meta.json: %w", err)
	}
	return os.WriteFile(name, b, 0o644)
}

// gatherFiles lists the files of the block in dir the way Thanos's
// GatherFileStats does: every file in chunks/ and the index with their
// sizes, and meta.json without one, sorted by path. segments are the chunk
// file names.
func gatherFiles(dir string) (segments []string, files []File, err error) {
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
		files = append(files, File{RelPath: ChunksDirname + "/" + e.Name(), SizeBytes: fi.Size()})
	}
	fi, err := os.Stat(filepath.Join(dir, IndexFilename))
	if err != nil {
		return nil, nil, err
	}
	files = append(files, File{RelPath: IndexFilename, SizeBytes: fi.Size()})
	if _, err := os.Stat(filepath.Join(dir, MetaFilename)); err != nil {
		return nil, nil, err
	}
	files = append(files, File{RelPath: MetaFilename})
	sort.Strings(segments)
	sort.Slice(files, func(i, j int) bool { return files[i].RelPath < files[j].RelPath })
	return segments, files, nil
}

// Marshal encodes m as Thanos writes meta.json: tab-indented, with a
// trailing newline.
func (m *Meta) Marshal() ([]byte, error) {
	return marshalIndent(m)
}

// ExpectedSize is the size of the block's files by its meta.json, 0 if
// meta.json does not list them.
func (m *Meta) ExpectedSize() int64 {
	var n int64
	for _, f := range m.Thanos.Files {
		n += f.SizeBytes
	}
	return n
}

// ReadMeta decodes a meta.json with a thanos section, as read from the
// bucket, and checks both versions.
func ReadMeta(r io.Reader) (*Meta, error) {
	var m Meta
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode meta.json: %w", err)
	}
	if m.Version != MetaVersion1 {
		return nil, fmt.Errorf("unexpected meta.json version %d", m.Version)
	}
	if v := m.Thanos.Version; v != 0 && v != ThanosVersion1 {
		return nil, fmt.Errorf("unexpected meta.json thanos section version %d", v)
	}
	if m.Thanos.Labels == nil {
		m.Thanos.Labels = map[string]string{}
	}
	return &m, nil
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
