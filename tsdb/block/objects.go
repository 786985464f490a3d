// Package block is the one home of meshlens's block format in the bucket:
// the Thanos metric block format (meta.json with its thanos section,
// deletion and no-compact marks, file names, source types, resolutions)
// and the bucket operations on blocks: uploads (meta.json last, with
// retry), downloads (checked against meta.json), listing and deletion.
// Metric blocks (Prometheus TSDB blocks with Thanos's meta.json) and
// trace blocks both use it; a block is a directory of files under
// <prefix>/<ULID>/ whose meta.json, uploaded last, marks it complete.
// Sub-package downsample holds the aggregate chunks of downsampled
// blocks.
package block

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// MetaFilename is the file whose presence in the bucket makes a block
// complete; it is uploaded last and deleted first.
const MetaFilename = "meta.json"

// DeletionMarkFilename marks a block for deletion after a delay (Thanos's
// deletion-mark.json); it is deleted last.
const DeletionMarkFilename = "deletion-mark.json"

// Errors of the bucket operations on blocks, wrapped with the name of the
// object.
var (
	// ErrNotFound says that an object a block needs is not in the bucket:
	// the block is incomplete, or it was deleted meanwhile.
	ErrNotFound = errors.New("not in the bucket")
	// ErrSizeMismatch says that an object has another size than meta.json
	// lists.
	ErrSizeMismatch = errors.New("size differs from meta.json")
	// ErrInvalidMeta says that a meta.json does not decode, names another
	// block or lists a file outside the block. Retrying does not help.
	ErrInvalidMeta = errors.New("unusable meta.json")
)

// RetryOptions bound the retries of a bucket operation.
type RetryOptions struct {
	// Attempts is how many times an operation is tried; zero means 1.
	Attempts int
	// MinBackoff is the first wait between attempts, doubled up to
	// MaxBackoff; zero means 1s and 1m.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds each attempt; zero means no bound.
	AttemptTimeout time.Duration
	// Logger receives a debug line per failed attempt; nil discards.
	Logger *slog.Logger
}

// Retry runs op up to o.Attempts times with exponential backoff and jitter.
// It gives up at once when ctx is done, when a local file is missing or
// when the bucket denies access.
func Retry(ctx context.Context, bkt objstore.Bucket, o RetryOptions, op func(ctx context.Context) error) error {
	attempts, backoff, maxBackoff := max(o.Attempts, 1), o.MinBackoff, o.MaxBackoff
	if backoff <= 0 {
		backoff = time.Second
	}
	if maxBackoff <= 0 {
		maxBackoff = time.Minute
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if o.AttemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, o.AttemptTimeout)
		}
		err := op(actx)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return withCtxErr(ctx, err)
		case errors.Is(err, fs.ErrNotExist), bkt.IsAccessDeniedErr(err):
			return err
		case attempt >= attempts:
			if attempts == 1 {
				return err
			}
			return fmt.Errorf("giving up after %d attempts: %w", attempt, err)
		}
		// Wait between half and all of backoff, so that nodes sharing a
		// bucket do not retry in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		if o.Logger != nil {
			o.Logger.Debug("bucket operation failed, retrying", "attempt", attempt, "wait", wait, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return withCtxErr(ctx, err)
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// withCtxErr adds the context's error to err unless err already carries it.
func withCtxErr(ctx context.Context, err error) error {
	if errors.Is(err, ctx.Err()) {
		return err
	}
	return errors.Join(err, ctx.Err())
}

// Upload puts a block into the bucket under prefix (e.g. "<ULID>" or
// "traces/<ULID>"): each of files (slash-separated paths relative to dir,
// opened afresh for every try), then metaJSON as prefix/meta.json, so the
// block is complete only once everything else is there. files must not
// contain meta.json.
func Upload(ctx context.Context, bkt objstore.Bucket, dir, prefix string, files []string, metaJSON []byte, o RetryOptions) error {
	for _, rel := range files {
		if rel == MetaFilename {
			return fmt.Errorf("upload %s: %s is uploaded last, not among the files", prefix, MetaFilename)
		}
		src, dst := filepath.Join(dir, filepath.FromSlash(rel)), path.Join(prefix, rel)
		err := Retry(ctx, bkt, o, func(ctx context.Context) error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			return bkt.Upload(ctx, dst, f)
		})
		if err != nil {
			return fmt.Errorf("upload %s: %w", dst, err)
		}
	}
	name := path.Join(prefix, MetaFilename)
	if err := Retry(ctx, bkt, o, func(ctx context.Context) error {
		return bkt.Upload(ctx, name, bytes.NewReader(metaJSON))
	}); err != nil {
		return fmt.Errorf("upload %s: %w", name, err)
	}
	return nil
}

// UploadDir uploads every regular file under dir, sorted by path, and then
// dir/meta.json, as Upload does.
func UploadDir(ctx context.Context, bkt objstore.Bucket, dir, prefix string, o RetryOptions) error {
	metaJSON, err := os.ReadFile(filepath.Join(dir, MetaFilename))
	if err != nil {
		return fmt.Errorf("upload %s: %w", prefix, err)
	}
	files, err := Files(dir)
	if err != nil {
		return fmt.Errorf("upload %s: %w", prefix, err)
	}
	return Upload(ctx, bkt, dir, prefix, files, metaJSON, o)
}

// Files lists the regular files under dir as sorted slash-separated
// relative paths, without meta.json.
func Files(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel = filepath.ToSlash(rel); rel != MetaFilename {
			files = append(files, rel)
		}
		return nil
	})
	slices.Sort(files)
	return files, err
}

// DownloadDir downloads every object under prefix into dir, meta.json last,
// each written to a temporary file and renamed, so that dir holds meta.json
// only once the rest is complete. Marks (deletion-mark.json and other
// *-mark.json files) are skipped.
func DownloadDir(ctx context.Context, bkt objstore.BucketReader, prefix, dir string) error {
	var names []string
	err := bkt.Iter(ctx, prefix+"/", func(name string) error {
		if !strings.HasSuffix(name, "/") {
			names = append(names, name)
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	metaName := path.Join(prefix, MetaFilename)
	if !slices.Contains(names, metaName) {
		return fmt.Errorf("download %s: no %s (the block is incomplete or gone)", prefix, MetaFilename)
	}
	slices.Sort(names)
	names = slices.DeleteFunc(names, func(n string) bool { return n == metaName || strings.HasSuffix(n, "-mark.json") })
	names = append(names, metaName)
	for _, name := range names {
		dst := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(name, prefix+"/")))
		if err := DownloadFile(ctx, bkt, name, dst); err != nil {
			return err
		}
	}
	return nil
}

// DownloadFile downloads one object to dst through a temporary file that is
// synced and renamed. An object that is not in the bucket is ErrNotFound.
func DownloadFile(ctx context.Context, bkt objstore.BucketReader, name, dst string) error {
	_, err := downloadFile(ctx, bkt, name, dst)
	return err
}

// downloadFile is DownloadFile, returning the size of the object.
func downloadFile(ctx context.Context, bkt objstore.BucketReader, name, dst string) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, err
	}
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return 0, fmt.Errorf("download %s: %w: %w", name, ErrNotFound, err)
		}
		return 0, fmt.Errorf("download %s: %w", name, err)
	}
	defer rc.Close()
	tmp := dst + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, rc)
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return 0, fmt.Errorf("download %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return 0, err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return 0, err
	}
	return n, os.Rename(tmp, dst)
}

// IDs lists the ULIDs of the block directories directly under prefix (""
// for the bucket root), sorted. It lists every block directory, complete
// or not; a reader checks meta.json. Other objects and directories are
// skipped.
func IDs(ctx context.Context, bkt objstore.BucketReader, prefix string) ([]ulid.ULID, error) {
	var ids []ulid.ULID
	dir := prefix
	if dir != "" {
		dir = strings.TrimSuffix(dir, objstore.DirDelim) + objstore.DirDelim
	}
	err := bkt.Iter(ctx, dir, func(name string) error {
		sub, ok := strings.CutSuffix(strings.TrimPrefix(name, dir), objstore.DirDelim)
		if !ok {
			return nil
		}
		if id, err := ulid.ParseStrict(sub); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		if prefix == "" {
			return nil, fmt.Errorf("list bucket: %w", err)
		}
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	slices.SortFunc(ids, func(a, b ulid.ULID) int { return a.Compare(b) })
	return ids, nil
}

// Delete deletes every object under prefix in Thanos's order: meta.json
// first, so that an interrupted deletion leaves an incomplete block that
// readers ignore, and deletion-mark.json last, so that the interrupted
// deletion is finished later.
func Delete(ctx context.Context, bkt objstore.Bucket, prefix string) error {
	meta, mark := path.Join(prefix, MetaFilename), path.Join(prefix, DeletionMarkFilename)
	if err := deleteIfExists(ctx, bkt, meta); err != nil {
		return err
	}
	var names []string
	err := bkt.Iter(ctx, prefix+"/", func(name string) error {
		if name != meta && name != mark && !strings.HasSuffix(name, "/") {
			names = append(names, name)
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
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
