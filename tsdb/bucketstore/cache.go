package bucketstore

import (
	"container/list"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	promtsdb "github.com/prometheus/prometheus/tsdb"

	"github.com/meshlens/meshlens/tsdb/block"
)

// The cache directory holds one directory per downloaded block, named by
// its ULID, with the block's files as in the bucket (meta.json, index,
// chunks/*). A block is downloaded into <ULID><tmpInfix><random> and
// renamed into place when complete, so a directory named by a ULID is a
// complete block. A block to be deleted is first renamed to
// <ULID><trashInfix><n>. New deletes leftovers of both.
const (
	tmpInfix   = ".tmp-download-"
	trashInfix = ".trash-"
)

// downloadConcurrency bounds the blocks that one Select downloads at once.
const downloadConcurrency = 4

// entry is a block in the cache, or being downloaded into it. Its fields
// are guarded by Store.mu.
type entry struct {
	id   ulid.ULID
	dir  string
	size int64 // Bytes on disk, when onDisk.
	// onDisk is set once the block is complete in dir.
	onDisk bool
	// block is the opened block, nil until a querier needs it.
	block *promtsdb.Block
	// refs counts the queriers that use the block (and a download or open
	// in progress). A block with refs > 0 is never deleted.
	refs int
	// loading is non-nil while the block is being downloaded or opened and
	// is closed when that ends.
	loading chan struct{}
	// elem is the place in Store.lru, where unused cached blocks wait.
	elem *list.Element
	// gone is set when the block left the bucket: it is deleted from the
	// cache as soon as it is unused.
	gone bool
}

// trashItem is a block removed from the cache, to close and delete
// outside Store.mu.
type trashItem struct {
	block *promtsdb.Block
	dir   string
}

// loadCache takes in the blocks in the cache directory, least recently
// used last by modification time, and deletes leftovers and directories
// that are not complete blocks.
func (s *Store) loadCache() error {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read cache directory: %w", err)
	}
	type found struct {
		e   *entry
		mod time.Time
	}
	var blocks []found
	for _, de := range des {
		name := de.Name()
		full := filepath.Join(s.dir, name)
		if strings.Contains(name, tmpInfix) || strings.Contains(name, trashInfix) {
			if err := os.RemoveAll(full); err != nil {
				s.logger.Warn("cannot delete leftover in cache directory", "dir", full, "err", err)
			}
			continue
		}
		id, err := ulid.ParseStrict(name)
		if err != nil || !de.IsDir() {
			continue
		}
		size, err := blockDirSize(full)
		if err != nil {
			s.logger.Warn("deleting unusable cached block", "block", id, "err", err)
			if err := os.RemoveAll(full); err != nil {
				return fmt.Errorf("delete unusable cached block %s: %w", id, err)
			}
			continue
		}
		var mod time.Time
		if fi, err := de.Info(); err == nil {
			mod = fi.ModTime()
		}
		blocks = append(blocks, found{&entry{id: id, dir: full, size: size, onDisk: true}, mod})
	}
	slices.SortFunc(blocks, func(a, b found) int { return b.mod.Compare(a.mod) })

	s.mu.Lock()
	for _, f := range blocks {
		s.entries[f.e.id] = f.e
		f.e.elem = s.lru.PushBack(f.e)
		s.bytes += f.e.size
	}
	trash := s.makeRoomLocked(0)
	s.updateGaugesLocked()
	s.mu.Unlock()
	s.emptyTrash(trash)
	if len(blocks) > 0 {
		s.logger.Debug("cached blocks found", "blocks", len(blocks), "bytes", s.bytes)
	}
	return nil
}

// blockDirSize returns the size of the files of the block in dir, which
// must hold meta.json and index.
func blockDirSize(dir string) (int64, error) {
	for _, f := range []string{block.MetaFilename, block.IndexFilename, block.ChunksDirname} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return 0, err
		}
	}
	var size int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		size += fi.Size()
		return nil
	})
	return size, err
}

// acquire returns block m opened, downloading it first if it is not in the
// cache, and counts a reference to it that release drops. Concurrent calls
// for one block share one download.
func (s *Store) acquire(ctx context.Context, m *block.Meta) (*promtsdb.Block, error) {
	id := m.ULID
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		e := s.entries[id]
		if e != nil && e.loading != nil {
			ch := e.loading
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if e == nil {
			e = &entry{id: id, dir: filepath.Join(s.dir, id.String())}
			s.entries[id] = e
		}
		e.refs++
		if e.elem != nil {
			s.lru.Remove(e.elem)
			e.elem = nil
		}
		if e.block != nil {
			b := e.block
			s.mu.Unlock()
			return b, nil
		}
		e.loading = make(chan struct{})
		download := !e.onDisk
		var trash []trashItem
		if download {
			trash = s.makeRoomLocked(m.ExpectedSize())
		}
		s.mu.Unlock()
		s.emptyTrash(trash)

		b, size, err := s.load(ctx, m, e.dir, download)

		s.mu.Lock()
		close(e.loading)
		e.loading = nil
		if download && size > 0 {
			e.onDisk, e.size = true, size
			s.bytes += size
		}
		if err == nil && s.closed {
			trash = append(trash[:0], trashItem{block: b})
			b, err = nil, ErrClosed
		}
		if err != nil {
			if e.onDisk {
				// The copy does not open: download it again next time.
				e.gone = true
			}
			trash = append(trash, s.releaseLocked(e)...)
			s.updateGaugesLocked()
			s.mu.Unlock()
			s.emptyTrash(trash)
			return nil, err
		}
		e.block = b
		trash = s.makeRoomLocked(0)
		s.updateGaugesLocked()
		s.mu.Unlock()
		s.emptyTrash(trash)
		return b, nil
	}
}

// load downloads block m into dir if download is set and opens it. size
// is the size of a completed download, also when the block then fails to
// open.
func (s *Store) load(ctx context.Context, m *block.Meta, dir string, download bool) (b *promtsdb.Block, size int64, err error) {
	if download {
		start := time.Now()
		size, err = s.download(ctx, m, dir)
		if err != nil {
			if ctx.Err() == nil {
				s.metrics.downloadFailures.Inc()
			}
			return nil, 0, fmt.Errorf("download block %s: %w", m.ULID, err)
		}
		s.metrics.downloads.Inc()
		s.logger.Debug("block downloaded", "block", m.ULID, "bytes", size, "duration", time.Since(start))
	}
	b, err = promtsdb.OpenBlock(s.logger, dir, s.pool, nil)
	if err != nil {
		return nil, size, fmt.Errorf("open block %s: %w", m.ULID, err)
	}
	return b, size, nil
}

// release drops a reference that acquire counted.
func (s *Store) release(id ulid.ULID) {
	s.mu.Lock()
	e := s.entries[id]
	if e == nil {
		s.mu.Unlock()
		return
	}
	trash := s.releaseLocked(e)
	dir, used := e.dir, e.refs == 0 && e.elem != nil
	s.updateGaugesLocked()
	s.mu.Unlock()
	s.emptyTrash(trash)
	if used {
		// The modification time orders the cache when a Store starts.
		now := time.Now()
		_ = os.Chtimes(dir, now, now)
	}
}

func (s *Store) releaseLocked(e *entry) []trashItem {
	e.refs--
	if e.refs > 0 || e.loading != nil {
		return nil
	}
	if !e.onDisk {
		delete(s.entries, e.id)
		return nil
	}
	if e.gone || s.closed {
		if s.closed {
			return nil
		}
		return []trashItem{s.removeLocked(e)}
	}
	e.elem = s.lru.PushFront(e)
	return s.makeRoomLocked(0)
}

// makeRoomLocked removes unused blocks, least recently used first, until
// the cache has room for extra more bytes or no unused block is left.
func (s *Store) makeRoomLocked(extra int64) []trashItem {
	var trash []trashItem
	for s.bytes+extra > s.limit {
		back := s.lru.Back()
		if back == nil {
			break
		}
		e := back.Value.(*entry)
		s.logger.Debug("evicting cached block", "block", e.id, "bytes", e.size)
		trash = append(trash, s.removeLocked(e))
		s.metrics.evictions.Inc()
	}
	return trash
}

// removeLocked takes unused block e out of the cache. It renames the
// block's directory at once, so that a new download of the block cannot
// collide with its deletion, and leaves closing and deleting to
// emptyTrash.
func (s *Store) removeLocked(e *entry) trashItem {
	delete(s.entries, e.id)
	if e.elem != nil {
		s.lru.Remove(e.elem)
		e.elem = nil
	}
	item := trashItem{block: e.block}
	e.block = nil
	if e.onDisk {
		s.bytes -= e.size
		e.onDisk = false
		s.seq++
		trash := filepath.Join(s.dir, fmt.Sprintf("%s%s%d", e.id, trashInfix, s.seq))
		if err := os.Rename(e.dir, trash); err != nil {
			s.logger.Warn("cannot delete cached block", "block", e.id, "err", err)
		} else {
			item.dir = trash
		}
	}
	return item
}

func (s *Store) emptyTrash(items []trashItem) {
	for _, it := range items {
		if it.block != nil {
			if err := it.block.Close(); err != nil {
				s.logger.Warn("close cached block", "block", it.block.Meta().ULID, "err", err)
			}
		}
		if it.dir != "" {
			if err := os.RemoveAll(it.dir); err != nil {
				s.logger.Warn("delete cached block", "dir", it.dir, "err", err)
			}
		}
	}
}

func (s *Store) updateGaugesLocked() {
	cached := 0
	for _, e := range s.entries {
		if e.onDisk {
			cached++
		}
	}
	s.metrics.known.Set(float64(len(s.metas)))
	s.metrics.cached.Set(float64(cached))
	s.metrics.cacheBytes.Set(float64(s.bytes))
}

// forget drops block id from the blocks that queries read until the next
// Sync finds it again.
func (s *Store) forget(id ulid.ULID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.metas, id)
	s.updateGaugesLocked()
}

// download puts the files of block m into dir: into a temporary
// directory first, renamed to dir when complete. It returns the size of
// the files.
func (s *Store) download(ctx context.Context, m *block.Meta, dir string) (size int64, err error) {
	tmp, err := os.MkdirTemp(s.dir, m.ULID.String()+tmpInfix)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	size, err = block.Download(ctx, s.bkt, m, tmp)
	if err != nil {
		return 0, err
	}
	// A directory left by a block that could not be renamed away.
	if err := os.RemoveAll(dir); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return 0, err
	}
	return size, block.SyncDir(s.dir)
}
