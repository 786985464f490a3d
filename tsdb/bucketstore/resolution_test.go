package bucketstore

import (
	"testing"
	"time"

	"github.com/prometheus/prometheus/storage"

	"github.com/meshlens/meshlens/tsdb/block"
)

// TestResolutionFollowsStepAndRange checks which resolution a Select reads
// when raw and 5m blocks cover the same time: a 1h step reads the 5m
// aggregates unless the range selector is so short that a window would hold
// one or two of them.
func TestResolutionFollowsStepAndRange(t *testing.T) {
	day := int64(24 * time.Hour / time.Millisecond)
	meta := func(res int64) *block.Meta {
		m := &block.Meta{}
		m.MinTime, m.MaxTime = 0, day
		m.Thanos.Downsample.Resolution = res
		return m
	}
	q := &baseQuerier{mint: 0, maxt: day, metas: []*block.Meta{meta(block.ResolutionRaw), meta(block.Resolution5m)}}
	for _, tc := range []struct {
		name        string
		step, rng   time.Duration
		wantResolve int64
	}{
		{"1h step, instant selector", time.Hour, 0, block.Resolution5m},
		{"1h step, [1h] window", time.Hour, time.Hour, block.Resolution5m},
		{"1h step, [5m] window", time.Hour, 5 * time.Minute, block.ResolutionRaw},
		{"1m step, [1h] window", time.Minute, time.Hour, block.ResolutionRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := q.parts(&storage.SelectHints{Start: 0, End: day, Step: tc.step.Milliseconds(), Range: tc.rng.Milliseconds()})
			if len(parts) != 1 || parts[0].meta.Thanos.Downsample.Resolution != tc.wantResolve {
				t.Errorf("parts = %+v, want the resolution %d block", parts, tc.wantResolve)
			}
		})
	}
}
