package compact

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/tsdb/block"
)

// group is a compaction group: the live blocks of one set of external
// labels and one resolution. Blocks of different groups are never merged.
type group struct {
	key        string
	labels     map[string]string
	resolution int64
	blocks     []*remoteBlock // Sorted by MinTime, then ULID.
}

// groupKey is Thanos's compaction group key: resolution@labels.
func groupKey(m *block.Meta) string {
	return fmt.Sprintf("%d@%s", m.Thanos.Downsample.Resolution, labels.FromMap(m.Thanos.Labels))
}

// groups sorts the live blocks into compaction groups, ordered by key.
func groups(blocks map[ulid.ULID]*remoteBlock) []*group {
	byKey := map[string]*group{}
	for _, b := range blocks {
		if !b.live() {
			continue
		}
		k := groupKey(b.meta)
		g := byKey[k]
		if g == nil {
			g = &group{key: k, labels: b.meta.Thanos.Labels, resolution: b.meta.Thanos.Downsample.Resolution}
			byKey[k] = g
		}
		g.blocks = append(g.blocks, b)
	}
	out := make([]*group, 0, len(byKey))
	for _, g := range byKey {
		g.sort()
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *group) int { return cmp.Compare(a.key, b.key) })
	return out
}

func (g *group) sort() {
	slices.SortFunc(g.blocks, func(a, b *remoteBlock) int {
		if c := cmp.Compare(a.meta.MinTime, b.meta.MinTime); c != 0 {
			return c
		}
		return a.id.Compare(b.id)
	})
}

// duplicates returns the blocks of bs whose compaction sources are all
// sources of another block of bs, mapped to that block: their data is in
// that block, typically because a compaction uploaded its result but was
// stopped before it marked its sources for deletion. Of blocks with equal
// sources the one with the larger ULID is the duplicate. This is
// Thanos's deduplicate filter, whose duplicates its compactor garbage
// collects.
func duplicates(bs []*remoteBlock) map[ulid.ULID]*remoteBlock {
	sorted := slices.Clone(bs)
	// Most sources first, so that covering blocks come before what they
	// cover.
	slices.SortFunc(sorted, func(a, b *remoteBlock) int {
		if c := cmp.Compare(len(b.meta.Compaction.Sources), len(a.meta.Compaction.Sources)); c != 0 {
			return c
		}
		return a.id.Compare(b.id)
	})
	dups := map[ulid.ULID]*remoteBlock{}
	var covering []*remoteBlock
next:
	for _, b := range sorted {
		for _, p := range covering {
			if containsAll(p.meta.Compaction.Sources, b.meta.Compaction.Sources) {
				dups[b.id] = p
				continue next
			}
		}
		covering = append(covering, b)
	}
	return dups
}

func containsAll(set, sub []ulid.ULID) bool {
	if len(sub) == 0 {
		return false
	}
	for _, s := range sub {
		if !slices.Contains(set, s) {
			return false
		}
	}
	return true
}

// overlaps returns the sets of blocks of bs (sorted by MinTime) whose
// time ranges overlap, each sorted by MinTime.
func overlaps(bs []*remoteBlock) [][]*remoteBlock {
	var out [][]*remoteBlock
	var cur []*remoteBlock
	var maxt int64
	for i, b := range bs {
		if i > 0 && b.meta.MinTime < maxt {
			if len(cur) == 0 {
				cur = append(cur, bs[i-1])
			}
			cur = append(cur, b)
		} else if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
		if i == 0 || b.meta.MaxTime > maxt {
			maxt = b.meta.MaxTime
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// plan picks the blocks of bs (sorted by MinTime, not overlapping) to
// compact next, as Thanos's planner does it, which is Prometheus's leveled
// planner working on metas instead of directories: the newest block is
// left out, so that a block just uploaded is not compacted at once; then
// for each range from the second on, the first run of at least two blocks
// within one aligned range that either fills the range or ends before the
// newest block. Blocks with a no-compact mark are never picked, and split
// the runs around them so that no result spans them. ranges are in
// milliseconds.
func plan(ranges []int64, bs []*remoteBlock) []*remoteBlock {
	if len(bs) == 0 || len(ranges) < 2 {
		return nil
	}
	excluded := func(b *remoteBlock) bool { return b.noCompact != nil }
	metas := bs[:len(bs)-1]
	if len(metas) == 0 {
		return nil
	}
	highTime := metas[len(metas)-1].meta.MinTime
	for _, iv := range ranges[1:] {
		for _, p := range splitByRange(metas, iv) {
			if len(p) < 2 {
				continue
			}
			mint, maxt := p[0].meta.MinTime, p[len(p)-1].meta.MaxTime
			// Take the range if it is full (gaps allowed) or lies before the
			// newest block; otherwise another block may still come into it.
			if maxt-mint != iv && maxt > highTime {
				continue
			}
			last := 0
			for i, b := range p {
				if !excluded(b) {
					continue
				}
				if i-last > 1 {
					return p[last:i]
				}
				last = i + 1
			}
			if len(p)-last > 1 {
				return p[last:]
			}
		}
	}
	return nil
}

// splitByRange splits bs (sorted by MinTime) into runs that each lie
// within one range of length tr aligned to 0. Blocks that fit in no such
// range are skipped. For [0-10, 10-20, 50-60, 90-100] and tr 30 it returns
// [0-10, 10-20], [50-60], [90-100].
func splitByRange(bs []*remoteBlock, tr int64) [][]*remoteBlock {
	var out [][]*remoteBlock
	for i := 0; i < len(bs); {
		m := bs[i].meta
		var t0 int64
		if m.MinTime >= 0 {
			t0 = tr * (m.MinTime / tr)
		} else {
			t0 = tr * ((m.MinTime - tr + 1) / tr)
		}
		if m.MaxTime > t0+tr {
			i++
			continue
		}
		var run []*remoteBlock
		for ; i < len(bs) && bs[i].meta.MaxTime <= t0+tr; i++ {
			run = append(run, bs[i])
		}
		if len(run) > 0 {
			out = append(out, run)
		}
	}
	return out
}
