package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/meshlens/meshlens/traces/store/spanblock"
	"github.com/meshlens/meshlens/tsdb/block"
)

// Compact makes one compaction pass over the bucket: for each of
// CompactionRanges, shortest first, it merges the blocks whose spans all
// start within one window of that size into one block, once the window
// has been over for MaxBlockDuration+TraceIdle (later spans are rare and
// merged by a later pass). The merged block is uploaded (meta.json last)
// before its sources are deleted, and readers skip blocks a compacted
// block covers, so a trace is found throughout.
func (s *Store) Compact(ctx context.Context) error {
	if s.o.Bucket == nil {
		return nil
	}
	s.passMu.Lock()
	defer s.passMu.Unlock()
	var errs []error
	for _, r := range s.o.CompactionRanges {
		if r <= 0 {
			continue
		}
		for _, group := range s.compactionGroups(r) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := s.compactGroup(ctx, group); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// compactionGroups returns the groups of two or more visible bucket
// blocks that lie within one closed window of size r, oldest first.
func (s *Store) compactionGroups(r time.Duration) [][]*blockEntry {
	width := uint64(r)
	closedBefore := uint64(s.now().Add(-s.o.MaxBlockDuration - s.o.TraceIdle).UnixNano())
	s.blocksMu.Lock()
	defer s.blocksMu.Unlock()
	groups := map[uint64][]*blockEntry{}
	for _, e := range s.bucket {
		if e.gone || e.covered || e.meta == nil {
			continue
		}
		w := e.meta.MinTime / width
		if e.meta.MaxTime/width != w || (w+1)*width > closedBefore {
			continue
		}
		groups[w] = append(groups[w], e)
	}
	var out [][]*blockEntry
	for _, g := range groups {
		if len(g) < 2 {
			continue
		}
		slices.SortFunc(g, func(a, b *blockEntry) int { return a.id.Compare(b.id) })
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b []*blockEntry) int {
		if a[0].meta.MinTime < b[0].meta.MinTime {
			return -1
		}
		return 1
	})
	return out
}

// compactGroup merges the blocks of group into one, uploads it and deletes
// them from the bucket.
func (s *Store) compactGroup(ctx context.Context, group []*blockEntry) error {
	blks := make([]*spanblock.Block, 0, len(group))
	for _, e := range group {
		// Local copies of shipped blocks save a download.
		var (
			blk     *spanblock.Block
			release func()
			err     error
		)
		s.blocksMu.Lock()
		le := s.local[e.id]
		s.blocksMu.Unlock()
		if le != nil {
			blk, release, err = s.acquire(ctx, le)
		}
		if le == nil || err != nil {
			blk, release, err = s.acquire(ctx, e)
		}
		if err != nil {
			return fmt.Errorf("compact: %w", err)
		}
		defer release()
		blks = append(blks, blk)
	}
	id := ulid.MustNew(ulid.Timestamp(s.now()), ulid.DefaultEntropy())
	dir := filepath.Join(s.compactDir(), id.String())
	defer os.RemoveAll(dir)
	start := time.Now()
	meta, err := spanblock.Merge(s.compactDir(), id, blks, spanblock.WriteOptions{})
	if err != nil {
		return fmt.Errorf("compact: merge %d blocks into %s: %w", len(blks), id, err)
	}
	if err := block.UploadDir(ctx, s.o.Bucket, dir, s.bucketPrefix(id), s.retryOptions()); err != nil {
		return fmt.Errorf("compact: upload %s: %w", id, err)
	}
	s.blocksMu.Lock()
	s.bucket[id] = &blockEntry{id: id, meta: meta, dir: filepath.Join(s.o.CacheDir, id.String())}
	s.recomputeCoverLocked()
	s.blocksMu.Unlock()
	s.metrics.blocksCompacted.Inc()
	s.logger.Debug("blocks compacted", "block", id, "sources", len(group), "level", meta.Level, "spans", meta.Spans, "duration", time.Since(start))

	var errs []error
	for _, e := range group {
		if err := block.Delete(ctx, s.o.Bucket, s.bucketPrefix(e.id)); err != nil {
			errs = append(errs, fmt.Errorf("compact: delete source %s: %w", e.id, err))
			continue
		}
		s.blocksMu.Lock()
		if cur := s.bucket[e.id]; cur == e {
			s.removeBucketLocked(e)
		}
		s.blocksMu.Unlock()
	}
	return errors.Join(errs...)
}
