package compact

import (
	"context"
	"encoding/json"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/blocktest"
)

var extA = labels.FromStrings("cluster", "eu-1", "replica", "a")

// putLevel1 uploads n consecutive 2h blocks of the test series from t0.
func putLevel1(t *testing.T, bkt objstore.Bucket, ext labels.Labels, t0 int64, n int) []*block.Meta {
	t.Helper()
	var ms []*block.Meta
	for i := range n {
		mint := t0 + int64(i)*2*hour
		ms = append(ms, putBlock(t, bkt, ext, mint, mint+2*hour, testSeriesSet()))
	}
	return ms
}

func ids(ms []*block.Meta) []ulid.ULID {
	out := make([]ulid.ULID, len(ms))
	for i, m := range ms {
		out[i] = m.ULID
	}
	return out
}

func TestCompactFourBlocksIntoOne(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewInMemBucket()
	bkt := &blocktest.OrderBucket{Bucket: mem}
	// Five 2h blocks: the newest is never compacted at once (as in
	// Prometheus and Thanos), the four before it fill the 8h range.
	srcs := putLevel1(t, bkt, extA, 0, 5)
	want := mergedSamples(t, mem, ids(srcs[:4])...)
	bkt.Reset()

	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	c := newTestCompactor(t, bkt, clk, func(o *Options) { o.Registerer = reg })
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}

	vis := visible(t, mem)
	if len(vis) != 2 {
		t.Fatalf("%d visible blocks, want the compacted one and the newest source", len(vis))
	}
	if _, ok := vis[srcs[4].ULID]; !ok {
		t.Fatal("the newest block is not visible any more")
	}
	var out *block.Meta
	for id, m := range vis {
		if id != srcs[4].ULID {
			out = m
		}
	}
	if out.MinTime != 0 || out.MaxTime != 8*hour || out.Compaction.Level != 2 {
		t.Errorf("compacted block %d-%d level %d, want 0-%d level 2", out.MinTime, out.MaxTime, out.Compaction.Level, 8*hour)
	}
	wantSources := ids(srcs[:4])
	slices.SortFunc(wantSources, func(a, b ulid.ULID) int { return a.Compare(b) })
	if !slices.Equal(out.Compaction.Sources, wantSources) {
		t.Errorf("sources %v, want %v", out.Compaction.Sources, wantSources)
	}
	if len(out.Compaction.Parents) != 4 {
		t.Errorf("%d parents, want 4", len(out.Compaction.Parents))
	}
	th := out.Thanos
	if !labels.Equal(labels.FromMap(th.Labels), extA) || th.Downsample.Resolution != 0 || th.Source != block.SourceCompactor || th.Version != 1 {
		t.Errorf("thanos section %+v", th)
	}
	// Files with the sizes of the uploaded objects, meta.json without.
	var rels []string
	for _, f := range th.Files {
		rels = append(rels, f.RelPath)
		if f.RelPath == block.MetaFilename {
			if f.SizeBytes != 0 {
				t.Errorf("meta.json listed with a size")
			}
			continue
		}
		if got := int64(len(mem.Objects()[path.Join(out.ULID.String(), f.RelPath)])); got != f.SizeBytes {
			t.Errorf("%s: object has %d bytes, meta.json says %d", f.RelPath, got, f.SizeBytes)
		}
	}
	if !slices.Contains(rels, "chunks/000001") || !slices.Contains(rels, "index") || !slices.Contains(rels, "meta.json") {
		t.Errorf("files %v", rels)
	}
	if _, ok := mem.Objects()[path.Join(out.ULID.String(), "tombstones")]; ok {
		t.Error("tombstones uploaded")
	}

	// Upload order: chunks, index, meta.json, then the marks.
	var order []string
	for _, u := range bkt.Uploads() {
		order = append(order, strings.TrimPrefix(strings.TrimPrefix(u, out.ULID.String()+"/"), ""))
	}
	metaAt := slices.Index(order, block.MetaFilename)
	if metaAt < 0 || metaAt < slices.Index(order, "index") || metaAt < slices.Index(order, "chunks/000001") {
		t.Errorf("upload order %v: meta.json not after chunks and index", order)
	}
	for i, u := range order {
		if strings.HasSuffix(u, block.DeletionMarkFilename) && i < metaAt {
			t.Errorf("upload order %v: deletion mark before the compacted block's meta.json", order)
		}
	}

	// Every sample, read back through Prometheus's querier.
	equalSamples(t, mergedSamples(t, mem, out.ULID), want)

	// Sources marked for deletion, with a mark Thanos reads.
	blocks := listBlocks(t, mem)
	for _, s := range srcs[:4] {
		if !blocks[s.ULID].deletion {
			t.Errorf("source %s not marked for deletion", s.ULID)
		}
		var dm block.DeletionMark
		if err := json.Unmarshal(objectBytes(t, mem, path.Join(s.ULID.String(), block.DeletionMarkFilename)), &dm); err != nil {
			t.Fatal(err)
		}
		if dm.ID != s.ULID || dm.Version != 1 || dm.DeletionTime != clk.Now().Unix() {
			t.Errorf("deletion mark %+v", dm)
		}
	}
	if got := promtestutil.ToFloat64(c.metrics.compactions); got != 1 {
		t.Errorf("compactions %v, want 1", got)
	}
	if got := promtestutil.ToFloat64(c.metrics.blocksMarked); got != 4 {
		t.Errorf("marked %v, want 4", got)
	}

	// Not deleted before DeleteDelay, deleted after it.
	clk.Add(47 * time.Hour)
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(listBlocks(t, mem)); n != 6 {
		t.Fatalf("%d blocks in the bucket before the delete delay, want 6", n)
	}
	clk.Add(2 * time.Hour)
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	left := listBlocks(t, mem)
	if len(left) != 2 {
		t.Fatalf("%d blocks left after the delete delay, want 2", len(left))
	}
	for _, s := range srcs[:4] {
		if _, ok := left[s.ULID]; ok {
			t.Errorf("source %s still in the bucket", s.ULID)
		}
	}
	if got := promtestutil.ToFloat64(c.metrics.blocksDeleted); got != 4 {
		t.Errorf("deleted %v, want 4", got)
	}
	if promtestutil.ToFloat64(c.metrics.lastSuccess) != float64(clk.Now().UnixNano())/1e9 {
		t.Error("last successful run not recorded")
	}
	if promtestutil.ToFloat64(c.metrics.haltedGroups) != 0 {
		t.Error("halted groups")
	}
	equalSamples(t, mergedSamples(t, mem, out.ULID), want)
}

func TestGroupsByLabelsAreNotMerged(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	extB := labels.FromStrings("cluster", "us-1", "replica", "a")
	a := putLevel1(t, bkt, extA, 0, 5)
	b := putLevel1(t, bkt, extB, 0, 5)
	wantA := mergedSamples(t, bkt, ids(a[:4])...)
	wantB := mergedSamples(t, bkt, ids(b[:4])...)

	c := newTestCompactor(t, bkt, newFakeClock(), nil)
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	vis := visible(t, bkt)
	if len(vis) != 4 {
		t.Fatalf("%d visible blocks, want 2 compacted and 2 newest", len(vis))
	}
	compacted := 0
	for _, m := range vis {
		if m.Compaction.Level == 1 {
			continue
		}
		compacted++
		srcs, want := a, wantA
		if labels.Equal(labels.FromMap(m.Thanos.Labels), extB) {
			srcs, want = b, wantB
		} else if !labels.Equal(labels.FromMap(m.Thanos.Labels), extA) {
			t.Fatalf("compacted block with labels %v", m.Thanos.Labels)
		}
		for _, s := range m.Compaction.Sources {
			if !slices.Contains(ids(srcs), s) {
				t.Errorf("block with labels %v has a source of the other group", m.Thanos.Labels)
			}
		}
		equalSamples(t, mergedSamples(t, bkt, m.ULID), want)
	}
	if compacted != 2 {
		t.Fatalf("%d compacted blocks, want 2", compacted)
	}
}

func TestOverlappingBlocksHaltGroup(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	srcs := putLevel1(t, bkt, extA, 0, 5)
	// A second upload of [2h, 4h) with other data: a replica that lost its
	// replica label, say. Merging would mix the two.
	dup := putBlock(t, bkt, extA, 2*hour, 4*hour, []testSeries{{lset: labels.FromStrings("__name__", "up"), f: func(int64) float64 { return 1 }}})
	// Another group is not affected.
	extB := labels.FromStrings("cluster", "us-1")
	other := putLevel1(t, bkt, extB, 0, 5)
	before := listBlocks(t, bkt)

	clk := newFakeClock()
	c := newTestCompactor(t, bkt, clk, func(o *Options) { o.Registerer = prometheus.NewRegistry() })
	for range 2 {
		if err := c.Once(ctx); err != nil {
			t.Fatal(err)
		}
		clk.Add(72 * time.Hour)
	}

	halted := c.Halted()
	if len(halted) != 1 {
		t.Fatalf("halted groups %v, want one", halted)
	}
	for k := range halted {
		if !strings.Contains(k, `cluster="eu-1"`) {
			t.Errorf("halted group %s", k)
		}
	}
	if got := promtestutil.ToFloat64(c.metrics.haltedGroups); got != 1 {
		t.Errorf("halted groups metric %v, want 1", got)
	}
	if got := promtestutil.ToFloat64(c.metrics.groupErrors.WithLabelValues(string(NoCompactOverlap))); got < 1 {
		t.Errorf("group errors %v", got)
	}
	blocks := listBlocks(t, bkt)
	for _, m := range append(srcs, dup) {
		b := blocks[m.ULID]
		if b == nil || b.deletion || !slices.Equal(b.objects, withMarks(before[m.ULID].objects, b.noCompact)) {
			t.Fatalf("block %s changed: %+v", m.ULID, b)
		}
	}
	for _, id := range []ulid.ULID{srcs[1].ULID, dup.ULID} {
		if !blocks[id].noCompact {
			t.Errorf("overlapping block %s not marked for no compaction", id)
			continue
		}
		var nm block.NoCompactMark
		if err := json.Unmarshal(objectBytes(t, bkt, path.Join(id.String(), block.NoCompactMarkFilename)), &nm); err != nil {
			t.Fatal(err)
		}
		if nm.Reason != NoCompactOverlap || nm.ID != id || nm.Version != 1 || !strings.Contains(nm.Details, dup.ULID.String()) {
			t.Errorf("no-compact mark %+v", nm)
		}
	}
	for _, m := range []*block.Meta{srcs[0], srcs[2], srcs[3]} {
		if blocks[m.ULID].noCompact {
			t.Errorf("block %s marked, but it overlaps nothing", m.ULID)
		}
	}
	// The other group was compacted, and its sources deleted.
	for _, m := range other[:4] {
		if b := blocks[m.ULID]; b != nil && !b.deletion {
			t.Errorf("block %s of the other group not compacted", m.ULID)
		}
	}
}

// withMarks returns objs with no-compact-mark.json added if marked.
func withMarks(objs []string, marked bool) []string {
	out := slices.Clone(objs)
	if marked {
		out = append(out, block.NoCompactMarkFilename)
		slices.Sort(out)
	}
	return out
}

func TestCorruptBlockHaltsGroup(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, bkt objstore.Bucket, id ulid.ULID)
		reason block.NoCompactReason
	}{
		{"garbage index", func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			name := path.Join(id.String(), block.IndexFilename)
			b := objectBytes(t, bkt, name)
			for i := range b {
				b[i] = byte(i * 7)
			}
			putObject(t, bkt, name, b)
		}, NoCompactCorrupt},
		{"flipped chunk byte", func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			name := path.Join(id.String(), "chunks/000001")
			b := objectBytes(t, bkt, name)
			b[len(b)/2] ^= 0xff
			putObject(t, bkt, name, b)
		}, NoCompactCorrupt},
		{"missing chunks", func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			if err := bkt.Delete(context.Background(), path.Join(id.String(), "chunks/000001")); err != nil {
				t.Fatal(err)
			}
		}, NoCompactMissingFiles},
		{"truncated index", func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			name := path.Join(id.String(), block.IndexFilename)
			putObject(t, bkt, name, objectBytes(t, bkt, name)[:100])
		}, NoCompactMissingFiles},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			bkt := objstore.NewInMemBucket()
			srcs := putLevel1(t, bkt, extA, 0, 5)
			bad := srcs[2].ULID
			tc.damage(t, bkt, bad)
			before := listBlocks(t, bkt)

			clk := newFakeClock()
			c := newTestCompactor(t, bkt, clk, func(o *Options) { o.Registerer = prometheus.NewRegistry() })
			for range 2 {
				if err := c.Once(ctx); err != nil {
					t.Fatal(err)
				}
				clk.Add(72 * time.Hour)
			}
			if len(c.Halted()) != 1 || promtestutil.ToFloat64(c.metrics.haltedGroups) != 1 {
				t.Fatalf("halted %v", c.Halted())
			}
			if got := promtestutil.ToFloat64(c.metrics.groupErrors.WithLabelValues(string(tc.reason))); got < 1 {
				t.Errorf("group errors{reason=%q} = %v", tc.reason, got)
			}
			blocks := listBlocks(t, bkt)
			if len(blocks) != len(before) {
				t.Fatalf("%d blocks in the bucket, had %d", len(blocks), len(before))
			}
			for id, b := range blocks {
				if b.deletion {
					t.Errorf("block %s marked for deletion", id)
				}
				if !slices.Equal(b.objects, withMarks(before[id].objects, b.noCompact)) {
					t.Errorf("block %s: objects %v, had %v", id, b.objects, before[id].objects)
				}
				if b.noCompact != (id == bad) {
					t.Errorf("block %s: no-compact mark %v", id, b.noCompact)
				}
			}
			var nm block.NoCompactMark
			if err := json.Unmarshal(objectBytes(t, bkt, path.Join(bad.String(), block.NoCompactMarkFilename)), &nm); err != nil {
				t.Fatal(err)
			}
			if nm.Reason != tc.reason {
				t.Errorf("reason %q, want %q", nm.Reason, tc.reason)
			}
		})
	}
}

func TestManualNoCompactMarkIsRespected(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	srcs := putLevel1(t, bkt, extA, 0, 5)
	// An operator excludes the second block: the first is left alone (no
	// run of two), the third and fourth are compacted together.
	m := block.NewNoCompactMark(srcs[1].ULID, time.Now(), block.NoCompactManual, "")
	b, _ := json.Marshal(m)
	putObject(t, bkt, path.Join(srcs[1].ULID.String(), block.NoCompactMarkFilename), b)

	c := newTestCompactor(t, bkt, newFakeClock(), nil)
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if len(c.Halted()) != 0 {
		t.Fatalf("halted %v", c.Halted())
	}
	vis := visible(t, bkt)
	var got [][2]int64
	for _, m := range vis {
		got = append(got, [2]int64{m.MinTime / hour, m.MaxTime / hour})
	}
	slices.SortFunc(got, func(a, b [2]int64) int { return int(a[0] - b[0]) })
	want := [][2]int64{{0, 2}, {2, 4}, {4, 8}, {8, 10}}
	if !slices.Equal(got, want) {
		t.Errorf("visible ranges %v, want %v", got, want)
	}
}

func TestNewValidates(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	for _, o := range []Options{
		{WorkDir: "x"},
		{Bucket: bkt},
		{Bucket: bkt, WorkDir: "x", Ranges: []time.Duration{2 * time.Hour, 3 * time.Hour}},
		{Bucket: bkt, WorkDir: "x", Retention: Retention{Raw: -time.Hour}},
		{Bucket: bkt, WorkDir: "x", RetentionSize: -1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestRetentionPerResolution(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	clk := newFakeClock()
	now := clk.Now().UnixMilli() / hour * hour
	series := []testSeries{{lset: labels.FromStrings("__name__", "up"), f: func(int64) float64 { return 1 }, step: 10 * minute}}
	put := func(res, ageDays int64) *block.Meta {
		maxt := now - ageDays*day
		return putBlockRes(t, bkt, extA, res, maxt-2*hour, maxt, series)
	}
	rawOld, rawNew := put(block.ResolutionRaw, 10), put(block.ResolutionRaw, 5)
	fiveOld, fiveNew := put(block.Resolution5m, 40), put(block.Resolution5m, 10)
	hourOld, hourNew := put(block.Resolution1h, 400), put(block.Resolution1h, 40)

	c := newTestCompactor(t, bkt, clk, func(o *Options) {
		o.Retention = Retention{Raw: 7 * 24 * time.Hour, FiveMinutes: 30 * 24 * time.Hour, OneHour: 365 * 24 * time.Hour}
	})
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	blocks := listBlocks(t, bkt)
	for _, m := range []*block.Meta{rawOld, fiveOld, hourOld} {
		if !blocks[m.ULID].deletion {
			t.Errorf("block of resolution %d, %d-%d, not marked", m.Thanos.Downsample.Resolution, m.MinTime, m.MaxTime)
		}
	}
	for _, m := range []*block.Meta{rawNew, fiveNew, hourNew} {
		if blocks[m.ULID].deletion {
			t.Errorf("block of resolution %d, %d-%d, marked", m.Thanos.Downsample.Resolution, m.MinTime, m.MaxTime)
		}
	}

	// Zero retention keeps everything.
	bkt2 := objstore.NewInMemBucket()
	old := putBlockRes(t, bkt2, extA, block.ResolutionRaw, 0, 2*hour, series)
	if err := newTestCompactor(t, bkt2, clk, nil).Once(ctx); err != nil {
		t.Fatal(err)
	}
	if listBlocks(t, bkt2)[old.ULID].deletion {
		t.Error("block marked without retention")
	}
}

func TestPlanMatchesPrometheus(t *testing.T) {
	// The planner is Thanos's port of Prometheus's; without no-compact
	// marks both must pick the same blocks.
	ranges := []int64{2 * hour, 8 * hour, 2 * day}
	cases := [][][2]int64{
		{{0, 2}, {2, 4}, {4, 6}, {6, 8}},
		{{0, 2}, {2, 4}, {4, 6}, {6, 8}, {8, 10}},
		{{0, 2}, {2, 4}, {6, 8}, {8, 10}},
		{{0, 8}, {8, 16}, {16, 24}, {24, 32}, {40, 42}},
		{{0, 2}, {4, 6}, {8, 10}, {10, 12}, {14, 16}},
		{{0, 8}, {8, 10}, {10, 12}, {12, 14}, {14, 16}, {16, 18}},
		{{0, 48}, {48, 56}, {56, 58}},
	}
	for _, hs := range cases {
		var bs []*remoteBlock
		dir := t.TempDir()
		for _, h := range hs {
			m := &block.Meta{}
			m.ULID = ulid.Make()
			m.MinTime, m.MaxTime = h[0]*hour, h[1]*hour
			m.Version = 1
			m.Compaction.Level = 1
			m.Compaction.Sources = []ulid.ULID{m.ULID}
			bs = append(bs, &remoteBlock{id: m.ULID, meta: m})
			d := path.Join(dir, m.ULID.String())
			if err := writeMetaOnly(d, m); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for _, b := range plan(ranges, bs) {
			got = append(got, path.Join(dir, b.id.String()))
		}
		want := prometheusPlan(t, dir, ranges)
		if !slices.Equal(got, want) {
			t.Errorf("blocks %v: planned %v, Prometheus plans %v", hs, got, want)
		}
	}
}

func TestForeignObjectsAreLeftAlone(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	old := ulid.MustNew(ulid.Timestamp(time.Now().Add(-100*24*time.Hour)), nil)
	foreign := []string{
		old.String() + "/data.parquet",
		"traces/" + old.String() + "/index",
		"debug/metas/" + old.String() + ".json",
	}
	for _, name := range foreign {
		putObject(t, bkt, name, []byte("x"))
	}
	clk := newFakeClock()
	clk.Add(100 * 24 * time.Hour)
	if err := newTestCompactor(t, bkt, clk, nil).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, name := range foreign {
		if _, ok := bkt.Objects()[name]; !ok {
			t.Errorf("%s deleted", name)
		}
	}
}

func TestRetentionWithDefault(t *testing.T) {
	const d = 24 * time.Hour
	for _, c := range []struct {
		in   Retention
		def  time.Duration
		want Retention
	}{
		{Retention{}, 15 * d, Retention{15 * d, 15 * d, 15 * d}},
		{Retention{}, 0, Retention{}},
		{Retention{Raw: 30 * d}, 15 * d, Retention{30 * d, 30 * d, 30 * d}},
		{Retention{FiveMinutes: 90 * d}, 15 * d, Retention{15 * d, 90 * d, 90 * d}},
		{Retention{OneHour: 365 * d}, 15 * d, Retention{15 * d, 15 * d, 365 * d}},
		{Retention{Raw: 12 * time.Hour}, 15 * d, Retention{12 * time.Hour, 15 * d, 15 * d}},
		{Retention{Raw: 12 * time.Hour}, 0, Retention{Raw: 12 * time.Hour}},
		{Retention{7 * d, 30 * d, 365 * d}, 15 * d, Retention{7 * d, 30 * d, 365 * d}},
	} {
		if got := c.in.WithDefault(c.def); got != c.want {
			t.Errorf("%+v.WithDefault(%s) = %+v, want %+v", c.in, c.def, got, c.want)
		}
	}
	if got, want := (Retention{Raw: 15 * d}).String(), "raw 15d, 5m forever, 1h forever"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestRetentionDefaultApplied: raw blocks past the default retention are
// marked; those within it and downsampled blocks within the raw
// retention they follow are kept.
func TestRetentionDefaultApplied(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	clk := newFakeClock()
	now := clk.Now().UnixMilli() / hour * hour
	series := []testSeries{{lset: labels.FromStrings("__name__", "up"), f: func(int64) float64 { return 1 }, step: 10 * minute}}
	put := func(res, ageDays int64) *block.Meta {
		maxt := now - ageDays*day
		return putBlockRes(t, bkt, extA, res, maxt-2*hour, maxt, series)
	}
	rawOld, rawNew := put(block.ResolutionRaw, 20), put(block.ResolutionRaw, 10)
	fiveOld, fiveNew := put(block.Resolution5m, 20), put(block.Resolution5m, 10)
	c := newTestCompactor(t, bkt, clk, func(o *Options) {
		o.Retention = Retention{}.WithDefault(15 * 24 * time.Hour)
	})
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	blocks := listBlocks(t, bkt)
	for _, m := range []*block.Meta{rawOld, fiveOld} {
		if !blocks[m.ULID].deletion {
			t.Errorf("block of resolution %d, %d days old, not marked", m.Thanos.Downsample.Resolution, (now-m.MaxTime)/day)
		}
	}
	for _, m := range []*block.Meta{rawNew, fiveNew} {
		if blocks[m.ULID].deletion {
			t.Errorf("block of resolution %d, %d days old, marked", m.Thanos.Downsample.Resolution, (now-m.MaxTime)/day)
		}
	}
}

// TestRetentionSize: with the live blocks and the local bytes over the
// size retention, the blocks with the oldest data are marked until the
// rest fits; blocks already marked do not count, and a bucket that fits
// is left alone.
func TestRetentionSize(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	clk := newFakeClock()
	now := clk.Now().UnixMilli() / hour * hour
	series := testSeriesSet()
	// Five raw blocks of 2h, the oldest first, and a 5m copy of the oldest.
	var metas []*block.Meta
	for i := int64(5); i >= 1; i-- {
		metas = append(metas, putBlock(t, bkt, extA, now-i*day-2*hour, now-i*day, series))
	}
	five := putBlockRes(t, bkt, extA, block.Resolution5m, now-5*day-2*hour, now-5*day, series)
	size := metas[0].ExpectedSize()
	if size == 0 {
		t.Fatal("meta.json lists no file sizes")
	}
	var total int64
	for _, m := range append(slices.Clone(metas), five) {
		total += m.ExpectedSize()
	}

	// Room for the three newest blocks once the local bytes are counted.
	local := int64(1000)
	limit := metas[2].ExpectedSize() + metas[3].ExpectedSize() + metas[4].ExpectedSize() + local
	c := newTestCompactor(t, bkt, clk, func(o *Options) {
		o.RetentionSize = limit
		o.LocalBytes = func() int64 { return local }
		o.DeleteDelay = time.Hour
	})
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	blocks := listBlocks(t, bkt)
	for i, m := range metas {
		if want := i < 2; blocks[m.ULID].deletion != want {
			t.Errorf("block %d (%d days old): marked %v, want %v", i, (now-m.MaxTime)/day, blocks[m.ULID].deletion, want)
		}
	}
	if !blocks[five.ULID].deletion {
		t.Error("5m copy of the oldest block not marked")
	}

	// The next pass finds the bucket within the bound: nothing more is
	// marked, though the marked blocks are still there.
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	for i, m := range metas[2:] {
		if listBlocks(t, bkt)[m.ULID].deletion {
			t.Errorf("block %d marked on the second pass", i+2)
		}
	}
	// After the delete delay the marked blocks are gone.
	clk.Add(2 * time.Hour)
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(listBlocks(t, bkt)); got != 3 {
		t.Errorf("%d blocks left, want 3", got)
	}

	// A bound above everything marks nothing.
	bkt2 := objstore.NewInMemBucket()
	m := putBlock(t, bkt2, extA, now-3*hour, now-hour, series)
	c2 := newTestCompactor(t, bkt2, clk, func(o *Options) { o.RetentionSize = total })
	if err := c2.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if listBlocks(t, bkt2)[m.ULID].deletion {
		t.Error("block marked under the size bound")
	}
}

// TestRetentionSizeFromAttributes: a block whose meta.json lists no sizes
// is measured by its objects in the bucket.
func TestRetentionSizeFromAttributes(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	clk := newFakeClock()
	now := clk.Now().UnixMilli() / hour * hour
	series := testSeriesSet()
	old := putBlock(t, bkt, extA, now-2*day-2*hour, now-2*day, series)
	recent := putBlock(t, bkt, extA, now-day-2*hour, now-day, series)
	for _, m := range []*block.Meta{old, recent} {
		m.Thanos.Files = nil
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		putObject(t, bkt, m.ULID.String()+"/"+block.MetaFilename, b)
	}
	c := newTestCompactor(t, bkt, clk, func(o *Options) { o.RetentionSize = 1 })
	if err := c.Once(ctx); err != nil {
		t.Fatal(err)
	}
	blocks := listBlocks(t, bkt)
	if !blocks[old.ULID].deletion || !blocks[recent.ULID].deletion {
		t.Errorf("blocks without sizes not marked over a 1-byte bound: old %v, recent %v", blocks[old.ULID].deletion, blocks[recent.ULID].deletion)
	}
	if n, err := c.blockSize(ctx, &remoteBlock{id: old.ULID, meta: old}); err != nil || n < 1000 {
		t.Errorf("size of block without sizes: %d, %v", n, err)
	}
}
