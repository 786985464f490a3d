package bucketstore

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

func TestSelectParts(t *testing.T) {
	meta := func(_ string, mint, maxt, res int64) *block.Meta {
		m := &block.Meta{}
		m.ULID = ulid.Make()
		m.MinTime, m.MaxTime = mint, maxt
		m.Thanos.Downsample.Resolution = res
		return m
	}
	type want struct {
		name       string
		mint, maxt int64
	}
	for _, tc := range []struct {
		name       string
		metas      map[string]*block.Meta
		mint, maxt int64
		maxRes     int64
		want       []want
	}{
		{
			name: "raw preferred",
			metas: map[string]*block.Meta{
				"r1": meta("r1", 0, 10, 0), "r2": meta("r2", 10, 20, 0), "m1": meta("m1", 0, 20, block.Resolution5m),
			},
			mint: 0, maxt: 19, maxRes: 0,
			want: []want{{"r1", 0, 9}, {"r2", 10, 19}},
		},
		{
			name: "5m when the step allows",
			metas: map[string]*block.Meta{
				"r1": meta("r1", 0, 10, 0), "r2": meta("r2", 10, 20, 0), "m1": meta("m1", 0, 20, block.Resolution5m),
			},
			mint: 5, maxt: 19, maxRes: block.Resolution5m,
			want: []want{{"m1", 5, 19}},
		},
		{
			name: "finer fills gaps of the preferred resolution",
			metas: map[string]*block.Meta{
				"r1": meta("r1", 0, 10, 0), "r2": meta("r2", 10, 20, 0), "r3": meta("r3", 20, 30, 0),
				"m1": meta("m1", 0, 10, block.Resolution5m), "h1": meta("h1", 20, 40, block.Resolution1h),
			},
			mint: 0, maxt: 39, maxRes: block.Resolution1h,
			want: []want{{"h1", 20, 39}, {"m1", 0, 9}, {"r2", 10, 19}},
		},
		{
			name: "coarser fills gaps of raw data",
			metas: map[string]*block.Meta{
				"r1": meta("r1", 0, 10, 0), "r3": meta("r3", 20, 30, 0),
				"m1": meta("m1", 0, 40, block.Resolution5m), "h1": meta("h1", 0, 60, block.Resolution1h),
			},
			mint: 0, maxt: 59, maxRes: 0,
			want: []want{{"r1", 0, 9}, {"r3", 20, 29}, {"m1", 10, 19}, {"m1", 30, 39}, {"h1", 40, 59}},
		},
		{
			name: "overlapping blocks of one resolution are all read",
			metas: map[string]*block.Meta{
				"r1": meta("r1", 0, 10, 0), "r2": meta("r2", 10, 20, 0), "c1": meta("c1", 0, 20, 0),
			},
			mint: 0, maxt: 100, maxRes: 0,
			want: []want{{"c1", 0, 19}, {"r1", 0, 9}, {"r2", 10, 19}},
		},
		{
			name: "nothing in range",
			metas: map[string]*block.Meta{
				"r1": meta("r1", 0, 10, 0),
			},
			mint: 10, maxt: 20, maxRes: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := map[ulid.ULID]string{}
			byID := map[ulid.ULID]*block.Meta{}
			for name, m := range tc.metas {
				names[m.ULID] = name
				byID[m.ULID] = m
			}
			var got []want
			for _, p := range selectParts(sortedMetas(byID), tc.mint, tc.maxt, tc.maxRes) {
				got = append(got, want{names[p.meta.ULID], p.mint, p.maxt})
			}
			byName := func(a, b want) int {
				if a.name != b.name {
					return strings.Compare(a.name, b.name)
				}
				return compareInt64(a.mint, b.mint)
			}
			slices.SortFunc(got, byName)
			slices.SortFunc(tc.want, byName)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReadModeFor(t *testing.T) {
	for fn, want := range map[string]readMode{
		"":                readAvg,
		"sum":             readAvg,
		"avg_over_time":   readAvg,
		"sum_over_time":   readSum,
		"min":             readMin,
		"min_over_time":   readMin,
		"max_over_time":   readMax,
		"count":           readCount,
		"count_over_time": readCount,
		"rate":            readCounter,
		"increase":        readCounter,
		"irate":           readCounter,
		"resets":          readCounter,
		"delta":           readAvg,
	} {
		if got := readModeFor(fn); got != want {
			t.Errorf("readModeFor(%q) = %d, want %d", fn, got, want)
		}
	}
}

// aggrSeries is a chunk series of the aggregate chunks of ss cut into
// batches of n samples, as Thanos cuts a long series.
func aggrSeries(ss []sample, n int, res int64) storage.ChunkSeries {
	var metas []chunks.Meta
	for len(ss) > 0 {
		k := min(n, len(ss))
		metas = append(metas, downsampleRaw(ss[:k], res))
		ss = ss[k:]
	}
	return &storage.ChunkSeriesEntry{
		Lset: labels.FromStrings("__name__", "c"),
		ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
			return storage.NewListChunkSeriesIterator(metas...)
		},
	}
}

func readAll(t *testing.T, it chunkenc.Iterator) []sample {
	t.Helper()
	var out []sample
	for it.Next() == chunkenc.ValFloat {
		ts, v := it.At()
		out = append(out, sample{ts, v})
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCounterAcrossChunks(t *testing.T) {
	// A counter that resets inside the first batch and between the second
	// and the third.
	var raw []sample
	v := 100.0
	for i := range 120 {
		switch i {
		case 30:
			v = 4
		case 80:
			v = 1
		default:
			v += float64(i%7 + 1)
		}
		raw = append(raw, sample{1000 + int64(i)*scrapeMs, v})
	}
	total, last := raw[0].v, raw[0].v
	for _, s := range raw[1:] {
		if s.v >= last {
			total += s.v - last
		} else {
			total += s.v
		}
		last = s.v
	}

	got := readAll(t, newAggrSeriesIterator(aggrSeries(raw, 40, block.Resolution5m), readCounter, math.MinInt64, math.MaxInt64))
	if len(got) == 0 {
		t.Fatal("no samples")
	}
	if got[0] != raw[0] {
		t.Errorf("first sample %v, want the first raw sample %v", got[0], raw[0])
	}
	for i := 1; i < len(got); i++ {
		if got[i].t <= got[i-1].t || got[i].v < got[i-1].v {
			t.Fatalf("not a monotonic counter at %d: %v after %v", i, got[i], got[i-1])
		}
	}
	if end := got[len(got)-1]; end.v != total || end.t != raw[len(raw)-1].t {
		t.Errorf("last sample %v, want %v at %d", end, total, raw[len(raw)-1].t)
	}

	// Bounds cut the samples, and seeking does not lose resets.
	it := newAggrSeriesIterator(aggrSeries(raw, 40, block.Resolution5m), readCounter, got[3].t, got[len(got)-2].t)
	if vt := it.Seek(got[5].t); vt != chunkenc.ValFloat {
		t.Fatalf("seek: %v", vt)
	}
	if ts, v := it.At(); ts != got[5].t || v != got[5].v {
		t.Errorf("after seek at %v, want %v", sample{ts, v}, got[5])
	}
	rest := readAll(t, it)
	if want := got[6 : len(got)-1]; !slices.Equal(rest, want) {
		t.Errorf("after seek got %v, want %v", rest, want)
	}
}

func TestAggregatesOfOneSeries(t *testing.T) {
	var raw []sample
	for i := range 100 {
		raw = append(raw, sample{1000 + int64(i)*scrapeMs, float64(i % 9)})
	}
	windows := map[int64][]float64{}
	var order []int64
	lastT := raw[len(raw)-1].t
	for _, s := range raw {
		end := min(s.t-s.t%block.Resolution5m+block.Resolution5m-1, lastT)
		if _, ok := windows[end]; !ok {
			order = append(order, end)
		}
		windows[end] = append(windows[end], s.v)
	}
	for mode, f := range map[readMode]func([]float64) float64{
		readCount: func(vs []float64) float64 { return float64(len(vs)) },
		readSum: func(vs []float64) float64 {
			s := 0.0
			for _, v := range vs {
				s += v
			}
			return s
		},
		readMin: func(vs []float64) float64 { return slices.Min(vs) },
		readMax: func(vs []float64) float64 { return slices.Max(vs) },
		readAvg: func(vs []float64) float64 {
			s := 0.0
			for _, v := range vs {
				s += v
			}
			return s / float64(len(vs))
		},
	} {
		var want []sample
		for _, end := range order {
			want = append(want, sample{end, f(windows[end])})
		}
		got := readAll(t, newAggrSeriesIterator(aggrSeries(raw, 1000, block.Resolution5m), mode, math.MinInt64, math.MaxInt64))
		if !slices.Equal(got, want) {
			t.Errorf("mode %d: got %v, want %v", mode, got, want)
		}
	}
}

// A chunk without count or sum gives no average.
func TestAverageWithoutCount(t *testing.T) {
	x := chunkenc.NewXORChunk()
	app, _ := x.Appender()
	app.Append(0, 1, 2)
	c := downsample.EncodeAggrChunk([5]chunkenc.Chunk{nil, x, nil, nil, nil})
	it, err := chunkIterator(c, readAvg)
	if err != nil || it != nil {
		t.Errorf("average without count: %v %v", it, err)
	}
}

// windowAverages returns, for the test series, the average of each 5m
// window of data in [mint, maxt), stamped as Thanos stamps it, with the
// last window of the block ending at the block's last sample.
func windowAverages(data dataset, blockLast, mint, maxt int64) dataset {
	out := dataset{}
	for _, lset := range testSeries() {
		sums, counts := map[int64]float64{}, map[int64]float64{}
		var ends []int64
		for _, s := range data[lset.String()] {
			if s.t < mint || s.t >= maxt {
				continue
			}
			end := min(s.t-s.t%block.Resolution5m+block.Resolution5m-1, blockLast)
			if _, ok := counts[end]; !ok {
				ends = append(ends, end)
			}
			sums[end] += s.v
			counts[end]++
		}
		for _, end := range ends {
			out.add(lset, end, sums[end]/counts[end])
		}
	}
	return out
}

func TestDownsampledBlocks(t *testing.T) {
	raw := makeRawDB(t, 5)
	bkt := objstore.NewInMemBucket()
	var rawMetas []*block.Meta
	for _, dir := range raw.blocks {
		rawMetas = append(rawMetas, upload(t, bkt, dir, extA, block.ResolutionRaw, true))
	}
	end := base + 4*hourMs
	ds := upload(t, bkt, writeDownsampledBlock(t, t.TempDir(), raw.data, base, end, block.Resolution5m), extA, block.Resolution5m, true)

	rawOnly, _ := newStore(t, bkt, t.TempDir(), Options{RawOnly: true})
	autoDir := t.TempDir()
	auto, _ := newStore(t, bkt, autoDir, Options{})

	// With a step of 1h (at least 5m * 5) the 5m block answers, and the
	// aggregates give what raw data gives.
	for _, expr := range []string{
		`max_over_time(test_metric[1h])`,
		`min_over_time(test_metric[1h])`,
		`sum_over_time(test_metric[1h])`,
		`avg_over_time(test_metric[1h])`,
	} {
		t.Run(expr, func(t *testing.T) {
			want := rangeQuery(t, rawOnly, expr, base+hourMs, end, hourMs)
			if len(want) != 4 || count(want) != 16 {
				t.Fatalf("raw data gives %d series, %d samples", len(want), count(want))
			}
			equalData(t, rangeQuery(t, auto, expr, base+hourMs, end, hourMs), want, 1e-12)
		})
	}
	if got := cachedBlocks(t, autoDir); !slices.Equal(got, []ulid.ULID{ds.ULID}) {
		t.Errorf("a query with a 1h step downloaded %v, want only the 5m block %s", got, ds.ULID)
	}

	// With a 15s step raw data answers.
	equalData(t, rangeQuery(t, auto, `{job="mesh"}`, base+sampleOffset, lastSample(end), scrapeMs), raw.data.in(base, end), 0)

	// Raw data deleted from the third hour: the 5m block fills the gap,
	// and only the gap.
	deleteBlock(t, bkt, rawMetas[2].ULID)
	if err := auto.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	gauges := map[string]bool{}
	for _, l := range testSeries() {
		gauges[l.String()] = l.Get("__name__") == "test_metric"
	}
	want := dataset{}
	for _, d := range []dataset{
		raw.data.in(base, base+2*hourMs),
		windowAverages(raw.data, lastSample(end), base+2*hourMs, base+3*hourMs),
		raw.data.in(base+3*hourMs, end),
	} {
		for k, ss := range d {
			if gauges[k] {
				want[k] = append(want[k], ss...)
			}
		}
	}
	equalData(t, instantQuery(t, auto, `test_metric[4h]`, end), want, 1e-12)
	if got := len(want[testSeries()[0].String()]); got != 3*240+12 {
		t.Fatalf("expected %d samples for a series", got)
	}

	// The chunk querier encodes what the aggregates give.
	q, err := auto.ChunkQuerier(base+2*hourMs, base+3*hourMs-1)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "test_metric"))
	n := 0
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() {
			n += it.At().Chunk.NumSamples()
			if enc := it.At().Chunk.Encoding(); enc == downsample.ChunkEncAggr {
				t.Fatal("chunk querier returned an aggregate chunk")
			}
		}
	}
	if err := ss.Err(); err != nil || n != 4*12 {
		t.Errorf("chunk querier: %d samples, %v; want %d", n, err, 4*12)
	}
}

// TestOpenDownsampledBlock checks that Prometheus's block reader gives the
// aggregate chunks of a block written the way Thanos writes them.
func TestOpenDownsampledBlock(t *testing.T) {
	raw := makeRawDB(t, 2)
	dir := writeDownsampledBlock(t, t.TempDir(), raw.data, base, base+hourMs, block.Resolution5m)
	b, err := promtsdb.OpenBlock(discard, dir, downsample.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q, err := promtsdb.NewBlockChunkQuerier(b, base, base+hourMs-1)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), false, &storage.SelectHints{Start: base, End: base + hourMs - 1, DisableTrimming: true}, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	n := 0
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() {
			if _, ok := it.At().Chunk.(*downsample.AggrChunk); !ok {
				t.Fatalf("chunk is %T", it.At().Chunk)
			}
			n++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if ss.Err() != nil || n != len(testSeries()) {
		t.Fatalf("%d chunks, %v", n, ss.Err())
	}
}
