package compact

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	promtsdb "github.com/prometheus/prometheus/tsdb"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

// compact compacts every group until its planner finds nothing more to
// do. A failing group does not stop the others.
func (p *pass) compact(ctx context.Context, blocks map[ulid.ULID]*remoteBlock) error {
	var errs []error
	for _, g := range groups(blocks) {
		if len(g.labels) == 0 {
			p.c.logger.Warn("not compacting blocks without external labels; Thanos refuses them too", "group", g.key, "blocks", len(g.blocks))
			continue
		}
		for {
			if err := ctx.Err(); err != nil {
				return errors.Join(append(errs, err)...)
			}
			again, err := p.compactGroup(ctx, g, blocks)
			if err != nil {
				errs = append(errs, fmt.Errorf("compact group %s: %w", g.key, err))
				break
			}
			if !again {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// compactGroup makes one compaction in g and reports whether there may be
// more to do.
func (p *pass) compactGroup(ctx context.Context, g *group, blocks map[ulid.ULID]*remoteBlock) (bool, error) {
	c := p.c

	// A block marked for an inconsistency halts the group until someone
	// resolves it.
	for _, b := range g.blocks {
		if r := b.halting(); r != "" {
			p.halt(g.key, string(r), fmt.Errorf("block %s is marked %s: %s", b.id, r, b.noCompact.Details))
			return false, nil
		}
	}

	// Blocks whose data is in a newer block of the group (an interrupted
	// compaction uploaded its result but did not mark them) are marked for
	// deletion, once the newer block is seen to have all its files.
	if dups := duplicates(g.blocks); len(dups) > 0 {
		checked := map[ulid.ULID]bool{}
		for _, b := range g.blocks {
			cover, ok := dups[b.id]
			if !ok {
				continue
			}
			if !checked[cover.id] {
				if err := checkFiles(ctx, c.bkt, cover.meta); err != nil {
					return false, p.haltOn(ctx, g, []*remoteBlock{cover}, err)
				}
				checked[cover.id] = true
			}
			if err := p.markDeleted(ctx, b, fmt.Sprintf("its data is in block %s", cover.id)); err != nil {
				return false, err
			}
		}
		g.blocks = slices.DeleteFunc(g.blocks, func(b *remoteBlock) bool { return !b.live() })
	}

	// Overlapping blocks would be merged into one with duplicated or
	// mixed samples; resolving that (vertical compaction, deduplication of
	// replicas) is for a person to decide.
	if sets := overlaps(g.blocks); len(sets) > 0 {
		for _, set := range sets {
			ids := make([]string, len(set))
			for i, b := range set {
				ids[i] = fmt.Sprintf("%s (%d-%d)", b.id, b.meta.MinTime, b.meta.MaxTime)
			}
			details := "overlapping blocks: " + strings.Join(ids, ", ")
			for _, b := range set {
				if err := p.markNoCompact(ctx, b, NoCompactOverlap, details); err != nil {
					return false, err
				}
			}
			p.halt(g.key, string(NoCompactOverlap), errors.New(details))
		}
		return false, nil
	}

	toCompact := plan(c.ranges, g.blocks)
	if len(toCompact) == 0 {
		return false, nil
	}

	dir := filepath.Join(c.workDir, compactSubdir, dirName(g.key))
	if err := os.RemoveAll(dir); err != nil {
		return false, err
	}
	defer os.RemoveAll(dir)
	dirs := make([]string, len(toCompact))
	for i, b := range toCompact {
		dirs[i] = filepath.Join(dir, b.id.String())
		err := downloadBlock(ctx, c.bkt, b.meta, dirs[i])
		if err == nil {
			err = verifyBlock(ctx, c.logger, dirs[i], b.meta)
		}
		if err != nil {
			return false, p.haltOn(ctx, g, []*remoteBlock{b}, err)
		}
	}

	start := c.now()
	comp, err := promtsdb.NewLeveledCompactorWithOptions(ctx, nil, c.logger, c.ranges, downsample.NewPool(), promtsdb.LeveledCompactorOptions{
		// Overlaps halt the group above; never merge them here.
		EnableOverlappingCompaction: false,
	})
	if err != nil {
		return false, err
	}
	ids, err := comp.Compact(dir, dirs, nil)
	if err != nil {
		return false, fmt.Errorf("compact %v: %w", blockIDs(toCompact), err)
	}
	if len(ids) == 0 {
		// No samples at all: nothing to upload, and nothing lost by
		// deleting the sources.
		for _, b := range toCompact {
			if err := p.markDeleted(ctx, b, "compacted into an empty block"); err != nil {
				return false, err
			}
		}
		g.blocks = slices.DeleteFunc(g.blocks, func(b *remoteBlock) bool { return !b.live() })
		return true, nil
	}

	id := ids[0]
	bdir := filepath.Join(dir, id.String())
	// Thanos uploads no tombstones.
	if err := os.Remove(filepath.Join(bdir, "tombstones")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	bm, err := block.ReadPrometheusMeta(bdir)
	if err != nil {
		return false, err
	}
	m := &block.Meta{
		BlockMeta: *bm,
		Thanos: block.ThanosMeta{
			Version:    block.ThanosVersion1,
			Labels:     cloneLabels(g.labels),
			Downsample: block.ThanosDownsample{Resolution: g.resolution},
			Source:     block.SourceCompactor,
		},
	}
	if err := block.WriteMeta(bdir, m); err != nil {
		return false, err
	}
	if err := verifyBlock(ctx, c.logger, bdir, m); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		p.halt(g.key, "invalid-output", fmt.Errorf("compacted block of %v does not verify: %w", blockIDs(toCompact), err))
		return false, nil
	}
	for _, b := range g.blocks {
		if !slices.Contains(toCompact, b) && b.meta.MinTime < m.MaxTime && m.MinTime < b.meta.MaxTime {
			p.halt(g.key, string(NoCompactOverlap), fmt.Errorf("compacted block of %v would overlap block %s", blockIDs(toCompact), b.id))
			return false, nil
		}
	}

	if err := block.UploadWithMeta(ctx, c.bkt, bdir, m, block.RetryOptions{}); err != nil {
		return false, fmt.Errorf("upload compacted block %s: %w", id, err)
	}
	c.cacheMu.Lock()
	c.metas[id] = m
	c.cacheMu.Unlock()
	nb := &remoteBlock{id: id, meta: m}
	blocks[id] = nb
	c.metrics.compactions.Inc()
	c.logger.Info("blocks compacted", "group", g.key, "block", id, "sources", blockIDs(toCompact),
		"mint", m.MinTime, "maxt", m.MaxTime, "level", m.Compaction.Level, "duration", c.now().Sub(start))

	for _, b := range toCompact {
		if err := p.markDeleted(ctx, b, fmt.Sprintf("compacted into block %s", id)); err != nil {
			return false, err
		}
	}
	g.blocks = slices.DeleteFunc(g.blocks, func(b *remoteBlock) bool { return !b.live() })
	g.blocks = append(g.blocks, nb)
	g.sort()
	return true, nil
}

// haltOn handles err found in the blocks bs of group g: a *blockError
// marks its block for no compaction and halts the group; any other error
// is returned.
func (p *pass) haltOn(ctx context.Context, g *group, bs []*remoteBlock, err error) error {
	var be *blockError
	if !errors.As(err, &be) {
		return err
	}
	for _, b := range bs {
		if b.id == be.id {
			if merr := p.markNoCompact(ctx, b, be.reason, be.err.Error()); merr != nil {
				return merr
			}
		}
	}
	p.halt(g.key, string(be.reason), be)
	return nil
}

// downsampleAll makes the missing downsampled copies of the live blocks:
// a 5m copy of every raw block that spans DownsampleAfter.FiveMinutes and
// whose sources are not all in a 5m block already, a 1h copy likewise of
// 5m blocks (Thanos's DownsampleBucket). Blocks of halted groups are left
// alone, as are blocks whose copy would be past its retention.
func (p *pass) downsampleAll(ctx context.Context, blocks map[ulid.ULID]*remoteBlock) error {
	c := p.c
	covered := map[int64]map[ulid.ULID]bool{block.Resolution5m: {}, block.Resolution1h: {}}
	halted := map[string]bool{}
	for k := range p.halted {
		halted[k] = true
	}
	for _, b := range blocks {
		if !b.live() {
			continue
		}
		if set, ok := covered[b.meta.Thanos.Downsample.Resolution]; ok {
			for _, s := range b.meta.Compaction.Sources {
				set[s] = true
			}
		}
		if b.halting() != "" {
			halted[groupKey(b.meta)] = true
		}
	}
	now := c.now()
	var errs []error
	for _, b := range sortedBlocks(blocks) {
		if !b.live() || len(b.meta.Thanos.Labels) == 0 || halted[groupKey(b.meta)] {
			continue
		}
		var target, after int64
		switch b.meta.Thanos.Downsample.Resolution {
		case block.ResolutionRaw:
			target, after = block.Resolution5m, c.downsampleAfter[0]
		case block.Resolution5m:
			target, after = block.Resolution1h, c.downsampleAfter[1]
		default:
			continue
		}
		if b.meta.MaxTime-b.meta.MinTime < after {
			continue
		}
		if !slices.ContainsFunc(b.meta.Compaction.Sources, func(s ulid.ULID) bool { return !covered[target][s] }) {
			continue
		}
		if r := c.retention.of(target); r > 0 && now.After(time.UnixMilli(b.meta.MaxTime).Add(r)) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		ok, err := p.downsampleBlock(ctx, b, target)
		if err != nil {
			errs = append(errs, fmt.Errorf("downsample block %s: %w", b.id, err))
			continue
		}
		if ok {
			for _, s := range b.meta.Compaction.Sources {
				covered[target][s] = true
			}
		} else {
			halted[groupKey(b.meta)] = true
		}
	}
	return errors.Join(errs...)
}

// downsampleBlock downloads, verifies and downsamples b to resolution res
// and uploads the result. It reports false when it halted b's group.
func (p *pass) downsampleBlock(ctx context.Context, b *remoteBlock, res int64) (bool, error) {
	c := p.c
	key := groupKey(b.meta)
	dir := filepath.Join(c.workDir, downsampleSubdir)
	if err := os.RemoveAll(dir); err != nil {
		return false, err
	}
	defer os.RemoveAll(dir)
	bdir := filepath.Join(dir, b.id.String())
	err := downloadBlock(ctx, c.bkt, b.meta, bdir)
	if err == nil {
		err = verifyBlock(ctx, c.logger, bdir, b.meta)
	}
	if err != nil {
		g := &group{key: key}
		return false, p.haltOn(ctx, g, []*remoteBlock{b}, err)
	}
	blk, err := openBlock(c.logger, bdir, b.meta)
	if err != nil {
		return false, err
	}
	start := c.now()
	id, err := Downsample(ctx, b.meta, blk, dir, res)
	if cerr := blk.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	out := filepath.Join(dir, id.String())
	f, err := os.Open(filepath.Join(out, block.MetaFilename))
	if err != nil {
		return false, err
	}
	m, err := block.ReadMeta(f)
	f.Close()
	if err != nil {
		return false, err
	}
	if err := verifyBlock(ctx, c.logger, out, m); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		p.halt(key, "invalid-output", fmt.Errorf("downsampled block of %s does not verify: %w", b.id, err))
		return false, nil
	}
	if err := block.UploadWithMeta(ctx, c.bkt, out, m, block.RetryOptions{}); err != nil {
		return false, fmt.Errorf("upload downsampled block %s: %w", id, err)
	}
	c.cacheMu.Lock()
	c.metas[id] = m
	c.cacheMu.Unlock()
	c.metrics.downsamples.WithLabelValues(resolutionName(res)).Inc()
	c.logger.Info("block downsampled", "block", b.id, "result", id, "resolution", resolutionName(res),
		"series", m.Stats.NumSeries, "duration", c.now().Sub(start))
	return true, nil
}

func resolutionName(res int64) string {
	switch res {
	case block.ResolutionRaw:
		return "raw"
	case block.Resolution5m:
		return "5m"
	case block.Resolution1h:
		return "1h"
	}
	return fmt.Sprint(time.Duration(res) * time.Millisecond)
}

// dirName turns a group key into a directory name.
func dirName(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return fmt.Sprintf("%016x", h.Sum64())
}

func blockIDs(bs []*remoteBlock) []ulid.ULID {
	ids := make([]ulid.ULID, len(bs))
	for i, b := range bs {
		ids[i] = b.id
	}
	return ids
}
