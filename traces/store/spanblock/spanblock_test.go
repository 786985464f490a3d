package spanblock

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/meshlens/meshlens/traces"
)

func mustID(_ testing.TB, s string) traces.TraceID {
	id, err := traces.ParseTraceID(s)
	if err != nil {
		panic(err)
	}
	return id
}

func spanID(b byte) traces.SpanID { return traces.SpanID{0, 0, 0, 0, 0, 0, 1, b} }

var testULID = ulid.MustParse("01JAAAAAAAAAAAAAAAAAAAAAAA")

func writeBlock(t testing.TB, spans []traces.Span, o WriteOptions) *Block {
	t.Helper()
	return writeBlockID(t, t.TempDir(), testULID, spans, o)
}

func writeBlockID(t testing.TB, parent string, id ulid.ULID, spans []traces.Span, o WriteOptions) *Block {
	t.Helper()
	if _, err := Write(parent, id, spans, o); err != nil {
		t.Fatal(err)
	}
	b, err := Open(filepath.Join(parent, id.String()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// fullSpan has every field set, attributes of every type included.
func fullSpan() traces.Span {
	attrs := []traces.Attr{
		traces.String("http.method", "GET"),
		traces.Int("http.status_code", 503),
		traces.Int("neg", math.MinInt64),
		traces.Float("ratio", 0.25),
		traces.Float("inf", math.Inf(-1)),
		traces.Bool("error", true),
		traces.Bool("cached", false),
		{Key: "payload", Type: traces.TypeBytes, Str: "AAEC/w=="},
		{Key: "tags", Type: traces.TypeJSON, Str: `["a",{"b":1}]`},
		traces.String("empty", ""),
	}
	return traces.Span{
		TraceID:       mustID(nil, "5b8efff798038103d269b633813fc60c"),
		SpanID:        traces.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		ParentSpanID:  traces.SpanID{8, 7, 6, 5, 4, 3, 2, 1},
		TraceState:    "rojo=00f067aa0ba902b7",
		Name:          "reviews.default.svc.cluster.local:9080/*",
		Kind:          traces.KindClient,
		StartUnixNano: 1_700_000_000_123_456_789,
		EndUnixNano:   1_700_000_000_223_456_789,
		StatusCode:    traces.StatusError,
		StatusMessage: "upstream connect error",
		Service:       "productpage.default",
		Resource: []traces.Attr{
			traces.String(traces.ServiceNameKey, "productpage.default"),
			traces.Int("process.pid", 42),
		},
		ScopeName:    "envoy",
		ScopeVersion: "1.31",
		Attrs:        attrs,
		Events: []traces.Event{
			{TimeUnixNano: 1_700_000_000_150_000_000, Name: "retry", Attrs: []traces.Attr{traces.Int("attempt", 2)}},
			{TimeUnixNano: 1_700_000_000_160_000_000, Name: "no attrs"},
		},
		Links: []traces.Link{
			{TraceID: mustID(nil, "463ac35c9f6413ad"), SpanID: traces.SpanID{9}, TraceState: "x=y", Attrs: []traces.Attr{traces.Bool("follows", true)}},
			{TraceID: mustID(nil, "0af7651916cd43dd8448eb211c80319c"), SpanID: traces.SpanID{10}},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	full := fullSpan()
	endBeforeStart := full
	endBeforeStart.TraceID = mustID(t, "01")
	endBeforeStart.EndUnixNano = endBeforeStart.StartUnixNano - 1
	minimal := traces.Span{TraceID: mustID(t, "02"), SpanID: spanID(1)}
	maxTimes := traces.Span{TraceID: mustID(t, "03"), SpanID: spanID(1), StartUnixNano: math.MaxUint64, EndUnixNano: math.MaxUint64, Kind: traces.KindConsumer, StatusCode: traces.StatusOK}
	for _, tc := range []struct {
		name string
		span traces.Span
	}{
		{"every field", full},
		{"end before start", endBeforeStart},
		{"minimal", minimal},
		{"max times", maxTimes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := writeBlock(t, []traces.Span{tc.span}, WriteOptions{})
			got, err := b.Trace(context.Background(), tc.span.TraceID, traces.TimeRange{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !reflect.DeepEqual(got[0], tc.span) {
				t.Fatalf("round trip:\ngot  %+v\nwant %+v", got, tc.span)
			}
			var scanned []traces.Span
			if err := b.Traces(context.Background(), traces.TimeRange{}, func(s []traces.Span) bool {
				scanned = append(scanned, s...)
				return true
			}); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(scanned, []traces.Span{tc.span}) {
				t.Fatalf("Traces:\ngot  %+v\nwant %+v", scanned, tc.span)
			}
		})
	}
	t.Run("NaN", func(t *testing.T) {
		s := minimal
		s.Attrs = []traces.Attr{traces.Float("nan", math.NaN())}
		b := writeBlock(t, []traces.Span{s}, WriteOptions{})
		got, err := b.Trace(context.Background(), s.TraceID, traces.TimeRange{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || len(got[0].Attrs) != 1 || !math.IsNaN(got[0].Attrs[0].Float) || got[0].Attrs[0].Type != traces.TypeFloat {
			t.Fatalf("got %+v", got)
		}
	})
}

// threeTraces: a 64-bit id (left-padded), a 128-bit id sharing its low 64
// bits, and one more; spans at 100, 200, 300 (+ trace offset).
func threeTraces(t testing.TB) (ids []traces.TraceID, spans []traces.Span) {
	ids = []traces.TraceID{
		mustID(t, "463ac35c9f6413ad"),
		mustID(t, "00000000000000ff463ac35c9f6413ad"),
		mustID(t, "ffffffffffffffffffffffffffffffff"),
	}
	for i, id := range ids {
		for j := range 3 {
			start := uint64(100*(j+1) + 10*i)
			spans = append(spans, traces.Span{
				TraceID: id, SpanID: spanID(byte(j)), Name: "op", Service: "svc",
				StartUnixNano: start, EndUnixNano: start + 5,
				Resource: []traces.Attr{traces.String(traces.ServiceNameKey, "svc")},
			})
		}
	}
	// Written in reverse: Write sorts.
	slices.Reverse(spans)
	return ids, spans
}

func starts(spans []traces.Span) []uint64 {
	var s []uint64
	for _, sp := range spans {
		s = append(s, sp.StartUnixNano)
	}
	return s
}

func TestTrace(t *testing.T) {
	ids, spans := threeTraces(t)
	b := writeBlock(t, spans, WriteOptions{})
	for _, tc := range []struct {
		name string
		id   traces.TraceID
		tr   traces.TimeRange
		want []uint64 // span starts; nil: not found
	}{
		{"64-bit id, all", ids[0], traces.TimeRange{}, []uint64{100, 200, 300}},
		{"64-bit id as 32 hex digits", mustID(t, "0000000000000000463ac35c9f6413ad"), traces.TimeRange{}, []uint64{100, 200, 300}},
		{"128-bit id with the same low bits", ids[1], traces.TimeRange{}, []uint64{110, 210, 310}},
		{"last id", ids[2], traces.TimeRange{}, []uint64{120, 220, 320}},
		{"miss below", mustID(t, "01"), traces.TimeRange{}, nil},
		{"miss between", mustID(t, "463ac35c9f6413ae"), traces.TimeRange{}, nil},
		{"time range inclusive", ids[0], traces.TimeRange{Start: 200, End: 300}, []uint64{200, 300}},
		{"open start", ids[0], traces.TimeRange{End: 150}, []uint64{100}},
		{"open end", ids[0], traces.TimeRange{Start: 250}, []uint64{300}},
		{"range between spans", ids[0], traces.TimeRange{Start: 101, End: 199}, nil},
		{"range after the block", ids[0], traces.TimeRange{Start: 1000}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.Trace(context.Background(), tc.id, tc.tr)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if got != nil {
					t.Fatalf("got %d spans, want nil", len(got))
				}
				return
			}
			if !slices.Equal(starts(got), tc.want) {
				t.Fatalf("starts %v, want %v", starts(got), tc.want)
			}
			for _, s := range got {
				if s.TraceID != tc.id {
					t.Fatalf("span of trace %s", s.TraceID)
				}
			}
		})
	}
}

// TestTraceManyRowGroups finds every trace of a block of many row groups
// and pages, and misses ids that sort between them.
func TestTraceManyRowGroups(t *testing.T) {
	spans := istioSpans(rand.New(rand.NewPCG(1, 2)), 2000, 1e18, 3600e9)
	for _, o := range []WriteOptions{
		{RowGroupSpans: 100},
		{RowGroupSpans: 1000, pageBufferBytes: 1024},
		{},
	} {
		b := writeBlock(t, spans, o)
		if o.RowGroupSpans == 100 && len(b.index) < 50 {
			t.Fatalf("%d row groups, want many", len(b.index))
		}
		want := map[traces.TraceID][]traces.Span{}
		for _, s := range spans {
			want[s.TraceID] = append(want[s.TraceID], s)
		}
		for id, ws := range want {
			got, err := b.Trace(context.Background(), id, traces.TimeRange{})
			if err != nil {
				t.Fatal(err)
			}
			slices.SortStableFunc(ws, func(a, b traces.Span) int { return cmp.Compare(a.StartUnixNano, b.StartUnixNano) })
			if !reflect.DeepEqual(got, ws) {
				t.Fatalf("trace %s: got %d spans, want %d", id, len(got), len(ws))
			}
			miss := id
			miss[15]++
			if _, ok := want[miss]; !ok {
				if got, err := b.Trace(context.Background(), miss, traces.TimeRange{}); err != nil || got != nil {
					t.Fatalf("trace %s: got %d spans, %v; want none", miss, len(got), err)
				}
			}
		}
		if b.Meta().Spans != len(spans) || b.Meta().Traces != len(want) {
			t.Fatalf("meta: %d spans in %d traces, want %d in %d", b.Meta().Spans, b.Meta().Traces, len(spans), len(want))
		}
	}
}

func TestTraces(t *testing.T) {
	ids, spans := threeTraces(t)
	b := writeBlock(t, spans, WriteOptions{})
	for _, tc := range []struct {
		name  string
		tr    traces.TimeRange
		limit int // stop after this many traces; 0: never
		want  []traces.TraceID
	}{
		{"all", traces.TimeRange{}, 0, ids},
		{"range holding every trace's middle span", traces.TimeRange{Start: 200, End: 220}, 0, ids},
		{"range holding one span of the last trace", traces.TimeRange{Start: 315, End: 320}, 0, ids[2:]},
		{"range holding nothing", traces.TimeRange{Start: 121, End: 199}, 0, nil},
		{"after the block", traces.TimeRange{Start: 1000}, 0, nil},
		{"stop after one", traces.TimeRange{}, 1, ids[:1]},
		{"stop after two", traces.TimeRange{}, 2, ids[:2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []traces.TraceID
			err := b.Traces(context.Background(), tc.tr, func(s []traces.Span) bool {
				if len(s) != 3 {
					t.Errorf("trace %s: %d spans, want it whole (3)", s[0].TraceID, len(s))
				}
				if !slices.IsSorted(starts(s)) {
					t.Errorf("trace %s: starts %v not sorted", s[0].TraceID, starts(s))
				}
				got = append(got, s[0].TraceID)
				return tc.limit == 0 || len(got) < tc.limit
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("traces %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := b.Traces(ctx, traces.TimeRange{}, func([]traces.Span) bool { return true }); err == nil {
			t.Fatal("no error after cancellation")
		}
	})
}

func TestWriteDedupe(t *testing.T) {
	id := mustID(t, "abc")
	client := traces.Span{TraceID: id, SpanID: spanID(1), Kind: traces.KindClient, StartUnixNano: 10, Name: "first"}
	dup := client
	dup.Name = "duplicate"
	// Zipkin's shared span: the server side has the client's span id.
	server := traces.Span{TraceID: id, SpanID: spanID(1), Kind: traces.KindServer, StartUnixNano: 11}
	b := writeBlock(t, []traces.Span{client, dup, server}, WriteOptions{})
	got, err := b.Trace(context.Background(), id, traces.TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "first" || got[1].Kind != traces.KindServer {
		t.Fatalf("got %+v, want the first client span and the server span", got)
	}
	if b.Meta().Spans != 2 {
		t.Fatalf("meta spans %d, want 2", b.Meta().Spans)
	}
}

func TestMerge(t *testing.T) {
	dir := t.TempDir()
	id1, id2, id3 := ulid.MustParse("01JAAAAAAAAAAAAAAAAAAAAAA1"), ulid.MustParse("01JAAAAAAAAAAAAAAAAAAAAAA2"), ulid.MustParse("01JAAAAAAAAAAAAAAAAAAAAAA3")
	shared, only1, only2 := mustID(t, "10"), mustID(t, "05"), mustID(t, "20")
	mk := func(id traces.TraceID, sid byte, start uint64, name string) traces.Span {
		return traces.Span{TraceID: id, SpanID: spanID(sid), StartUnixNano: start, EndUnixNano: start + 1, Name: name, Service: "s"}
	}
	b1 := writeBlockID(t, dir, id1, []traces.Span{mk(shared, 1, 100, "a"), mk(shared, 2, 300, "b"), mk(only1, 1, 50, "x")}, WriteOptions{})
	// b2 repeats span 1 of the shared trace (a retried send) and adds one.
	b2 := writeBlockID(t, dir, id2, []traces.Span{mk(shared, 1, 100, "a again"), mk(shared, 3, 200, "c"), mk(only2, 1, 400, "y")}, WriteOptions{RowGroupSpans: 1})
	m, err := Merge(dir, id3, []*Block{b1, b2}, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Level != 2 || !slices.Equal(m.Sources, []ulid.ULID{id1, id2}) {
		t.Fatalf("level %d sources %v, want 2 [%s %s]", m.Level, m.Sources, id1, id2)
	}
	if m.Spans != 5 || m.Traces != 3 || m.MinTime != 50 || m.MaxTime != 400 {
		t.Fatalf("meta %d spans %d traces [%d, %d], want 5, 3, [50, 400]", m.Spans, m.Traces, m.MinTime, m.MaxTime)
	}
	b3 := writeOpen(t, filepath.Join(dir, id3.String()))
	got, err := b3.Trace(context.Background(), shared, traces.TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"a", "c", "b"}) {
		t.Fatalf("merged trace %v, want [a c b] (deduplicated, sorted by start)", names)
	}

	// A second compaction: level 3, sources still the level-1 blocks.
	id4 := ulid.MustParse("01JAAAAAAAAAAAAAAAAAAAAAA4")
	b4 := writeBlockID(t, dir, id4, []traces.Span{mk(only1, 2, 60, "z")}, WriteOptions{})
	id5 := ulid.MustParse("01JAAAAAAAAAAAAAAAAAAAAAA5")
	m, err = Merge(dir, id5, []*Block{b3, b4}, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Level != 3 || !slices.Equal(m.Sources, []ulid.ULID{id1, id2, id4}) || m.Spans != 6 {
		t.Fatalf("level %d sources %v spans %d, want 3 [%s %s %s] 6", m.Level, m.Sources, m.Spans, id1, id2, id4)
	}
}

// TestMergeLarge merges blocks holding overlapping halves of many traces
// and checks the result equals a block written from all spans at once.
func TestMergeLarge(t *testing.T) {
	spans := istioSpans(rand.New(rand.NewPCG(3, 4)), 3000, 1e18, 3600e9)
	dir := t.TempDir()
	var blocks []*Block
	for i := range 3 {
		var part []traces.Span
		for j := i; j < len(spans); j += 2 { // blocks 0 and 2 overlap fully
			part = append(part, spans[j])
		}
		blocks = append(blocks, writeBlockID(t, dir, ulid.MustParse("01JAAAAAAAAAAAAAAAAAAAAAB"+string(rune('0'+i))), part, WriteOptions{RowGroupSpans: 500}))
	}
	merged := ulid.MustParse("01JAAAAAAAAAAAAAAAAAAAAAC0")
	if _, err := Merge(dir, merged, blocks, WriteOptions{RowGroupSpans: 700}); err != nil {
		t.Fatal(err)
	}
	whole := writeBlock(t, spans, WriteOptions{})
	got := writeOpen(t, filepath.Join(dir, merged.String()))
	if got.Meta().Spans != len(spans) || got.Meta().Traces != whole.Meta().Traces {
		t.Fatalf("merged %d spans %d traces, want %d %d", got.Meta().Spans, got.Meta().Traces, len(spans), whole.Meta().Traces)
	}
	if !slices.Equal(got.Meta().Operations, whole.Meta().Operations) {
		t.Fatal("merged operations differ from the whole block's")
	}
	var a, b [][]traces.Span
	collect := func(blk *Block, dst *[][]traces.Span) {
		if err := blk.Traces(context.Background(), traces.TimeRange{}, func(s []traces.Span) bool {
			*dst = append(*dst, slices.Clone(s))
			return true
		}); err != nil {
			t.Fatal(err)
		}
	}
	collect(got, &a)
	collect(whole, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("merged traces differ from the whole block's")
	}
}

func writeOpen(t testing.TB, dir string) *Block {
	t.Helper()
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestTagValues(t *testing.T) {
	mk := func(id string, service string, attrs ...traces.Attr) traces.Span {
		return traces.Span{TraceID: mustID(t, id), SpanID: spanID(1), Service: service, Name: "op", Kind: traces.KindServer,
			Resource: []traces.Attr{traces.String(traces.ServiceNameKey, service), traces.String("zone", "z-"+service)},
			Attrs:    attrs}
	}
	spans := []traces.Span{
		mk("1", "a", traces.Int("http.status_code", 200), traces.String("http.method", "GET"), traces.String("zone", "span-zone")),
		mk("2", "b", traces.Int("http.status_code", 503), traces.String("http.method", "GET"), traces.Bool("error", true)),
		mk("3", "a", traces.Int("http.status_code", 200), traces.String("http.method", "POST"), traces.Float("ratio", 0.5)),
	}
	b := writeBlock(t, spans, WriteOptions{})
	for _, tc := range []struct {
		name  string
		scope traces.Scope
		key   string
		limit int
		want  []traces.Attr
	}{
		{"strings", traces.ScopeSpan, "http.method", 0, []traces.Attr{traces.String("http.method", "GET"), traces.String("http.method", "POST")}},
		{"ints", traces.ScopeSpan, "http.status_code", 0, []traces.Attr{traces.Int("http.status_code", 200), traces.Int("http.status_code", 503)}},
		{"bool", traces.ScopeSpan, "error", 0, []traces.Attr{traces.Bool("error", true)}},
		{"float", traces.ScopeSpan, "ratio", 0, []traces.Attr{traces.Float("ratio", 0.5)}},
		{"limit", traces.ScopeSpan, "http.method", 1, []traces.Attr{traces.String("http.method", "GET")}},
		{"resource", traces.ScopeResource, traces.ServiceNameKey, 0, []traces.Attr{traces.String(traces.ServiceNameKey, "a"), traces.String(traces.ServiceNameKey, "b")}},
		{"resource scope only", traces.ScopeResource, "zone", 0, []traces.Attr{traces.String("zone", "z-a"), traces.String("zone", "z-b")}},
		{"span scope only", traces.ScopeSpan, "zone", 0, []traces.Attr{traces.String("zone", "span-zone")}},
		{"both scopes", "", "zone", 0, []traces.Attr{traces.String("zone", "span-zone"), traces.String("zone", "z-a"), traces.String("zone", "z-b")}},
		{"unknown key", "", "nope", 0, []traces.Attr{}},
		{"key of the other scope", traces.ScopeResource, "http.method", 0, []traces.Attr{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.TagValues(context.Background(), tc.scope, tc.key, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	m := b.Meta()
	if !slices.Equal(m.Services, []string{"a", "b"}) ||
		!slices.Equal(m.Operations, []ServiceOperation{{"a", "op", traces.KindServer}, {"b", "op", traces.KindServer}}) ||
		!slices.Equal(m.SpanTags, []string{"error", "http.method", "http.status_code", "ratio", "zone"}) ||
		!slices.Equal(m.ResourceTags, []string{traces.ServiceNameKey, "zone"}) {
		t.Fatalf("summaries: %v %v %v %v", m.Services, m.Operations, m.SpanTags, m.ResourceTags)
	}
}

func TestSummaryBounds(t *testing.T) {
	var spans []traces.Span
	for i := range 50 {
		spans = append(spans, traces.Span{TraceID: traces.TraceID{byte(i + 1)}, SpanID: spanID(1), Service: "s", Name: string(rune('a' + i)),
			Attrs: []traces.Attr{traces.Int("n", int64(i)), traces.Int(string(rune('A'+i)), 1), traces.String("long", string(make([]byte, 300)))}})
	}
	b := writeBlock(t, spans, WriteOptions{MaxTagValues: 10, MaxTagKeys: 5, MaxOperations: 7})
	m := b.Meta()
	if len(m.Operations) != 7 || !m.OperationsTruncated || len(m.SpanTags) != 5 || !m.TagsTruncated {
		t.Fatalf("%d operations (truncated %v), %d span tags (truncated %v); want 7, 5, truncated", len(m.Operations), m.OperationsTruncated, len(m.SpanTags), m.TagsTruncated)
	}
	vals, err := b.TagValues(context.Background(), traces.ScopeSpan, "n", 0)
	if err != nil || len(vals) != 10 {
		t.Fatalf("%d values, %v; want 10", len(vals), err)
	}
	if vals, _ := b.TagValues(context.Background(), traces.ScopeSpan, "long", 0); len(vals) != 0 {
		t.Fatalf("values longer than %d bytes listed", maxTagValueBytes)
	}
}

func TestFilesAndReopen(t *testing.T) {
	parent := t.TempDir()
	spans := istioSpans(rand.New(rand.NewPCG(5, 6)), 100, 1e18, 60e9)
	m, err := Write(parent, testULID, spans, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, testULID.String())
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []File
	for _, e := range entries {
		if e.Name() == MetaFilename {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		onDisk = append(onDisk, File{RelPath: e.Name(), SizeBytes: fi.Size()})
	}
	if !slices.Equal(m.Files, onDisk) {
		t.Fatalf("meta files %v, on disk %v", m.Files, onDisk)
	}
	read, err := ReadMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(read, m) {
		t.Fatalf("ReadMeta %+v, Write returned %+v", read, m)
	}
	if m.Version != 1 || m.ULID != testULID || m.Level != 1 || !slices.Equal(m.Sources, []ulid.ULID{testULID}) || m.Spans != len(spans) {
		t.Fatalf("meta %+v", m)
	}
	b := writeOpen(t, dir)
	if b.Dir() != dir || !reflect.DeepEqual(b.Meta(), m) {
		t.Fatalf("opened block dir %s meta %+v", b.Dir(), b.Meta())
	}
	if got, err := b.Trace(context.Background(), spans[0].TraceID, traces.TimeRange{}); err != nil || len(got) == 0 {
		t.Fatalf("reopened block: %d spans, %v", len(got), err)
	}
	if _, err := Write(parent, testULID, spans, WriteOptions{}); err == nil {
		t.Fatal("overwrote a complete block")
	}
}

func TestEmptyBlock(t *testing.T) {
	b := writeBlock(t, nil, WriteOptions{})
	if b.Meta().Spans != 0 || b.Meta().Traces != 0 {
		t.Fatalf("meta %+v", b.Meta())
	}
	if got, err := b.Trace(context.Background(), mustID(t, "1"), traces.TimeRange{}); err != nil || got != nil {
		t.Fatalf("got %v, %v", got, err)
	}
	if err := b.Traces(context.Background(), traces.TimeRange{}, func([]traces.Span) bool { t.Fatal("called"); return false }); err != nil {
		t.Fatal(err)
	}
}

// TestDamaged opens blocks with damaged files and reads them: every damage
// gives an error, none a panic or wrong spans.
func TestDamaged(t *testing.T) {
	spans := istioSpans(rand.New(rand.NewPCG(7, 8)), 500, 1e18, 60e9)
	ids := map[traces.TraceID]bool{}
	for _, s := range spans {
		ids[s.TraceID] = true
	}
	truncate := func(name string, keep func(int64) int64) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, name)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, keep(fi.Size())); err != nil {
				t.Fatal(err)
			}
		}
	}
	flip := func(name string, at func(int64) int64) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for i := at(int64(len(b))); i < min(at(int64(len(b)))+64, int64(len(b))); i++ {
				b[i] ^= 0x5a
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// fixMeta makes meta.json list the damaged sizes, so the damage is found
	// by reading the files rather than by their sizes.
	fixMeta := func(damage func(*testing.T, string)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			damage(t, dir)
			m, err := ReadMeta(dir)
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range m.Files {
				fi, err := os.Stat(filepath.Join(dir, f.RelPath))
				if err != nil {
					t.Fatal(err)
				}
				m.Files[i].SizeBytes = fi.Size()
			}
			b, _ := json.MarshalIndent(m, "", "\t")
			if err := os.WriteFile(filepath.Join(dir, MetaFilename), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	half := func(n int64) int64 { return n / 2 }
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"meta.json missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, MetaFilename)) }},
		{"meta.json truncated", truncate(MetaFilename, half)},
		{"data truncated", truncate(DataFilename, half)},
		{"data truncated, meta agreeing", fixMeta(truncate(DataFilename, half))},
		{"data footer damaged", fixMeta(flip(DataFilename, func(n int64) int64 { return n - 40 }))},
		{"data pages damaged", flip(DataFilename, func(n int64) int64 { return n / 3 })},
		{"data start damaged", flip(DataFilename, func(n int64) int64 { return 0 })},
		{"data empty", fixMeta(truncate(DataFilename, func(int64) int64 { return 0 }))},
		{"bloom damaged", flip(BloomFilename, half)},
		{"bloom truncated", fixMeta(truncate(BloomFilename, half))},
		{"index damaged", flip(IndexFilename, half)},
		{"index truncated", fixMeta(truncate(IndexFilename, half))},
		{"tags damaged", flip(TagsFilename, half)},
		{"data missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, DataFilename)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			if _, err := Write(parent, testULID, spans, WriteOptions{RowGroupSpans: 200}); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(parent, testULID.String())
			tc.damage(t, dir)
			b, err := Open(dir)
			if err != nil {
				return // refused at open
			}
			defer b.Close()
			var failed bool
			for id := range ids {
				got, err := b.Trace(context.Background(), id, traces.TimeRange{})
				if err != nil {
					failed = true
					continue
				}
				for _, s := range got {
					if s.TraceID != id {
						t.Fatalf("Trace(%s) returned a span of %s", id, s.TraceID)
					}
				}
			}
			if err := b.Traces(context.Background(), traces.TimeRange{}, func([]traces.Span) bool { return true }); err != nil {
				failed = true
			}
			if _, err := b.TagValues(context.Background(), "", "http.method", 0); err != nil {
				failed = true
			}
			if !failed {
				t.Fatal("damage not detected")
			}
		})
	}
}

func TestMetaValidation(t *testing.T) {
	valid := `{"version":1,"ulid":"01JAAAAAAAAAAAAAAAAAAAAAAA","minTimeUnixNano":1,"maxTimeUnixNano":2,"traces":1,"spans":2,"level":1,"files":[{"relPath":"data.parquet","sizeBytes":10}]}`
	for _, tc := range []struct {
		name, json string
		ok         bool
	}{
		{"valid", valid, true},
		{"not json", `{`, false},
		{"version 2", `{"version":2,"ulid":"01JAAAAAAAAAAAAAAAAAAAAAAA","level":1}`, false},
		{"no ulid", `{"version":1,"level":1}`, false},
		{"min after max", `{"version":1,"ulid":"01JAAAAAAAAAAAAAAAAAAAAAAA","minTimeUnixNano":3,"maxTimeUnixNano":2,"level":1}`, false},
		{"level 0", `{"version":1,"ulid":"01JAAAAAAAAAAAAAAAAAAAAAAA"}`, false},
		{"more traces than spans", `{"version":1,"ulid":"01JAAAAAAAAAAAAAAAAAAAAAAA","level":1,"traces":2,"spans":1}`, false},
		{"file outside the block", `{"version":1,"ulid":"01JAAAAAAAAAAAAAAAAAAAAAAA","level":1,"files":[{"relPath":"../x","sizeBytes":1}]}`, false},
		{"negative size", `{"version":1,"ulid":"01JAAAAAAAAAAAAAAAAAAAAAAA","level":1,"files":[{"relPath":"x","sizeBytes":-1}]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeMeta([]byte(tc.json))
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestIndexCodec(t *testing.T) {
	entries := []rowGroupEntry{
		{MinID: [16]byte{1}, MaxID: [16]byte{2}, MinStart: 5, MaxStart: 9, Spans: 10, Traces: 2},
		{MinID: [16]byte{3}, MaxID: [16]byte{3}, MinStart: 1, MaxStart: 1, Spans: 1, Traces: 1},
	}
	enc := encodeIndex(entries)
	got, err := decodeIndex(enc)
	if err != nil || !reflect.DeepEqual(got, entries) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	for i := range enc {
		bad := bytes.Clone(enc)
		bad[i] ^= 1
		if _, err := decodeIndex(bad); err == nil {
			t.Fatalf("flipped bit in byte %d not detected", i)
		}
	}
}
