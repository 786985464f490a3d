package block

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// UploadWithMeta uploads the metric block in dir under <ULID>/: the files
// that m lists but meta.json, read from dir, and then m as meta.json, as
// Upload does with o's retries. The zero RetryOptions try each object
// once.
func UploadWithMeta(ctx context.Context, bkt objstore.Bucket, dir string, m *Meta, o RetryOptions) error {
	metaJSON, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("encode meta.json of block %s: %w", m.ULID, err)
	}
	files := make([]string, 0, len(m.Thanos.Files))
	for _, f := range m.Thanos.Files {
		if f.RelPath != MetaFilename {
			files = append(files, f.RelPath)
		}
	}
	return Upload(ctx, bkt, dir, m.ULID.String(), files, metaJSON, o)
}

// DownloadMeta reads and checks the meta.json of block id. A block without
// meta.json (being uploaded or deleted) is ErrNotFound; a meta.json that
// does not decode or names another block is ErrInvalidMeta.
func DownloadMeta(ctx context.Context, bkt objstore.BucketReader, id ulid.ULID) (*Meta, error) {
	name := path.Join(id.String(), MetaFilename)
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	defer rc.Close()
	m, err := ReadMeta(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", name, ErrInvalidMeta, err)
	}
	if m.ULID != id {
		return nil, fmt.Errorf("%s: %w: names block %s", name, ErrInvalidMeta, m.ULID)
	}
	return m, nil
}

// Download puts the metric block m into dir, which it creates: the files
// its meta.json lists, or when it lists no index (Thanos wrote no list
// before v0.9) every object under <ULID>/ but meta.json and the marks;
// then m as meta.json, last. Each file is synced; a missing object is
// ErrNotFound, one of another size than listed ErrSizeMismatch, a listed
// file outside the block ErrInvalidMeta. It returns the size of the files,
// meta.json included. On error dir may hold part of the block.
func Download(ctx context.Context, bkt objstore.BucketReader, m *Meta, dir string) (size int64, err error) {
	id := m.ULID.String()
	files, err := remoteFiles(ctx, bkt, m)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(dir, ChunksDirname), 0o755); err != nil {
		return 0, err
	}
	for _, f := range files {
		if !filepath.IsLocal(filepath.FromSlash(f.RelPath)) {
			return 0, fmt.Errorf("block %s: meta.json lists file %q outside the block: %w", id, f.RelPath, ErrInvalidMeta)
		}
		n, err := downloadFile(ctx, bkt, path.Join(id, f.RelPath), filepath.Join(dir, filepath.FromSlash(f.RelPath)))
		if err != nil {
			return 0, err
		}
		// meta.json lists no size for itself, and Thanos none for files of
		// blocks it wrote before it recorded sizes.
		if f.SizeBytes > 0 && n != f.SizeBytes {
			return 0, fmt.Errorf("%s/%s has %d bytes, meta.json says %d: %w", id, f.RelPath, n, f.SizeBytes, ErrSizeMismatch)
		}
		size += n
	}
	// Prometheus reads its part of meta.json and ignores the thanos
	// section.
	metaJSON, err := m.Marshal()
	if err != nil {
		return 0, fmt.Errorf("encode meta.json of block %s: %w", id, err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, MetaFilename), metaJSON); err != nil {
		return 0, err
	}
	size += int64(len(metaJSON))
	for _, d := range []string{filepath.Join(dir, ChunksDirname), dir} {
		if err := SyncDir(d); err != nil {
			return 0, err
		}
	}
	return size, nil
}

// remoteFiles lists the files of block m to download, without meta.json.
func remoteFiles(ctx context.Context, bkt objstore.BucketReader, m *Meta) ([]File, error) {
	var files []File
	for _, f := range m.Thanos.Files {
		if f.RelPath != MetaFilename {
			files = append(files, f)
		}
	}
	hasIndex := func(f File) bool { return f.RelPath == IndexFilename }
	if slices.ContainsFunc(files, hasIndex) {
		return files, nil
	}
	files = files[:0]
	prefix := m.ULID.String() + objstore.DirDelim
	err := bkt.Iter(ctx, prefix, func(name string) error {
		rel := strings.TrimPrefix(name, prefix)
		if rel == "" || rel == MetaFilename || strings.HasSuffix(rel, "-mark.json") || strings.HasSuffix(rel, objstore.DirDelim) {
			return nil
		}
		files = append(files, File{RelPath: rel})
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	if !slices.ContainsFunc(files, hasIndex) {
		return nil, fmt.Errorf("%s: %w", path.Join(m.ULID.String(), IndexFilename), ErrNotFound)
	}
	return files, nil
}

// CheckFiles checks, without downloading, that the files the meta.json of
// block m lists (the index if it lists none) are in the bucket with the
// listed sizes: a missing one is ErrNotFound, one of another size
// ErrSizeMismatch.
func CheckFiles(ctx context.Context, bkt objstore.BucketReader, m *Meta) error {
	files := m.Thanos.Files
	if len(files) == 0 {
		files = []File{{RelPath: IndexFilename}}
	}
	for _, f := range files {
		if f.RelPath == MetaFilename {
			continue
		}
		name := path.Join(m.ULID.String(), f.RelPath)
		attrs, err := bkt.Attributes(ctx, name)
		if bkt.IsObjNotFoundErr(err) {
			return fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", name, err)
		}
		if f.SizeBytes > 0 && attrs.Size != f.SizeBytes {
			return fmt.Errorf("%s has %d bytes, meta.json says %d: %w", name, attrs.Size, f.SizeBytes, ErrSizeMismatch)
		}
	}
	return nil
}

// WriteFileAtomic writes data to name through a temporary file that is
// synced and renamed over it, then syncs the directory: after a crash name
// holds either its old or its new content. Shipped-block records and
// meta.json files are written this way.
func WriteFileAtomic(name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(name))
}

// SyncDir fsyncs a directory, so that the files created or renamed in it
// are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
