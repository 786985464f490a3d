package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/wlog"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
)

// clock is a settable wall clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func open(t *testing.T, dir string, bkt objstore.Bucket, c *clock) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, Bucket: bkt, Now: c.now, DeleteFromBucket: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bucketSeries(svc string, le string) labels.Labels {
	return labels.FromStrings("__name__", "istio_request_duration_milliseconds_bucket", "destination_service_name", svc, "le", le)
}

func ex(ls labels.Labels, t time.Time, v float64, trace string) Exemplar {
	el := labels.EmptyLabels()
	if trace != "" {
		el = labels.FromStrings("trace_id", trace, "span_id", "00f067aa0ba902b7")
	}
	return Exemplar{Series: ls, Exemplar: exemplar.Exemplar{Labels: el, Value: v, Ts: t.UnixMilli(), HasTs: true}}
}

// mesh returns n exemplars of 103 services' latency buckets over 6h from
// t0 (half of them of cart, checkout and payments), each with its own
// random trace id, value and time.
func mesh(n int) []Exemplar {
	r := rand.New(rand.NewPCG(1, 2))
	var es []Exemplar
	for range n {
		svc := []string{"cart", "checkout", "payments"}[r.IntN(3)]
		if r.IntN(2) == 0 {
			svc = fmt.Sprintf("svc-%d", r.IntN(100))
		}
		le := []string{"1", "5", "10", "25", "50", "100", "250", "500", "1000", "+Inf"}[r.IntN(10)]
		at := t0.Add(time.Duration(r.Int64N(int64(6 * time.Hour))))
		es = append(es, ex(bucketSeries(svc, le), at, float64(r.IntN(5000))/10, fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64())))
	}
	return es
}

func matchers(_ testing.TB, kv ...string) []*labels.Matcher {
	var ms []*labels.Matcher
	for i := 0; i < len(kv); i += 2 {
		ms = append(ms, labels.MustNewMatcher(labels.MatchEqual, kv[i], kv[i+1]))
	}
	return ms
}

// want computes Select's answer from the exemplars themselves.
func wantSelect(es []Exemplar, start, end int64, keep func(labels.Labels) bool) []exemplar.QueryResult {
	by := map[string]*exemplar.QueryResult{}
	for _, e := range es {
		if e.Ts < start || e.Ts > end || !keep(e.Series) {
			continue
		}
		k := e.Series.String()
		if by[k] == nil {
			by[k] = &exemplar.QueryResult{SeriesLabels: e.Series}
		}
		by[k].Exemplars = append(by[k].Exemplars, e.Exemplar)
	}
	var out []exemplar.QueryResult
	for _, r := range by {
		slices.SortFunc(r.Exemplars, exemplar.Compare)
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b exemplar.QueryResult) int { return labels.Compare(a.SeriesLabels, b.SeriesLabels) })
	return out
}

func wantTop(es []Exemplar, start, end int64, n int, keep func(labels.Labels) bool) []Exemplar {
	var in []Exemplar
	for _, e := range es {
		if e.Ts >= start && e.Ts <= end && keep(e.Series) {
			in = append(in, e)
		}
	}
	slices.SortStableFunc(in, func(a, b Exemplar) int {
		if a.Value != b.Value {
			if a.Value > b.Value {
				return -1
			}
			return 1
		}
		return cmpInt(a.Ts, b.Ts)
	})
	return in[:min(n, len(in))]
}

func checkQueries(t *testing.T, s *Store, es []Exemplar, when string) {
	t.Helper()
	ctx := context.Background()
	start, end := t0.Add(time.Hour).UnixMilli(), t0.Add(4*time.Hour).UnixMilli()
	isCart := func(ls labels.Labels) bool { return ls.Get("destination_service_name") == "cart" }
	got, err := s.Select(ctx, start, end, matchers(t, "destination_service_name", "cart"))
	if err != nil {
		t.Fatal(err)
	}
	if want := wantSelect(es, start, end, isCart); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: Select of cart returned %d series, want %d (%d exemplars in all)", when, len(got), len(want), len(es))
	}
	// Two matcher sets are a union.
	got, err = s.Select(ctx, start, end, matchers(t, "destination_service_name", "cart"), matchers(t, "le", "+Inf"))
	if err != nil {
		t.Fatal(err)
	}
	union := func(ls labels.Labels) bool { return isCart(ls) || ls.Get("le") == "+Inf" }
	if want := wantSelect(es, start, end, union); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: Select of cart or +Inf differs", when)
	}
	top, err := s.Top(ctx, start, end, 7, matchers(t, "destination_service_name", "cart"))
	if err != nil {
		t.Fatal(err)
	}
	if want := wantTop(es, start, end, 7, isCart); !reflect.DeepEqual(top, want) {
		t.Errorf("%s: Top 7 of cart:\n got %v\nwant %v", when, top, want)
	}
}

// TestExemplarsSurviveRestartCutShipAndRetention follows exemplars with a
// trace id from the head through a restart, a cut into blocks, shipping,
// the loss of the local disk and the retention; every stage answers the
// same.
func TestExemplarsSurviveRestartCutShipAndRetention(t *testing.T) {
	dir := t.TempDir()
	bkt, err := filesystem.NewBucket(filepath.Join(dir, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: t0.Add(6 * time.Hour)}
	s := open(t, filepath.Join(dir, "a"), bkt, c)
	es := mesh(3000)
	// Exemplars without a trace id stay in the TSDB's ring.
	without := ex(bucketSeries("cart", "10"), t0.Add(2*time.Hour), 1e9, "")
	for i := 0; i < len(es); i += 100 {
		if _, err := s.Append(es[i : i+100]); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.Append([]Exemplar{without}); err != nil || n != 0 {
		t.Fatalf("an exemplar without trace id: stored %d, %v", n, err)
	}
	// A retried request stores nothing twice.
	if n, err := s.Append(es[len(es)-100:]); err != nil || n != 0 {
		t.Fatalf("a retried batch stored %d, %v", n, err)
	}
	checkQueries(t, s, es, "head")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, filepath.Join(dir, "a"), bkt, c)
	checkQueries(t, s, es, "after restart")

	// The periods that ended 30m ago are cut: 10:00-12:00 and 12:00-14:00.
	if err := s.Maintain(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if n := len(s.blocks); n != 2 {
		t.Fatalf("%d blocks cut, want 2", n)
	}
	checkQueries(t, s, es, "after the cut")
	ids, err := bktIDs(bkt)
	if err != nil || len(ids) != 2 {
		t.Fatalf("bucket holds %v (%v), want the 2 blocks", ids, err)
	}
	// A restart replays only what is not in a block.
	s.Close()
	s = open(t, filepath.Join(dir, "a"), bkt, c)
	late := 0
	for _, e := range es {
		if e.Ts >= t0.Add(4*time.Hour).UnixMilli() {
			late++
		}
	}
	if got := headCount(s); got != late {
		t.Errorf("head holds %d exemplars after a restart, want the %d of 14:00-16:00", got, late)
	}
	checkQueries(t, s, es, "after the cut and a restart")
	if err := s.Maintain(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Another disk, the same bucket: the blocks come back from it.
	s = open(t, filepath.Join(dir, "b"), bkt, c)
	if err := s.SyncBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkQueries(t, s, es, "from the bucket")

	// Past the retention of every exemplar, nothing is left anywhere.
	c.t = t0.Add(7*24*time.Hour + 7*time.Hour)
	if err := s.Maintain(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if ids, err := bktIDs(bkt); err != nil || len(ids) != 0 || len(s.blocks) != 0 {
		t.Errorf("after the retention: bucket %v (%v), %d local blocks", ids, err, len(s.blocks))
	}
	s.Close()
}

func headCount(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.head {
		n += p.n
	}
	return n
}

func bktIDs(bkt objstore.Bucket) ([]string, error) {
	var ids []string
	err := bkt.Iter(context.Background(), DefaultPrefix+"/", func(name string) error {
		ids = append(ids, name)
		return nil
	})
	return ids, err
}

// TestLateExemplarsOfACutPeriod: exemplars that arrive after their period
// was cut go into another block of the period, and a restart keeps both.
func TestLateExemplarsOfACutPeriod(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0.Add(3 * time.Hour)}
	s := open(t, dir, nil, c)
	a := ex(bucketSeries("cart", "10"), t0.Add(10*time.Minute), 5, "0000000000000000000000000000000a")
	b := ex(bucketSeries("cart", "10"), t0.Add(20*time.Minute), 9, "0000000000000000000000000000000b")
	if _, err := s.Append([]Exemplar{a}); err != nil {
		t.Fatal(err)
	}
	if err := s.Maintain(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]Exemplar{b}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, nil, c)
	defer s.Close()
	if got := headCount(s); got != 1 {
		t.Errorf("head holds %d after a restart, want the late one", got)
	}
	checkQueries(t, s, []Exemplar{a, b}, "late")
	if err := s.Maintain(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if len(s.blocks) != 2 || headCount(s) != 0 {
		t.Errorf("%d blocks, %d in the head; want 2 blocks of the period", len(s.blocks), headCount(s))
	}
	top, err := s.Top(context.Background(), 0, t0.Add(time.Hour).UnixMilli(), 5, matchers(t, "le", "10"))
	if err != nil || len(top) != 2 || top[0].Value != 9 || top[1].Value != 5 {
		t.Errorf("Top over both blocks = %v, %v", top, err)
	}
}

// TestCorruptWALTailIsRepaired: a WAL whose last record is torn keeps the
// records before it, and the store opens.
func TestCorruptWALTailIsRepaired(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0.Add(time.Hour)}
	s := open(t, dir, nil, c)
	es := mesh(30)
	for i := range es {
		es[i].Ts = t0.Add(time.Duration(i) * time.Second).UnixMilli()
	}
	s.Append(es[:20])
	s.Close()
	// The second record goes to a segment of its own.
	s = open(t, dir, nil, c)
	s.Append(es[20:])
	s.Close()
	_, last, err := wlog.Segments(filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	name := wlog.SegmentName(filepath.Join(dir, "wal"), last)
	if err := os.Truncate(name, 20); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, nil, c)
	defer s.Close()
	if got := headCount(s); got != 20 {
		t.Errorf("head holds %d after the repair, want the 20 of the first record", got)
	}
	if _, err := s.Append(es[20:]); err != nil {
		t.Fatalf("append after the repair: %v", err)
	}
}

// TestCorruptBlockIsMovedAside: a block whose file is damaged does not
// stop the store; it is moved aside and the other blocks answer.
func TestCorruptBlockIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0.Add(6 * time.Hour)}
	s := open(t, dir, nil, c)
	s.Append(mesh(100))
	if err := s.Maintain(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	var victim string
	for id := range s.blocks {
		victim = id.String()
		break
	}
	n := len(s.blocks)
	s.Close()
	f := filepath.Join(dir, "blocks", victim, dataFile)
	b, _ := os.ReadFile(f)
	b[len(b)-30] ^= 0xff
	os.WriteFile(f, b, 0o644)
	s = open(t, dir, nil, c)
	defer s.Close()
	if len(s.blocks) != n-1 {
		t.Errorf("%d blocks open, want %d", len(s.blocks), n-1)
	}
	if _, err := os.Stat(filepath.Join(dir, "blocks", victim+".corrupt")); err != nil {
		t.Errorf("the damaged block is not kept aside: %v", err)
	}
}
