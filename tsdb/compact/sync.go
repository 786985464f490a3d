package compact

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/oklog/ulid/v2"

	"github.com/meshlens/meshlens/tsdb/block"
)

// syncConcurrency bounds the bucket requests of one sync.
const syncConcurrency = 8

// remoteBlock is a block in the bucket as of the last sync.
type remoteBlock struct {
	id ulid.ULID
	// meta is nil for a partial block: one without meta.json, being
	// uploaded, left by an interrupted upload, or being deleted.
	meta      *block.Meta
	deletion  *block.DeletionMark
	noCompact *block.NoCompactMark
	// badMeta is set when meta.json is there but unreadable; such a block
	// is left alone.
	badMeta bool
}

// live reports whether the block is complete and not marked for
// deletion: whether it takes part in compaction and downsampling.
func (b *remoteBlock) live() bool { return b.meta != nil && b.deletion == nil }

// halting returns the halting reason of the block's no-compact mark, or "".
func (b *remoteBlock) halting() block.NoCompactReason {
	if b.noCompact != nil && slices.Contains(haltReasons, b.noCompact.Reason) {
		return b.noCompact.Reason
	}
	return ""
}

// syncBlocks lists the blocks of the bucket with their meta.json and
// marks. meta.json never changes once uploaded, so metas are read once and
// cached; marks are read again when they appear.
func (c *Compactor) syncBlocks(ctx context.Context) (map[ulid.ULID]*remoteBlock, error) {
	ids, err := block.IDs(ctx, c.bkt, "")
	if err != nil {
		return nil, err
	}

	blocks := make(map[ulid.ULID]*remoteBlock, len(ids))
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		work = make(chan ulid.ULID)
	)
	for range min(syncConcurrency, len(ids)) {
		wg.Go(func() {
			for id := range work {
				b, err := c.syncBlock(ctx, id)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					blocks[id] = b
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Forget cached metas of blocks that are gone.
	c.cacheMu.Lock()
	for id := range c.metas {
		if _, ok := blocks[id]; !ok {
			delete(c.metas, id)
		}
	}
	for id := range c.sizes {
		if _, ok := blocks[id]; !ok {
			delete(c.sizes, id)
		}
	}
	c.cacheMu.Unlock()
	return blocks, nil
}

func (c *Compactor) syncBlock(ctx context.Context, id ulid.ULID) (*remoteBlock, error) {
	b := &remoteBlock{id: id}
	var hasMeta, hasDeletion, hasNoCompact bool
	err := c.bkt.Iter(ctx, id.String()+"/", func(name string) error {
		switch strings.TrimPrefix(name, id.String()+"/") {
		case block.MetaFilename:
			hasMeta = true
		case block.DeletionMarkFilename:
			hasDeletion = true
		case block.NoCompactMarkFilename:
			hasNoCompact = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list block %s: %w", id, err)
	}
	if hasMeta {
		c.cacheMu.Lock()
		m := c.metas[id]
		c.cacheMu.Unlock()
		if m == nil {
			var err error
			m, err = block.DownloadMeta(ctx, c.bkt, id)
			switch {
			case errors.Is(err, block.ErrNotFound):
				// Deleted since the listing.
			case errors.Is(err, block.ErrInvalidMeta):
				c.logger.Warn("ignoring block with unreadable meta.json", "block", id, "err", err)
				b.badMeta = true
				m = nil
			case err != nil:
				return nil, err
			default:
				c.cacheMu.Lock()
				c.metas[id] = m
				c.cacheMu.Unlock()
			}
		}
		if !b.badMeta {
			b.meta = m
		}
	}
	if hasDeletion {
		var dm block.DeletionMark
		ok, err := c.readMark(ctx, id, block.DeletionMarkFilename, &dm)
		if err != nil {
			return nil, err
		}
		if ok {
			b.deletion = &dm
		}
	}
	if hasNoCompact {
		var nm block.NoCompactMark
		ok, err := c.readMark(ctx, id, block.NoCompactMarkFilename, &nm)
		if err != nil {
			return nil, err
		}
		if ok {
			b.noCompact = &nm
		}
	}
	return b, nil
}

// readMark decodes a mark file of block id into v. A mark that is gone
// or does not decode is reported as absent; Thanos ignores such marks too.
func (c *Compactor) readMark(ctx context.Context, id ulid.ULID, file string, v any) (bool, error) {
	found, err := block.ReadMark(ctx, c.bkt, id, file, v)
	if found && err != nil {
		c.logger.Warn("ignoring unreadable mark", "block", id, "file", file, "err", err)
		return false, nil
	}
	return found, err
}
