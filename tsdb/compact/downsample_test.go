package compact

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

func xorChunk(t *testing.T, ss []sample) chunkenc.Chunk {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		app.Append(0, s.t, s.v)
	}
	return c
}

// aggrSamples decodes every aggregate of c.
func aggrSamples(t *testing.T, c downsample.AggrChunk) map[downsample.AggrType][]sample {
	t.Helper()
	out := map[downsample.AggrType][]sample{}
	for at := downsample.AggrCount; at <= downsample.AggrCounter; at++ {
		sub, err := c.Get(at)
		if errors.Is(err, downsample.ErrAggrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		it := sub.Iterator(nil)
		for it.Next() != chunkenc.ValNone {
			ts, v := it.At()
			out[at] = append(out[at], sample{ts, v})
		}
	}
	return out
}

func encodeAggr(t *testing.T, m map[downsample.AggrType][]sample) *downsample.AggrChunk {
	t.Helper()
	var chks [5]chunkenc.Chunk
	for at, ss := range m {
		chks[at] = xorChunk(t, ss)
	}
	return downsample.EncodeAggrChunk(chks)
}

var staleNaN = math.Float64frombits(value.StaleNaN)

// The cases below are Thanos's (pkg/compact/downsample/downsample_test.go):
// the same input must give the same aggregates, timestamps included.
func TestDownsampleLikeThanos(t *testing.T) {
	t.Run("raw", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			in   []sample
			res  int64
			want map[downsample.AggrType][]sample
		}{
			{
				name: "single chunk",
				in:   []sample{{20, 1}, {40, 2}, {60, 3}, {80, 1}, {100, 2}, {101, staleNaN}, {120, 5}, {180, 10}, {250, 1}},
				res:  100,
				want: map[downsample.AggrType][]sample{
					downsample.AggrCount:   {{99, 4}, {199, 3}, {250, 1}},
					downsample.AggrSum:     {{99, 7}, {199, 17}, {250, 1}},
					downsample.AggrMin:     {{99, 1}, {199, 2}, {250, 1}},
					downsample.AggrMax:     {{99, 3}, {199, 10}, {250, 1}},
					downsample.AggrCounter: {{20, 1}, {99, 4}, {199, 13}, {250, 14}, {250, 1}},
				},
			},
			{
				name: "three chunks",
				in: []sample{
					{20, 1}, {40, 2}, {60, 3}, {80, 1}, {100, 2}, {101, staleNaN}, {120, 5}, {180, 10}, {250, 2},
					{260, 1}, {300, 10}, {340, 15}, {380, 25}, {420, 35},
					{460, staleNaN}, {500, 10}, {540, 3},
				},
				res: 100,
				want: map[downsample.AggrType][]sample{
					downsample.AggrCount:   {{99, 4}, {199, 3}, {299, 2}, {399, 3}, {499, 1}, {540, 2}},
					downsample.AggrSum:     {{99, 7}, {199, 17}, {299, 3}, {399, 50}, {499, 35}, {540, 13}},
					downsample.AggrMin:     {{99, 1}, {199, 2}, {299, 1}, {399, 10}, {499, 35}, {540, 3}},
					downsample.AggrMax:     {{99, 3}, {199, 10}, {299, 2}, {399, 25}, {499, 35}, {540, 10}},
					downsample.AggrCounter: {{20, 1}, {99, 4}, {199, 13}, {299, 16}, {399, 40}, {499, 50}, {540, 63}, {540, 3}},
				},
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var in []sample
				it := xorChunk(t, tc.in).Iterator(nil)
				if err := expandFloats(it, &in); err != nil {
					t.Fatal(err)
				}
				out := downsampleRaw(in, tc.res)
				if len(out) != 1 {
					t.Fatalf("%d chunks, want 1", len(out))
				}
				if got := aggrSamples(t, *out[0].Chunk.(*downsample.AggrChunk)); !equalAggr(got, tc.want) {
					t.Errorf("got %v\nwant %v", got, tc.want)
				}
			})
		}
	})

	t.Run("aggregates", func(t *testing.T) {
		first := map[downsample.AggrType][]sample{
			downsample.AggrCount: {{199, 5}, {299, 1}, {399, 10}, {400, 3}, {499, 10}, {699, 0}, {999, 100}},
			downsample.AggrSum:   {{199, 5}, {299, 1}, {399, 10}, {400, 3}, {499, 10}, {699, 0}, {999, 100}},
			downsample.AggrMin:   {{199, 5}, {299, 1}, {399, 10}, {400, -3}, {499, 10}, {699, 0}, {999, 100}},
			downsample.AggrMax:   {{199, 5}, {299, 1}, {399, 10}, {400, -3}, {499, 10}, {699, 0}, {999, 100}},
			downsample.AggrCounter: {
				{99, 100}, {299, 150}, {499, 210}, {499, 10},
				{599, 20}, {799, 50}, {999, 120}, {999, 50},
				{1099, 40}, {1199, 80}, {1299, 110},
			},
		}
		second := map[downsample.AggrType][]sample{
			downsample.AggrCount: {{1399, 10}, {1400, 3}, {1499, 10}, {1699, 0}, {1999, 100}},
			downsample.AggrSum:   {{1399, 10}, {1400, 3}, {1499, 10}, {1699, 0}, {1999, 100}},
			downsample.AggrMin:   {{1399, 10}, {1400, -3}, {1499, 10}, {1699, 0}, {1999, 100}},
			downsample.AggrMax:   {{1399, 10}, {1400, -3}, {1499, 10}, {1699, 0}, {1999, 100}},
			downsample.AggrCounter: {
				{1499, 210}, {1499, 10},
				{1599, 20}, {1799, 50}, {1999, 120}, {1999, 50},
				{2099, 40}, {2199, 80}, {2299, 110},
			},
		}
		for _, tc := range []struct {
			name string
			in   []map[downsample.AggrType][]sample
			want map[downsample.AggrType][]sample
		}{
			{
				name: "single aggregated chunk",
				in:   []map[downsample.AggrType][]sample{first},
				want: map[downsample.AggrType][]sample{
					downsample.AggrCount:   {{499, 29}, {999, 100}},
					downsample.AggrSum:     {{499, 29}, {999, 100}},
					downsample.AggrMin:     {{499, -3}, {999, 0}},
					downsample.AggrMax:     {{499, 10}, {999, 100}},
					downsample.AggrCounter: {{99, 100}, {499, 210}, {999, 320}, {1299, 430}, {1299, 110}},
				},
			},
			{
				name: "two aggregated chunks",
				in:   []map[downsample.AggrType][]sample{first, second},
				want: map[downsample.AggrType][]sample{
					downsample.AggrCount:   {{499, 29}, {999, 100}, {1499, 23}, {1999, 100}},
					downsample.AggrSum:     {{499, 29}, {999, 100}, {1499, 23}, {1999, 100}},
					downsample.AggrMin:     {{499, -3}, {999, 0}, {1499, -3}, {1999, 0}},
					downsample.AggrMax:     {{499, 10}, {999, 100}, {1499, 10}, {1999, 100}},
					downsample.AggrCounter: {{99, 100}, {499, 210}, {999, 320}, {1499, 530}, {1999, 640}, {2299, 750}, {2299, 110}},
				},
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var chks []*downsample.AggrChunk
				mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
				for _, m := range tc.in {
					chks = append(chks, encodeAggr(t, m))
					for _, ss := range m {
						mint, maxt = min(mint, ss[0].t), max(maxt, ss[len(ss)-1].t)
					}
				}
				var buf []sample
				out, err := downsampleAggr(chks, &buf, mint, maxt, 499, 500)
				if err != nil {
					t.Fatal(err)
				}
				if len(out) != 1 {
					t.Fatalf("%d chunks, want 1", len(out))
				}
				if got := aggrSamples(t, *out[0].Chunk.(*downsample.AggrChunk)); !equalAggr(got, tc.want) {
					t.Errorf("got %v\nwant %v", got, tc.want)
				}
			})
		}
	})

	t.Run("counter resets at chunk boundaries", func(t *testing.T) {
		raw := []sample{
			{10, 1}, {20, 3}, {30, 5},
			{50, 1}, {60, 8}, {70, 10},
			{120, 1}, {130, 18}, {140, 20},
			{160, 21}, {170, 38}, {180, 40},
		}
		// More chunks than samples: one window per chunk.
		cm := downsampleRawLoop(raw, 50, len(raw)+1)
		if len(cm) != 4 {
			t.Fatalf("%d chunks, want 4", len(cm))
		}
		var achks []*downsample.AggrChunk
		for _, c := range cm {
			achks = append(achks, c.Chunk.(*downsample.AggrChunk))
		}
		if got, want := counterSamples(t, achks), []sample{
			{10, 1}, {30, 5}, {30, 5}, {50, 1}, {70, 10}, {70, 10},
			{120, 1}, {140, 20}, {140, 20}, {160, 21}, {180, 40}, {180, 40},
		}; !slices.Equal(got, want) {
			t.Errorf("raw counter samples %v, want %v", got, want)
		}
		if got, want := counterIterate(t, achks), []sample{
			{10, 1}, {30, 5}, {50, 6}, {70, 15}, {120, 16}, {140, 35}, {160, 36}, {180, 55},
		}; !slices.Equal(got, want) {
			t.Errorf("raw counter %v, want %v", got, want)
		}
		var buf []sample
		acm, err := downsampleAggrLoop(achks, &buf, 100, 2)
		if err != nil {
			t.Fatal(err)
		}
		var aggr []*downsample.AggrChunk
		for _, c := range acm {
			aggr = append(aggr, c.Chunk.(*downsample.AggrChunk))
		}
		if got, want := counterSamples(t, aggr), []sample{
			{10, 1}, {70, 15}, {70, 10}, {120, 1}, {180, 40}, {180, 40},
		}; !slices.Equal(got, want) {
			t.Errorf("aggregated counter samples %v, want %v", got, want)
		}
		if got, want := counterIterate(t, aggr), []sample{{10, 1}, {70, 15}, {120, 16}, {180, 55}}; !slices.Equal(got, want) {
			t.Errorf("aggregated counter %v, want %v", got, want)
		}
	})
}

func counterSamples(t *testing.T, achks []*downsample.AggrChunk) []sample {
	var out []sample
	for _, c := range achks {
		out = append(out, aggrSamples(t, *c)[downsample.AggrCounter]...)
	}
	return out
}

func counterIterate(t *testing.T, achks []*downsample.AggrChunk) []sample {
	t.Helper()
	var its []chunkenc.Iterator
	for _, c := range achks {
		sub, err := c.Get(downsample.AggrCounter)
		if err != nil {
			t.Fatal(err)
		}
		its = append(its, sub.Iterator(nil))
	}
	var out []sample
	it := downsample.NewApplyCounterResetsIterator(its...)
	for it.Next() != chunkenc.ValNone {
		ts, v := it.At()
		out = append(out, sample{ts, v})
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func equalAggr(a, b map[downsample.AggrType][]sample) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// downsampleFixture uploads a raw 48h block with two counters (with
// resets), a gauge with stale markers and a native histogram series.
func downsampleFixture(t *testing.T, bkt objstore.Bucket) *block.Meta {
	t.Helper()
	ss := testSeriesSet()
	ss[2].f = func(ts int64) float64 {
		// A gap with a stale marker, as when a target disappears.
		if ts >= 10*hour && ts < 10*hour+30*minute {
			if ts == 10*hour {
				return staleNaN
			}
		}
		return gauge(ts)
	}
	ss = append(ss, testSeries{lset: labels.FromStrings("__name__", "istio_request_duration_milliseconds"), hist: true})
	return putBlock(t, bkt, extA, 0, 48*hour, ss)
}

func TestDownsampleBlocks(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	rawMeta := downsampleFixture(t, bkt)
	raw := readSamples(t, download(t, bkt, rawMeta.ULID))

	reg := prometheus.NewRegistry()
	c := newTestCompactor(t, bkt, newFakeClock(), func(o *Options) {
		o.Downsample = true
		// The 48h 5m block gets a 1h copy in the same pass.
		o.DownsampleAfter.OneHour = 40 * time.Hour
		o.Registerer = reg
	})
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	byRes := map[int64]*block.Meta{}
	for _, m := range visible(t, bkt) {
		if byRes[m.Thanos.Downsample.Resolution] != nil {
			t.Fatalf("two blocks of resolution %d", m.Thanos.Downsample.Resolution)
		}
		byRes[m.Thanos.Downsample.Resolution] = m
	}
	if len(byRes) != 3 || byRes[block.ResolutionRaw].ULID != rawMeta.ULID {
		t.Fatalf("blocks by resolution %v", byRes)
	}
	for _, res := range []int64{block.Resolution5m, block.Resolution1h} {
		m := byRes[res]
		if m.MinTime != rawMeta.MinTime || m.MaxTime != rawMeta.MaxTime || !slices.Equal(m.Compaction.Sources, rawMeta.Compaction.Sources) ||
			!labels.Equal(labels.FromMap(m.Thanos.Labels), extA) || m.Thanos.Source != block.SourceCompactor || len(m.Thanos.Files) < 3 {
			t.Errorf("meta of resolution %d: %+v", res, m)
		}
		t.Run(resolutionName(res), func(t *testing.T) {
			checkAggregates(t, download(t, bkt, m.ULID), res, raw, m)
		})
	}
	if got := promtestutil.ToFloat64(c.metrics.downsamples.WithLabelValues("5m")); got != 1 {
		t.Errorf("5m downsamples %v", got)
	}

	// Nothing more to do on the next pass.
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(visible(t, bkt)); n != 3 {
		t.Errorf("%d blocks after another pass, want 3", n)
	}
}

// checkAggregates compares the aggregates of the downsampled block in dir
// with count, sum, min, max and counter computed from the raw samples.
func checkAggregates(t *testing.T, dir string, res int64, raw map[string][]testSample, m *block.Meta) {
	t.Helper()
	ctx := context.Background()
	b, err := promtsdb.OpenBlock(discard, dir, downsample.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ir, _ := b.Index()
	defer ir.Close()
	cr, _ := b.Chunks()
	defer cr.Close()
	k, v := index.AllPostingsKey()
	p, err := ir.Postings(ctx, k, v)
	if err != nil {
		t.Fatal(err)
	}
	type agg struct{ count, sum, min, max float64 }
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		seen    int
		total   uint64
	)
	for p.Next() {
		if err := ir.Series(p.At(), &builder, &chks); err != nil {
			t.Fatal(err)
		}
		key := builder.Labels().String()
		if builder.Labels().Get("__name__") == "istio_request_duration_milliseconds" {
			t.Errorf("native histogram series %s downsampled", key)
			continue
		}
		seen++
		var rs []testSample
		for _, s := range raw[key] {
			if !value.IsStaleNaN(s.v) && s.t >= m.MinTime && s.t < m.MaxTime {
				rs = append(rs, s)
			}
		}
		if len(rs) == 0 {
			t.Fatalf("series %s not in the raw block", key)
		}
		want := map[int64]*agg{}
		for _, s := range rs {
			w := s.t / res
			a := want[w]
			if a == nil {
				a = &agg{min: math.Inf(1), max: math.Inf(-1)}
				want[w] = a
			}
			a.count++
			a.sum += s.v
			a.min, a.max = min(a.min, s.v), max(a.max, s.v)
		}
		got := map[int64]*agg{}
		var its []chunkenc.Iterator
		for _, c := range chks {
			chk, _, err := cr.ChunkOrIterable(c)
			if err != nil {
				t.Fatal(err)
			}
			ac, ok := chk.(*downsample.AggrChunk)
			if !ok {
				t.Fatalf("series %s: chunk of %T", key, chk)
			}
			total += uint64(ac.NumSamples())
			as := aggrSamples(t, *ac)
			for _, at := range []downsample.AggrType{downsample.AggrCount, downsample.AggrSum, downsample.AggrMin, downsample.AggrMax} {
				for _, s := range as[at] {
					w := s.t / res
					a := got[w]
					if a == nil {
						a = &agg{min: math.Inf(1), max: math.Inf(-1)}
						got[w] = a
					}
					switch at {
					case downsample.AggrCount:
						a.count += s.v
					case downsample.AggrSum:
						a.sum += s.v
					case downsample.AggrMin:
						a.min = min(a.min, s.v)
					case downsample.AggrMax:
						a.max = max(a.max, s.v)
					}
				}
			}
			sub, err := ac.Get(downsample.AggrCounter)
			if err != nil {
				t.Fatal(err)
			}
			its = append(its, sub.Iterator(nil))
		}
		if len(got) != len(want) {
			t.Fatalf("series %s: %d windows, want %d", key, len(got), len(want))
		}
		for w, a := range want {
			g := got[w]
			if g == nil || g.count != a.count || !near(g.sum, a.sum) || g.min != a.min || g.max != a.max {
				t.Fatalf("series %s window %d: got %+v, want %+v", key, w, g, a)
			}
		}

		// The counter with resets removed matches the raw counter at the
		// last raw sample at or before each timestamp.
		cum := make([]float64, len(rs))
		for i, s := range rs {
			switch {
			case i == 0:
				cum[i] = s.v
			case s.v >= rs[i-1].v:
				cum[i] = cum[i-1] + s.v - rs[i-1].v
			default:
				cum[i] = cum[i-1] + s.v
			}
		}
		cs := counterIterateIts(t, its)
		if len(cs) < len(want) || cs[0].t != rs[0].t || cs[0].v != rs[0].v {
			t.Fatalf("series %s: counter starts %v, %d samples", key, cs[0], len(cs))
		}
		for _, s := range cs {
			i := sort.Search(len(rs), func(i int) bool { return rs[i].t > s.t }) - 1
			if i < 0 || !near(s.v, cum[i]) {
				t.Fatalf("series %s: counter at %d is %v, raw %v", key, s.t, s.v, cum[max(i, 0)])
			}
		}
		if last := cs[len(cs)-1]; last.t != rs[len(rs)-1].t || !near(last.v, cum[len(cum)-1]) {
			t.Errorf("series %s: counter ends with %v, raw at %d is %v", key, last, rs[len(rs)-1].t, cum[len(cum)-1])
		}
	}
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != 3 {
		t.Errorf("%d series downsampled, want 3", seen)
	}
	if m.Stats.NumSeries != 3 || m.Stats.NumSamples != total {
		t.Errorf("stats %+v, want 3 series and %d samples", m.Stats, total)
	}
}

func counterIterateIts(t *testing.T, its []chunkenc.Iterator) []sample {
	t.Helper()
	var out []sample
	it := downsample.NewApplyCounterResetsIterator(its...)
	for it.Next() != chunkenc.ValNone {
		ts, v := it.At()
		out = append(out, sample{ts, v})
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func near(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

// TestDownsampledRate checks that rate() over the counter aggregate, read
// as Thanos's querier reads it (through downsample.NewApplyCounterResetsIterator),
// gives the rate of the raw data: the increase over the whole block
// exactly, and rates over 1h windows within 2%.
func TestDownsampledRate(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	rawMeta := downsampleFixture(t, bkt)
	c := newTestCompactor(t, bkt, newFakeClock(), func(o *Options) { o.Downsample = true })
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	var five *block.Meta
	for _, m := range visible(t, bkt) {
		if m.Thanos.Downsample.Resolution == block.Resolution5m {
			five = m
		}
	}
	if five == nil {
		t.Fatal("no 5m block")
	}
	rawDir := download(t, bkt, rawMeta.ULID)
	fiveDir := download(t, bkt, five.ULID)

	// The counter aggregate of each counter series, as a plain series.
	b, err := promtsdb.OpenBlock(discard, fiveDir, downsample.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ir, _ := b.Index()
	cr, _ := b.Chunks()
	var ss []testSeries
	for _, s := range testSeriesSet()[:2] {
		p, err := ir.Postings(ctx, "source_workload", s.lset.Get("source_workload"))
		if err != nil || !p.Next() {
			t.Fatalf("series %s not found: %v", s.lset, err)
		}
		var builder labels.ScratchBuilder
		var chks []chunks.Meta
		if err := ir.Series(p.At(), &builder, &chks); err != nil {
			t.Fatal(err)
		}
		var its []chunkenc.Iterator
		for _, c := range chks {
			chk, _, err := cr.ChunkOrIterable(c)
			if err != nil {
				t.Fatal(err)
			}
			sub, err := chk.(*downsample.AggrChunk).Get(downsample.AggrCounter)
			if err != nil {
				t.Fatal(err)
			}
			its = append(its, sub.Iterator(nil))
		}
		var pts []testSample
		for _, s := range counterIterateIts(t, its) {
			pts = append(pts, testSample{s.t, s.v})
		}
		ss = append(ss, testSeries{lset: s.lset, points: pts})
	}
	ir.Close()
	cr.Close()
	b.Close()
	aggrDir := writeBlock(t, t.TempDir(), 0, 48*hour, ss)

	eng := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e7, Timeout: time.Minute, LookbackDelta: 10 * time.Minute})
	query := func(dir, q string, ts int64) map[string]float64 {
		t.Helper()
		blk, err := promtsdb.OpenBlock(discard, dir, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer blk.Close()
		qa := storage.QueryableFunc(func(mint, maxt int64) (storage.Querier, error) {
			return promtsdb.NewBlockQuerier(blk, mint, maxt)
		})
		qry, err := eng.NewInstantQuery(ctx, qa, nil, q, time.UnixMilli(ts))
		if err != nil {
			t.Fatal(err)
		}
		defer qry.Close()
		res := qry.Exec(ctx)
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		vec, err := res.Vector()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, s := range vec {
			out[s.Metric.Get("source_workload")] = s.F
		}
		return out
	}

	// Over the whole block the increase is the same, without
	// extrapolation: last minus first of the counter with resets removed.
	const whole = `max_over_time(istio_requests_total[3d]) - min_over_time(istio_requests_total[3d])`
	aggrInc := query(aggrDir, whole, 48*hour-1)
	for _, s := range testSeriesSet()[:2] {
		w := s.lset.Get("source_workload")
		var total float64
		prev := math.NaN()
		for ts := int64(0); ts < 48*hour; ts += minute {
			v := s.f(ts)
			switch {
			case math.IsNaN(prev):
			case v >= prev:
				total += v - prev
			default:
				total += v
			}
			prev = v
		}
		if !near(aggrInc[w], total) {
			t.Errorf("%s: increase over the block %v from the aggregate, %v raw", w, aggrInc[w], total)
		}
	}

	for ts := 2 * hour; ts < 48*hour; ts += 47 * minute {
		r := query(rawDir, `rate(istio_requests_total[1h])`, ts)
		a := query(aggrDir, `rate(istio_requests_total[1h])`, ts)
		if len(r) != 2 {
			t.Fatalf("raw rate at %d: %v", ts, r)
		}
		for w, rv := range r {
			if av, ok := a[w]; !ok || math.Abs(av-rv) > 0.02*math.Abs(rv) {
				t.Errorf("rate of %s at %s: raw %v, 5m %v", w, time.Duration(ts)*time.Millisecond, rv, av)
			}
		}
	}
}

// TestDownsampledBlocksCompact runs passes over 20h of 2h raw blocks with
// ranges small enough that raw, 5m and 1h blocks all get compacted, and
// checks after every pass that each resolution holds the data once and
// that every downsampled block's aggregates match the raw samples.
func TestDownsampledBlocksCompact(t *testing.T) {
	ctx := context.Background()
	staging := objstore.NewInMemBucket()
	var srcs []*block.Meta
	for i := range int64(10) {
		srcs = append(srcs, putBlock(t, staging, extA, i*2*hour, (i+1)*2*hour, testSeriesSet()))
	}
	raw := mergedSamples(t, staging, ids(srcs)...)
	bkt := objstore.NewInMemBucket()
	// 16h first: the first pass compacts raw [0, 8h) and makes 5m copies
	// of it and the four 2h blocks after it; the last 4h arrive later, so
	// that the 5m blocks, not only the raw ones, get compacted.
	ship := func(ms []*block.Meta) {
		for _, m := range ms {
			for name, b := range staging.Objects() {
				if strings.HasPrefix(name, m.ULID.String()+"/") && !strings.HasSuffix(name, block.MetaFilename) {
					putObject(t, bkt, name, b)
				}
			}
			putObject(t, bkt, m.ULID.String()+"/"+block.MetaFilename, staging.Objects()[m.ULID.String()+"/"+block.MetaFilename])
		}
	}
	ship(srcs[:8])

	clk := newFakeClock()
	c := newTestCompactor(t, bkt, clk, func(o *Options) {
		o.Ranges = []time.Duration{2 * time.Hour, 8 * time.Hour, 16 * time.Hour}
		o.Downsample = true
		o.DownsampleAfter = DownsampleAfter{FiveMinutes: 2 * time.Hour, OneHour: 16 * time.Hour}
	})
	var last []ulid.ULID
	for pass := range 4 {
		if pass == 1 {
			ship(srcs[8:])
		}
		if err := c.Once(ctx); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Hour)
		vis := visible(t, bkt)
		byRes := map[int64][]*remoteBlock{}
		var ids []ulid.ULID
		for id, m := range vis {
			byRes[m.Thanos.Downsample.Resolution] = append(byRes[m.Thanos.Downsample.Resolution], &remoteBlock{id: id, meta: m})
			ids = append(ids, id)
		}
		for res, bs := range byRes {
			var rs []string
			for _, b := range bs {
				rs = append(rs, fmt.Sprintf("%d-%dh", b.meta.MinTime/hour, b.meta.MaxTime/hour))
			}
			slices.Sort(rs)
			t.Logf("pass %d: resolution %s: %v", pass, resolutionName(res), rs)
			slices.SortFunc(bs, func(a, b *remoteBlock) int { return int(a.meta.MinTime - b.meta.MinTime) })
			if o := overlaps(bs); len(o) > 0 {
				t.Fatalf("pass %d: resolution %d: overlapping blocks", pass, res)
			}
			if d := duplicates(bs); len(d) > 0 {
				t.Fatalf("pass %d: resolution %d: duplicated blocks", pass, res)
			}
			if res == block.ResolutionRaw {
				if pass > 0 {
					equalSamples(t, mergedSamples(t, bkt, blockIDs(bs)...), raw)
				}
				continue
			}
			for _, b := range bs {
				checkAggregates(t, download(t, bkt, b.id), res, raw, b.meta)
			}
		}
		if len(byRes[block.Resolution5m]) == 0 {
			t.Fatalf("pass %d: no 5m blocks", pass)
		}
		slices.SortFunc(ids, func(a, b ulid.ULID) int { return a.Compare(b) })
		last = ids
	}
	// The last pass found nothing to do.
	vis := visible(t, bkt)
	var ids []ulid.ULID
	for id := range vis {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b ulid.ULID) int { return a.Compare(b) })
	if !slices.Equal(ids, last) {
		t.Error("blocks changed in the last pass")
	}
	var five, compacted5m, onehour bool
	for _, m := range vis {
		switch m.Thanos.Downsample.Resolution {
		case block.Resolution5m:
			five = true
			compacted5m = compacted5m || m.MaxTime-m.MinTime == 16*hour
		case block.Resolution1h:
			onehour = true
		}
	}
	if !five || !compacted5m || !onehour {
		t.Errorf("5m %v, compacted 5m %v, 1h %v", five, compacted5m, onehour)
	}
}
