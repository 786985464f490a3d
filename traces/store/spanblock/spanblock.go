// Package spanblock is the immutable trace block format: a directory
// <ULID>/ holding the spans in a Parquet file sorted by trace id, a
// trace-id bloom filter and a small row-group index, and meta.json
// (written last) with the block's time range, counts, lineage and
// summaries the query API lists without opening the data.
package spanblock

import (
	"context"
	"errors"

	"github.com/oklog/ulid/v2"

	"github.com/meshlens/meshlens/traces"
)

// Meta is a trace block's meta.json.
type Meta struct {
	Version int       `json:"version"`
	ULID    ulid.ULID `json:"ulid"`
	// MinTime and MaxTime are the earliest and latest span start.
	MinTime uint64 `json:"minTimeUnixNano"`
	MaxTime uint64 `json:"maxTimeUnixNano"`
	Traces  int    `json:"traces"`
	Spans   int    `json:"spans"`
	// Level is 1 for a block cut from the head, +1 per compaction.
	Level int `json:"level"`
	// Sources are the level-1 blocks whose spans the block holds.
	Sources []ulid.ULID `json:"sources"`
	// Files lists every file of the block but meta.json, with sizes.
	Files []File `json:"files"`

	Services     []string           `json:"services"`
	Operations   []ServiceOperation `json:"operations"`
	SpanTags     []string           `json:"spanTags"`
	ResourceTags []string           `json:"resourceTags"`
}

// File is a file of a block.
type File struct {
	RelPath   string `json:"relPath"`
	SizeBytes int64  `json:"sizeBytes"`
}

// ServiceOperation is a span name of a service with its kind.
type ServiceOperation struct {
	Service string      `json:"service"`
	Name    string      `json:"name"`
	Kind    traces.Kind `json:"kind"`
}

// WriteOptions tune how a block is written.
type WriteOptions struct {
	// RowGroupSpans is the number of spans per row group; zero means
	// DefaultRowGroupSpans.
	RowGroupSpans int
	// BloomFPRate is the bloom filter's false-positive rate; zero means 0.01.
	BloomFPRate float64
}

var errNotImplemented = errors.New("spanblock: not implemented")

// Write writes the spans as block id in parentDir/<id>/.
func Write(parentDir string, id ulid.ULID, spans []traces.Span, o WriteOptions) (*Meta, error) {
	return nil, errNotImplemented
}

// Merge writes one block holding the spans of all blocks.
func Merge(parentDir string, id ulid.ULID, blocks []*Block, o WriteOptions) (*Meta, error) {
	return nil, errNotImplemented
}

// Block is an opened block directory.
type Block struct {
	dir  string
	meta *Meta
}

// Open opens the block in dir.
func Open(dir string) (*Block, error) { return nil, errNotImplemented }

// ReadMeta reads dir/meta.json.
func ReadMeta(dir string) (*Meta, error) { return nil, errNotImplemented }

// Meta is the block's meta.json.
func (b *Block) Meta() *Meta { return b.meta }

// Dir is the block's directory.
func (b *Block) Dir() string { return b.dir }

// Trace returns the trace's spans starting in tr.
func (b *Block) Trace(ctx context.Context, id traces.TraceID, tr traces.TimeRange) ([]traces.Span, error) {
	return nil, errNotImplemented
}

// Traces calls fn with each trace that has a span starting in tr.
func (b *Block) Traces(ctx context.Context, tr traces.TimeRange, fn func([]traces.Span) bool) error {
	return errNotImplemented
}

// TagValues lists distinct values of the key in the scope.
func (b *Block) TagValues(ctx context.Context, scope traces.Scope, key string, limit int) ([]traces.Attr, error) {
	return nil, errNotImplemented
}

// Close closes the block's files.
func (b *Block) Close() error { return nil }
