package compact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb"
)

// SourceCompactor is the source that the compactor writes into the thanos
// section of the blocks it makes, Thanos's metadata.CompactorSource.
const SourceCompactor tsdb.SourceType = "compactor"

// Reasons of the no-compact marks the compactor writes when it finds a
// block it cannot compact safely. A group with a block marked for one of
// these reasons stays halted until the mark or the block is removed.
// Thanos reads them as opaque strings.
const (
	// NoCompactOverlap marks blocks of one group whose time ranges overlap
	// while neither holds the other's data (by compaction sources).
	NoCompactOverlap tsdb.NoCompactReason = "overlapping-blocks"
	// NoCompactCorrupt marks a block whose index or chunks do not open or
	// do not verify.
	NoCompactCorrupt tsdb.NoCompactReason = "corrupt-block"
	// NoCompactMissingFiles marks a block whose meta.json lists files that
	// are not in the bucket or have another size.
	NoCompactMissingFiles tsdb.NoCompactReason = "missing-files"
)

// haltReasons are the no-compact reasons that halt a group.
var haltReasons = []tsdb.NoCompactReason{NoCompactOverlap, NoCompactCorrupt, NoCompactMissingFiles}

// blockError is an inconsistency of one block that retrying does not fix.
// Reason is the no-compact reason to mark the block with.
type blockError struct {
	id     ulid.ULID
	reason tsdb.NoCompactReason
	err    error
}

func (e *blockError) Error() string {
	return fmt.Sprintf("block %s: %s: %v", e.id, e.reason, e.err)
}

func (e *blockError) Unwrap() error { return e.err }

func objName(id ulid.ULID, rel string) string { return path.Join(id.String(), rel) }

// writeMeta writes m as dir/meta.json, with its files section listing the
// files in dir (chunks, index and meta.json, as Thanos's
// GatherFileStats lists them).
func writeMeta(dir string, m *tsdb.Meta) error {
	b, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("encode meta.json: %w", err)
	}
	name := filepath.Join(dir, tsdb.MetaFilename)
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return err
	}
	fm, err := tsdb.NewMeta(dir, labels.FromMap(m.Thanos.Labels), m.Thanos.Source)
	if err != nil {
		return fmt.Errorf("list block files: %w", err)
	}
	m.Thanos.Files = fm.Thanos.Files
	m.Thanos.SegmentFiles = fm.Thanos.SegmentFiles
	if b, err = m.Marshal(); err != nil {
		return fmt.Errorf("encode meta.json: %w", err)
	}
	return os.WriteFile(name, b, 0o644)
}

func cloneLabels(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return maps.Clone(m)
}

// uploadBlock uploads the block in dir, whose meta.json m describes: the
// chunk files, the index and then meta.json, so that the block is
// complete once meta.json is there.
func uploadBlock(ctx context.Context, bkt objstore.Bucket, dir string, m *tsdb.Meta) error {
	for _, f := range m.Thanos.Files {
		if f.RelPath == tsdb.MetaFilename {
			continue
		}
		if err := uploadFile(ctx, bkt, filepath.Join(dir, filepath.FromSlash(f.RelPath)), objName(m.ULID, f.RelPath)); err != nil {
			return err
		}
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	name := objName(m.ULID, tsdb.MetaFilename)
	if err := bkt.Upload(ctx, name, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("upload %s: %w", name, err)
	}
	return nil
}

func uploadFile(ctx context.Context, bkt objstore.Bucket, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := bkt.Upload(ctx, dst, f); err != nil {
		return fmt.Errorf("upload %s: %w", dst, err)
	}
	return nil
}

// downloadBlock downloads the block m into dir: the files its meta.json
// lists (every object under <ULID>/ but the marks when it lists none), and
// meta.json. A file that is missing or has another size than listed is a
// *blockError.
func downloadBlock(ctx context.Context, bkt objstore.Bucket, m *tsdb.Meta, dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, tsdb.ChunksDirname), 0o755); err != nil {
		return err
	}
	files := slices.Clone(m.Thanos.Files)
	if len(files) == 0 {
		prefix := m.ULID.String() + "/"
		err := bkt.Iter(ctx, prefix, func(name string) error {
			rel := strings.TrimPrefix(name, prefix)
			switch rel {
			case tsdb.MetaFilename, tsdb.DeletionMarkFilename, tsdb.NoCompactMarkFilename, "":
				return nil
			}
			if strings.HasSuffix(rel, "/") {
				return nil
			}
			files = append(files, tsdb.BlockFile{RelPath: rel, SizeBytes: -1})
			return nil
		}, objstore.WithRecursiveIter())
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		if !slices.ContainsFunc(files, func(f tsdb.BlockFile) bool { return f.RelPath == tsdb.IndexFilename }) {
			return &blockError{id: m.ULID, reason: NoCompactMissingFiles, err: errors.New("no index in the bucket")}
		}
	}
	for _, f := range files {
		if f.RelPath == tsdb.MetaFilename {
			continue
		}
		if !filepath.IsLocal(filepath.FromSlash(f.RelPath)) {
			return &blockError{id: m.ULID, reason: NoCompactCorrupt, err: fmt.Errorf("meta.json lists file %q outside the block", f.RelPath)}
		}
		dst := filepath.Join(dir, filepath.FromSlash(f.RelPath))
		n, err := downloadFile(ctx, bkt, objName(m.ULID, f.RelPath), dst)
		if bkt.IsObjNotFoundErr(err) {
			return &blockError{id: m.ULID, reason: NoCompactMissingFiles, err: fmt.Errorf("%s is not in the bucket", f.RelPath)}
		}
		if err != nil {
			return err
		}
		// meta.json lists no size for itself, and Thanos none for files of
		// blocks it wrote before it recorded sizes.
		if f.SizeBytes > 0 && n != f.SizeBytes {
			return &blockError{id: m.ULID, reason: NoCompactMissingFiles, err: fmt.Errorf("%s has %d bytes, meta.json says %d", f.RelPath, n, f.SizeBytes)}
		}
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, tsdb.MetaFilename), b, 0o644)
}

func downloadFile(ctx context.Context, bkt objstore.Bucket, name, dst string) (int64, error) {
	r, err := bkt.Get(ctx, name)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, err
	}
	f, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("download %s: %w", name, err)
	}
	return n, nil
}

// checkFiles checks, without downloading, that the files meta.json of m
// lists are in the bucket with the listed sizes. A discrepancy is a
// *blockError.
func checkFiles(ctx context.Context, bkt objstore.Bucket, m *tsdb.Meta) error {
	files := m.Thanos.Files
	if len(files) == 0 {
		files = []tsdb.BlockFile{{RelPath: tsdb.IndexFilename}}
	}
	for _, f := range files {
		if f.RelPath == tsdb.MetaFilename {
			continue
		}
		attrs, err := bkt.Attributes(ctx, objName(m.ULID, f.RelPath))
		if bkt.IsObjNotFoundErr(err) {
			return &blockError{id: m.ULID, reason: NoCompactMissingFiles, err: fmt.Errorf("%s is not in the bucket", f.RelPath)}
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", objName(m.ULID, f.RelPath), err)
		}
		if f.SizeBytes > 0 && attrs.Size != f.SizeBytes {
			return &blockError{id: m.ULID, reason: NoCompactMissingFiles, err: fmt.Errorf("%s has %d bytes, meta.json says %d", f.RelPath, attrs.Size, f.SizeBytes)}
		}
	}
	return nil
}

// uploadMark uploads a mark file of block id unless it exists already.
// It reports whether it uploaded.
func uploadMark(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, file string, mark any) (bool, error) {
	name := objName(id, file)
	ok, err := bkt.Exists(ctx, name)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", name, err)
	}
	if ok {
		return false, nil
	}
	b, err := json.MarshalIndent(mark, "", "\t")
	if err != nil {
		return false, err
	}
	if err := bkt.Upload(ctx, name, bytes.NewReader(append(b, '\n'))); err != nil {
		return false, fmt.Errorf("upload %s: %w", name, err)
	}
	return true, nil
}

// deleteBlock deletes every object of block id in Thanos's order:
// meta.json first, so that an interrupted deletion leaves a partial block
// that readers ignore, and deletion-mark.json last, so that the
// interrupted deletion is finished later.
func deleteBlock(ctx context.Context, bkt objstore.Bucket, id ulid.ULID) error {
	meta := objName(id, tsdb.MetaFilename)
	mark := objName(id, tsdb.DeletionMarkFilename)
	if err := deleteIfExists(ctx, bkt, meta); err != nil {
		return err
	}
	var names []string
	err := bkt.Iter(ctx, id.String()+"/", func(name string) error {
		if name != meta && name != mark && !strings.HasSuffix(name, "/") {
			names = append(names, name)
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return fmt.Errorf("list %s: %w", id, err)
	}
	for _, name := range names {
		if err := deleteIfExists(ctx, bkt, name); err != nil {
			return err
		}
	}
	return deleteIfExists(ctx, bkt, mark)
}

func deleteIfExists(ctx context.Context, bkt objstore.Bucket, name string) error {
	if err := bkt.Delete(ctx, name); err != nil && !bkt.IsObjNotFoundErr(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
