package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/store/spanblock"
	"github.com/meshlens/meshlens/tsdb/block"
)

// blockEntry is a block the store reads: a local block, or a bucket block
// that may be in the cache. Its fields are guarded by Store.blocksMu.
type blockEntry struct {
	id    ulid.ULID
	meta  *spanblock.Meta
	local bool // In Dir/blocks; otherwise a bucket block.

	dir     string           // Where the block is (or is downloaded to).
	blk     *spanblock.Block // Open block; nil for a bucket block not cached.
	size    int64            // Bytes on disk once cached.
	loading chan struct{}    // Closed when a download ends.
	loadErr error

	refs    int       // Readers using blk.
	lastUse time.Time // For the cache's LRU order.
	gone    bool      // Removed from the store: close and delete at refs == 0.
	covered bool      // A compacted block holds all its spans.
}

// sources are the level-1 blocks whose spans the block holds.
func (e *blockEntry) sources() []ulid.ULID {
	if len(e.meta.Sources) == 0 {
		return []ulid.ULID{e.id}
	}
	return e.meta.Sources
}

// openLocalBlocks opens every complete block in Dir/blocks and deletes
// incomplete ones (a cut interrupted by a crash; its spans are still in
// the WAL).
func (s *Store) openLocalBlocks() error {
	es, err := os.ReadDir(s.blocksDir())
	if err != nil {
		return fmt.Errorf("list blocks: %w", err)
	}
	for _, de := range es {
		id, err := ulid.ParseStrict(de.Name())
		dir := filepath.Join(s.blocksDir(), de.Name())
		if err != nil || !de.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, block.MetaFilename)); errors.Is(err, fs.ErrNotExist) {
			s.logger.Debug("deleting incomplete block", "block", id)
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("delete incomplete block %s: %w", id, err)
			}
			continue
		}
		blk, err := spanblock.Open(dir)
		if err != nil {
			return fmt.Errorf("open block %s: %w", id, err)
		}
		s.local[id] = &blockEntry{id: id, meta: blk.Meta(), local: true, dir: dir, blk: blk}
	}
	s.recomputeCoverLocked()
	return nil
}

// openCache registers the complete blocks left in the cache directory and
// deletes the rest.
func (s *Store) openCache() error {
	es, err := os.ReadDir(s.o.CacheDir)
	if err != nil {
		return fmt.Errorf("list cache: %w", err)
	}
	for _, de := range es {
		dir := filepath.Join(s.o.CacheDir, de.Name())
		id, err := ulid.ParseStrict(de.Name())
		var meta *spanblock.Meta
		if err == nil {
			meta, err = spanblock.ReadMeta(dir)
		}
		if err != nil {
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("clean cache: %w", err)
			}
			continue
		}
		info, _ := de.Info()
		e := &blockEntry{id: id, meta: meta, dir: dir, size: dirSize(dir)}
		if info != nil {
			e.lastUse = info.ModTime()
		}
		// It is opened on first use, once SyncBucket has confirmed it
		// is still in the bucket; until then it is not read.
		e.gone = true
		s.bucket[id] = e
	}
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// recomputeCoverLocked marks the blocks whose spans a compacted block
// holds: reads skip them. The caller holds s.blocksMu.
func (s *Store) recomputeCoverLocked() {
	type best struct {
		e   *blockEntry
		set map[ulid.ULID]struct{}
	}
	holders := map[ulid.ULID]*best{}
	var all []*blockEntry
	for _, m := range []map[ulid.ULID]*blockEntry{s.local, s.bucket} {
		for _, e := range m {
			if e.gone && !e.local {
				continue
			}
			all = append(all, e)
		}
	}
	for _, e := range all {
		b := &best{e: e}
		for _, src := range e.sources() {
			if h := holders[src]; h == nil || h.e.meta.Level < e.meta.Level {
				if b.set == nil {
					b.set = map[ulid.ULID]struct{}{}
					for _, x := range e.sources() {
						b.set[x] = struct{}{}
					}
				}
				holders[src] = b
			}
		}
	}
	for _, e := range all {
		e.covered = false
		srcs := e.sources()
		h := holders[srcs[0]]
		if h == nil || h.e == e || h.e.meta.Level <= e.meta.Level {
			continue
		}
		covered := true
		for _, x := range srcs {
			if _, ok := h.set[x]; !ok {
				covered = false
				break
			}
		}
		e.covered = covered
	}
}

// shippedRecordFilename is the file in Dir where the store records the
// local blocks it has shipped.
const shippedRecordFilename = "shipped.json"

type shippedRecord struct {
	Version int         `json:"version"`
	Shipped []ulid.ULID `json:"shipped"`
}

func (s *Store) readShippedRecord() error {
	b, err := os.ReadFile(filepath.Join(s.o.Dir, shippedRecordFilename))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var r shippedRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("decode %s: %w", shippedRecordFilename, err)
	}
	if r.Version != 1 {
		return fmt.Errorf("%s: unknown version %d", shippedRecordFilename, r.Version)
	}
	for _, id := range r.Shipped {
		if _, ok := s.local[id]; ok {
			s.shipped[id] = struct{}{}
		}
	}
	return nil
}

// writeShippedRecordLocked replaces the record of shipped blocks
// atomically. The caller holds s.blocksMu.
func (s *Store) writeShippedRecordLocked() error {
	r := shippedRecord{Version: 1, Shipped: make([]ulid.ULID, 0, len(s.shipped))}
	for id := range s.shipped {
		r.Shipped = append(r.Shipped, id)
	}
	slices.SortFunc(r.Shipped, func(a, b ulid.ULID) int { return a.Compare(b) })
	b, err := json.MarshalIndent(r, "", "\t")
	if err != nil {
		return err
	}
	if err := block.WriteFileAtomic(filepath.Join(s.o.Dir, shippedRecordFilename), b); err != nil {
		return fmt.Errorf("write %s: %w", shippedRecordFilename, err)
	}
	return nil
}

func (s *Store) retryOptions() block.RetryOptions {
	return block.RetryOptions{Attempts: 5, MinBackoff: time.Second, MaxBackoff: 30 * time.Second, Logger: s.logger}
}

func (s *Store) bucketPrefix(id ulid.ULID) string { return path.Join(s.o.Prefix, id.String()) }

// Ship uploads every local block that is not in the bucket yet, oldest
// first, and records it as shipped. A failed block does not stop the
// others. Without a bucket it does nothing.
func (s *Store) Ship(ctx context.Context) error {
	if s.o.Bucket == nil {
		return nil
	}
	s.passMu.Lock()
	defer s.passMu.Unlock()
	s.blocksMu.Lock()
	var todo []*blockEntry
	for id, e := range s.local {
		if _, ok := s.shipped[id]; !ok && !e.gone {
			todo = append(todo, e)
		}
	}
	s.blocksMu.Unlock()
	slices.SortFunc(todo, func(a, b *blockEntry) int { return a.id.Compare(b.id) })
	var errs []error
	for _, e := range todo {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		// The block is read from its directory as it is: it never
		// changes, and local retention skips blocks not shipped.
		if err := block.UploadDir(ctx, s.o.Bucket, e.dir, s.bucketPrefix(e.id), s.retryOptions()); err != nil {
			s.metrics.shipFailures.Inc()
			errs = append(errs, fmt.Errorf("ship block %s: %w", e.id, err))
			continue
		}
		s.metrics.blocksShipped.Inc()
		s.blocksMu.Lock()
		s.shipped[e.id] = struct{}{}
		if _, ok := s.bucket[e.id]; !ok {
			s.bucket[e.id] = &blockEntry{id: e.id, meta: e.meta, dir: filepath.Join(s.o.CacheDir, e.id.String())}
		}
		err := s.writeShippedRecordLocked()
		s.blocksMu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
		s.logger.Debug("block shipped", "block", e.id)
	}
	return errors.Join(errs...)
}

// SyncBucket lists the blocks in the bucket and reads the meta.json of
// those it does not know; blocks gone from the bucket are forgotten (a
// reader holding one keeps its cached copy until it is done).
func (s *Store) SyncBucket(ctx context.Context) error {
	if s.o.Bucket == nil {
		return nil
	}
	ids, err := block.IDs(ctx, s.o.Bucket, s.o.Prefix)
	if err != nil {
		return fmt.Errorf("sync bucket: %w", err)
	}
	s.blocksMu.Lock()
	var unknown []ulid.ULID
	for _, id := range ids {
		if e, ok := s.bucket[id]; !ok || e.meta == nil {
			unknown = append(unknown, id)
		}
	}
	s.blocksMu.Unlock()

	metas := map[ulid.ULID]*spanblock.Meta{}
	var errs []error
	for _, id := range unknown {
		m, err := s.readBucketMeta(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if m != nil {
			metas[id] = m
		}
	}

	listed := make(map[ulid.ULID]struct{}, len(ids))
	for _, id := range ids {
		listed[id] = struct{}{}
	}
	s.blocksMu.Lock()
	defer s.blocksMu.Unlock()
	for id, m := range metas {
		if _, ok := s.bucket[id]; !ok {
			s.bucket[id] = &blockEntry{id: id, meta: m, dir: filepath.Join(s.o.CacheDir, id.String())}
		}
	}
	for id, e := range s.bucket {
		_, ok := listed[id]
		if _, incomplete := metas[id]; ok && e.gone && !incomplete {
			// A block found in the cache at Open is in the bucket.
			e.gone = false
		}
		if !ok && e.meta != nil && len(errs) == 0 {
			s.removeBucketLocked(e)
		}
	}
	s.recomputeCoverLocked()
	s.metrics.bucketBlocks.Store(int64(len(s.bucket)))
	return errors.Join(errs...)
}

// readBucketMeta reads a block's meta.json from the bucket: nil, nil when
// the block is incomplete (being uploaded or deleted).
func (s *Store) readBucketMeta(ctx context.Context, id ulid.ULID) (*spanblock.Meta, error) {
	name := path.Join(s.bucketPrefix(id), block.MetaFilename)
	var b []byte
	err := block.Retry(ctx, s.o.Bucket, s.retryOptions(), func(ctx context.Context) error {
		rc, err := s.o.Bucket.Get(ctx, name)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err = io.ReadAll(rc)
		return err
	})
	if s.o.Bucket.IsObjNotFoundErr(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var m spanblock.Meta
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", name, err)
	}
	if m.ULID != id {
		return nil, fmt.Errorf("%s names block %s", name, m.ULID)
	}
	return &m, nil
}

// removeBucketLocked forgets a bucket block; its cached copy is deleted
// once no reader holds it. The caller holds s.blocksMu.
func (s *Store) removeBucketLocked(e *blockEntry) {
	delete(s.bucket, e.id)
	e.gone = true
	s.releaseLocked(e, false)
}

// removeLocalLocked forgets a local block; its directory is deleted once
// no reader holds it. The caller holds s.blocksMu.
func (s *Store) removeLocalLocked(e *blockEntry) {
	delete(s.local, e.id)
	delete(s.shipped, e.id)
	e.gone = true
	s.releaseLocked(e, false)
}

// releaseLocked drops a reader's hold on e (when held) and deletes a gone
// block nobody holds. The caller holds s.blocksMu.
func (s *Store) releaseLocked(e *blockEntry, held bool) {
	if held {
		e.refs--
	}
	if !e.gone || e.refs > 0 || e.loading != nil {
		return
	}
	if e.blk != nil {
		e.blk.Close()
		e.blk = nil
	}
	if e.local || e.size > 0 {
		os.RemoveAll(e.dir)
		s.metrics.cacheBytes.Add(-e.size)
		e.size = 0
	}
}

// blockFilter selects blocks by their meta.json.
type blockFilter func(m *spanblock.Meta) bool

// candidates returns the blocks a read over tr visits, newest first: local
// blocks, then bucket blocks that are not local, skipping blocks a
// compacted block covers.
func (s *Store) candidates(tr traces.TimeRange, keep blockFilter) []*blockEntry {
	s.blocksMu.Lock()
	defer s.blocksMu.Unlock()
	var es []*blockEntry
	for _, e := range s.local {
		if !e.gone && !e.covered && tr.Overlaps(e.meta.MinTime, e.meta.MaxTime) && (keep == nil || keep(e.meta)) {
			es = append(es, e)
		}
	}
	for id, e := range s.bucket {
		if _, ok := s.local[id]; ok || e.gone || e.covered || e.meta == nil {
			continue
		}
		if tr.Overlaps(e.meta.MinTime, e.meta.MaxTime) && (keep == nil || keep(e.meta)) {
			es = append(es, e)
		}
	}
	slices.SortFunc(es, func(a, b *blockEntry) int {
		if a.meta.MaxTime != b.meta.MaxTime {
			if a.meta.MaxTime > b.meta.MaxTime {
				return -1
			}
			return 1
		}
		return b.id.Compare(a.id)
	})
	return es
}

// acquire returns e's open block, downloading a bucket block into the
// cache first; release must be called when done with it.
func (s *Store) acquire(ctx context.Context, e *blockEntry) (*spanblock.Block, func(), error) {
	s.blocksMu.Lock()
	for {
		if e.gone && e.blk == nil {
			s.blocksMu.Unlock()
			return nil, nil, errBlockGone
		}
		if e.blk != nil {
			e.refs++
			e.lastUse = s.now()
			blk := e.blk
			s.blocksMu.Unlock()
			return blk, s.releaser(e), nil
		}
		if e.loading == nil {
			break
		}
		ch := e.loading
		s.blocksMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		s.blocksMu.Lock()
		if e.loadErr != nil && e.loading == nil && e.blk == nil {
			err := e.loadErr
			s.blocksMu.Unlock()
			return nil, nil, err
		}
	}
	// Download (or reopen a block the cache held at Open).
	ch := make(chan struct{})
	e.loading, e.loadErr = ch, nil
	s.blocksMu.Unlock()

	blk, size, err := s.load(ctx, e)

	s.blocksMu.Lock()
	defer s.blocksMu.Unlock()
	e.loading = nil
	close(ch)
	if err != nil {
		e.loadErr = err
		s.releaseLocked(e, false)
		return nil, nil, err
	}
	e.blk, e.lastUse = blk, s.now()
	s.metrics.cacheBytes.Add(size - e.size)
	e.size = size
	e.refs++
	s.evictLocked()
	return blk, s.releaser(e), nil
}

var errBlockGone = errors.New("block gone")

func (s *Store) releaser(e *blockEntry) func() {
	return func() {
		s.blocksMu.Lock()
		s.releaseLocked(e, true)
		s.blocksMu.Unlock()
	}
}

// load opens a bucket block from the cache, downloading it first unless a
// complete copy is there.
func (s *Store) load(ctx context.Context, e *blockEntry) (*spanblock.Block, int64, error) {
	if _, err := os.Stat(filepath.Join(e.dir, block.MetaFilename)); err != nil {
		os.RemoveAll(e.dir)
		start := time.Now()
		if err := block.DownloadDir(ctx, s.o.Bucket, s.bucketPrefix(e.id), e.dir); err != nil {
			os.RemoveAll(e.dir)
			return nil, 0, fmt.Errorf("download block %s: %w", e.id, err)
		}
		s.metrics.blocksDownloaded.Inc()
		s.logger.Debug("block downloaded", "block", e.id, "duration", time.Since(start))
	}
	blk, err := spanblock.Open(e.dir)
	if err != nil {
		os.RemoveAll(e.dir)
		return nil, 0, fmt.Errorf("open cached block %s: %w", e.id, err)
	}
	return blk, dirSize(e.dir), nil
}

// evictLocked deletes least recently used cached blocks that no reader
// holds while the cache is over CacheBytes. The caller holds s.blocksMu.
func (s *Store) evictLocked() {
	if s.o.CacheBytes < 0 {
		return
	}
	var total int64
	var idle []*blockEntry
	for _, e := range s.bucket {
		total += e.size
		if e.size > 0 && e.refs == 0 && e.loading == nil {
			idle = append(idle, e)
		}
	}
	if total <= s.o.CacheBytes {
		return
	}
	slices.SortFunc(idle, func(a, b *blockEntry) int { return a.lastUse.Compare(b.lastUse) })
	for _, e := range idle {
		if total <= s.o.CacheBytes {
			break
		}
		if e.blk != nil {
			e.blk.Close()
			e.blk = nil
		}
		os.RemoveAll(e.dir)
		total -= e.size
		s.metrics.cacheBytes.Add(-e.size)
		e.size = 0
		s.metrics.cacheEvictions.Inc()
	}
}

// ApplyRetention deletes the blocks (local and in the bucket) whose spans
// all started before now-Retention and the head's spans that did; and the
// local blocks that are shipped and older than LocalRetention.
func (s *Store) ApplyRetention(ctx context.Context) error {
	s.passMu.Lock()
	defer s.passMu.Unlock()
	now := s.now()
	cutoff := uint64(now.Add(-s.o.Retention).UnixNano())
	var localCutoff uint64
	if s.o.LocalRetention > 0 {
		localCutoff = uint64(now.Add(-s.o.LocalRetention).UnixNano())
	}

	s.headMu.Lock()
	dropped := 0
	for id, t := range s.head.traces {
		if t.minT >= cutoff {
			continue
		}
		n := t.keep(func(sp *traces.Span, _ uint64) bool { return sp.StartUnixNano >= cutoff })
		dropped += len(t.spans)
		if n == nil {
			delete(s.head.traces, id)
			continue
		}
		dropped -= len(n.spans)
		s.head.traces[id] = n
	}
	s.head.spans -= dropped
	s.headMu.Unlock()

	var expired []ulid.ULID
	s.blocksMu.Lock()
	for id, e := range s.local {
		_, shipped := s.shipped[id]
		switch {
		case e.meta.MaxTime < cutoff:
			s.removeLocalLocked(e)
			s.metrics.blocksDeleted.Inc()
		case shipped && e.meta.MaxTime < localCutoff:
			s.removeLocalLocked(e)
		}
	}
	if s.o.Bucket != nil {
		for id, e := range s.bucket {
			if e.meta != nil && e.meta.MaxTime < cutoff {
				expired = append(expired, id)
			}
		}
	}
	err := s.writeShippedRecordLocked()
	s.recomputeCoverLocked()
	s.blocksMu.Unlock()

	errs := []error{err}
	for _, id := range expired {
		if err := block.Delete(ctx, s.o.Bucket, s.bucketPrefix(id)); err != nil {
			errs = append(errs, fmt.Errorf("delete expired block %s: %w", id, err))
			continue
		}
		s.metrics.blocksDeleted.Inc()
		s.blocksMu.Lock()
		if e := s.bucket[id]; e != nil {
			s.removeBucketLocked(e)
		}
		s.recomputeCoverLocked()
		s.blocksMu.Unlock()
	}
	if dropped > 0 {
		s.logger.Debug("expired head spans dropped", "spans", dropped)
	}
	return errors.Join(errs...)
}
