// Package spanblock is the immutable trace block format.
//
// A block is a directory named by its ULID:
//
//	data.parquet  one row per span, sorted by trace id then start time; each
//	              trace's spans in one row group
//	bloom         a bloom filter of the trace ids
//	index         per row group: first and last trace id, start time range,
//	              spans and traces
//	tags.json     per attribute key, a bounded list of distinct values
//	meta.json     written last: time range, counts, lineage, files with
//	              their sizes, and summaries listed without opening the data
//
// Finding a trace tests the bloom filter, picks the one row group whose
// trace id range can hold it from the index, reads the trace_id column's
// page(s) that can hold it (by the Parquet column index) and then only the
// pages of the other columns holding those rows.
package spanblock

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/oklog/ulid/v2"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/tsdb/block"
)

// File names in a block directory.
const (
	DataFilename  = "data.parquet"
	BloomFilename = "bloom"
	IndexFilename = "index"
	TagsFilename  = "tags.json"
	MetaFilename  = block.MetaFilename
)

// MetaVersion is the version of meta.json and of the block's layout.
const MetaVersion = 1

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
	// Sources are the level-1 blocks whose spans the block holds, sorted.
	Sources []ulid.ULID `json:"sources"`
	// Files lists every file of the block but meta.json, with sizes,
	// sorted by path.
	Files []File `json:"files"`

	// Services and Operations are the block's services and their span
	// names and kinds, sorted; at most WriteOptions.MaxOperations
	// operations (OperationsTruncated says some were left out).
	Services            []string           `json:"services"`
	Operations          []ServiceOperation `json:"operations"`
	OperationsTruncated bool               `json:"operationsTruncated,omitempty"`
	// SpanTags and ResourceTags are the attribute keys of each scope,
	// sorted; at most WriteOptions.MaxTagKeys each (TagsTruncated says
	// some were left out). Their values are in tags.json.
	SpanTags      []string `json:"spanTags"`
	ResourceTags  []string `json:"resourceTags"`
	TagsTruncated bool     `json:"tagsTruncated,omitempty"`
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

// Defaults of WriteOptions.
const (
	DefaultRowGroupSpans = 2048
	DefaultBloomFPRate   = 0.01
	DefaultMaxTagValues  = 1000
	DefaultMaxTagKeys    = 1000
	DefaultMaxOperations = 20000
)

// WriteOptions tune how a block is written.
type WriteOptions struct {
	// RowGroupSpans is how many spans a row group holds before the next
	// trace starts a new one (a trace is never split, so a group can hold
	// more); zero means DefaultRowGroupSpans. Smaller groups make a trace
	// lookup read less and the file larger.
	RowGroupSpans int
	// BloomFPRate is the trace-id bloom filter's false-positive rate; zero
	// means DefaultBloomFPRate.
	BloomFPRate float64
	// MaxTagValues bounds the distinct values kept per attribute key in
	// tags.json; zero means DefaultMaxTagValues.
	MaxTagValues int
	// MaxTagKeys bounds the attribute keys listed per scope; zero means
	// DefaultMaxTagKeys.
	MaxTagKeys int
	// MaxOperations bounds the operations listed in meta.json; zero means
	// DefaultMaxOperations.
	MaxOperations int

	// codec overrides the compression, for benchmarks; nil means zstd.
	codec compressCodec
	// pageBufferBytes overrides the page buffer size, for benchmarks.
	pageBufferBytes int
}

func (o WriteOptions) withDefaults() WriteOptions {
	if o.RowGroupSpans <= 0 {
		o.RowGroupSpans = DefaultRowGroupSpans
	}
	if o.BloomFPRate <= 0 || o.BloomFPRate >= 1 {
		o.BloomFPRate = DefaultBloomFPRate
	}
	if o.MaxTagValues <= 0 {
		o.MaxTagValues = DefaultMaxTagValues
	}
	if o.MaxTagKeys <= 0 {
		o.MaxTagKeys = DefaultMaxTagKeys
	}
	if o.MaxOperations <= 0 {
		o.MaxOperations = DefaultMaxOperations
	}
	return o
}

// Write writes the spans (any order) as block id in parentDir/<id>/ and
// returns its meta. The spans are grouped by trace id and sorted by trace
// id, then start time; spans with the same trace id, span id and kind are
// kept once (the kind is part of the key because Zipkin's shared spans,
// which Envoy sends, give a client span and its server span the same id).
// Every file is synced; meta.json is written last, through a temporary
// file renamed into place, so a directory without it is an incomplete
// block. The block's level is 1 and its only source is id.
func Write(parentDir string, id ulid.ULID, spans []traces.Span, o WriteOptions) (*Meta, error) {
	order := make([]int32, len(spans))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(i, j int32) int {
		a, b := &spans[i], &spans[j]
		return cmp.Or(bytes.Compare(a.TraceID[:], b.TraceID[:]), cmp.Compare(a.StartUnixNano, b.StartUnixNano))
	})
	ntraces := 0
	for i := range order {
		if i == 0 || spans[order[i]].TraceID != spans[order[i-1]].TraceID {
			ntraces++
		}
	}
	w, err := newWriter(parentDir, id, ntraces, o)
	if err != nil {
		return nil, err
	}
	var trace []*traces.Span
	for i, k := range order {
		trace = append(trace, &spans[k])
		if i == len(order)-1 || spans[order[i+1]].TraceID != spans[k].TraceID {
			if err := w.addTrace(dedupe(trace)); err != nil {
				w.abort()
				return nil, err
			}
			trace = trace[:0]
		}
	}
	return w.finish(1, []ulid.ULID{id})
}

// dedupe removes spans with the same span id and kind as an earlier span,
// keeping the order of the others.
func dedupe(trace []*traces.Span) []*traces.Span {
	if len(trace) < 2 {
		return trace
	}
	type key struct {
		id   traces.SpanID
		kind traces.Kind
	}
	seen := make(map[key]struct{}, len(trace))
	return slices.DeleteFunc(trace, func(s *traces.Span) bool {
		k := key{s.SpanID, s.Kind}
		if _, ok := seen[k]; ok {
			return true
		}
		seen[k] = struct{}{}
		return false
	})
}

// ReadMeta reads and checks dir/meta.json.
func ReadMeta(dir string) (*Meta, error) {
	name := filepath.Join(dir, MetaFilename)
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read trace block meta: %w", err)
	}
	m, err := decodeMeta(b)
	if err != nil {
		return nil, fmt.Errorf("read trace block meta %s: %w", name, err)
	}
	return m, nil
}

// maxMetaFiles bounds the files a meta.json may list.
const maxMetaFiles = 64

func decodeMeta(b []byte) (*Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if m.Version != MetaVersion {
		return nil, fmt.Errorf("unsupported version %d, want %d", m.Version, MetaVersion)
	}
	var zero ulid.ULID
	switch {
	case m.ULID == zero:
		return nil, errors.New("no ulid")
	case m.MinTime > m.MaxTime:
		return nil, fmt.Errorf("minTimeUnixNano %d after maxTimeUnixNano %d", m.MinTime, m.MaxTime)
	case m.Spans < 0 || m.Traces < 0 || m.Spans < m.Traces:
		return nil, fmt.Errorf("%d spans in %d traces", m.Spans, m.Traces)
	case m.Level < 1:
		return nil, fmt.Errorf("level %d, want at least 1", m.Level)
	case len(m.Files) > maxMetaFiles:
		return nil, fmt.Errorf("%d files listed, at most %d expected", len(m.Files), maxMetaFiles)
	}
	for _, f := range m.Files {
		if f.SizeBytes < 0 || !filepath.IsLocal(f.RelPath) || f.RelPath == MetaFilename {
			return nil, fmt.Errorf("bad file entry %q (%d bytes)", f.RelPath, f.SizeBytes)
		}
	}
	return &m, nil
}
