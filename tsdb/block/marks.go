package block

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

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

// UploadMark uploads mark as the file name (DeletionMarkFilename,
// NoCompactMarkFilename) of block id, encoded as Thanos writes it, unless
// the block has that mark already. It reports whether it uploaded.
func UploadMark(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, name string, mark any) (uploaded bool, err error) {
	obj := path.Join(id.String(), name)
	ok, err := bkt.Exists(ctx, obj)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", obj, err)
	}
	if ok {
		return false, nil
	}
	b, err := marshalIndent(mark)
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", obj, err)
	}
	if err := bkt.Upload(ctx, obj, bytes.NewReader(b)); err != nil {
		return false, fmt.Errorf("upload %s: %w", obj, err)
	}
	return true, nil
}

// ReadMark decodes the mark file name of block id into v. found is false
// when the block has no such mark; a mark that is there but does not
// decode is found with an error, which readers may treat as no mark, as
// Thanos does.
func ReadMark(ctx context.Context, bkt objstore.BucketReader, id ulid.ULID, name string, v any) (found bool, err error) {
	obj := path.Join(id.String(), name)
	rc, err := bkt.Get(ctx, obj)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return false, nil
		}
		return false, fmt.Errorf("get %s: %w", obj, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", obj, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("decode %s: %w", obj, err)
	}
	return true, nil
}
