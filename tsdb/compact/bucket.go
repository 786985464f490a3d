package compact

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
)

// Reasons of the no-compact marks the compactor writes when it finds a
// block it cannot compact safely. A group with a block marked for one of
// these reasons stays halted until the mark or the block is removed.
// Thanos reads them as opaque strings.
const (
	// NoCompactOverlap marks blocks of one group whose time ranges overlap
	// while neither holds the other's data (by compaction sources).
	NoCompactOverlap block.NoCompactReason = "overlapping-blocks"
	// NoCompactCorrupt marks a block whose index or chunks do not open or
	// do not verify.
	NoCompactCorrupt block.NoCompactReason = "corrupt-block"
	// NoCompactMissingFiles marks a block whose meta.json lists files that
	// are not in the bucket or have another size.
	NoCompactMissingFiles block.NoCompactReason = "missing-files"
)

// haltReasons are the no-compact reasons that halt a group.
var haltReasons = []block.NoCompactReason{NoCompactOverlap, NoCompactCorrupt, NoCompactMissingFiles}

// blockError is an inconsistency of one block that retrying does not fix.
// Reason is the no-compact reason to mark the block with.
type blockError struct {
	id     ulid.ULID
	reason block.NoCompactReason
	err    error
}

func (e *blockError) Error() string {
	return fmt.Sprintf("block %s: %s: %v", e.id, e.reason, e.err)
}

func (e *blockError) Unwrap() error { return e.err }

// asBlockError turns the errors of block.Download and block.CheckFiles
// that retrying does not fix into a *blockError of block id.
func asBlockError(id ulid.ULID, err error) error {
	switch {
	case errors.Is(err, block.ErrNotFound), errors.Is(err, block.ErrSizeMismatch):
		return &blockError{id: id, reason: NoCompactMissingFiles, err: err}
	case errors.Is(err, block.ErrInvalidMeta):
		return &blockError{id: id, reason: NoCompactCorrupt, err: err}
	}
	return err
}

func cloneLabels(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return maps.Clone(m)
}

// downloadBlock downloads the block m into dir (block.Download). A file
// that is missing or has another size than listed is a *blockError.
func downloadBlock(ctx context.Context, bkt objstore.Bucket, m *block.Meta, dir string) error {
	_, err := block.Download(ctx, bkt, m, dir)
	return asBlockError(m.ULID, err)
}

// checkFiles checks, without downloading, that the files meta.json of m
// lists are in the bucket with the listed sizes. A discrepancy is a
// *blockError.
func checkFiles(ctx context.Context, bkt objstore.Bucket, m *block.Meta) error {
	return asBlockError(m.ULID, block.CheckFiles(ctx, bkt, m))
}
