// Package tracestest is the behaviour contract of a span store, run
// against every implementation like objstore's AcceptanceTest: what ingest
// and the query APIs rely on, through the head, local blocks and the
// bucket, across retention and restarts.
package tracestest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshlens/meshlens/traces"
)

// Store is what the contract exercises: the reader and appender, and one
// pass of each of the store's background jobs.
type Store interface {
	traces.Appender
	traces.Reader
	// CutBlock writes the whole head into a block.
	CutBlock(ctx context.Context) error
	// Ship uploads the blocks not yet in the bucket.
	Ship(ctx context.Context) error
	// SyncBucket lists the bucket's blocks.
	SyncBucket(ctx context.Context) error
	// Compact makes one bucket compaction pass.
	Compact(ctx context.Context) error
	// ApplyRetention deletes what is older than Retention, and shipped
	// blocks from the local disk.
	ApplyRetention(ctx context.Context) error
	Close() error
}

// Retention is the retention the store under test must be opened with.
const Retention = 24 * time.Hour

// OpenFunc opens the store under test in dir with the clock now and a
// retention of Retention. It must keep shipped blocks on the local disk
// only until the next ApplyRetention (so that reads go to the bucket), and
// opening dir again must reach the same bucket. It may use TraceIdle and
// MaxBlockDuration as it likes: the contract cuts with CutBlock. The
// contract closes the store.
type OpenFunc func(t *testing.T, dir string, now func() time.Time) Store

// Clock is a settable clock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Add moves the clock.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// T0 is the contract's starting time: spans start just before it.
var T0 = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

// TestStore runs the contract against the stores open returns.
func TestStore(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	type env struct {
		s     Store
		clock *Clock
		dir   string
	}
	start := func(t *testing.T) *env {
		e := &env{clock: NewClock(T0), dir: t.TempDir()}
		e.s = open(t, e.dir, e.clock.Now)
		t.Cleanup(func() {
			if e.s != nil {
				e.s.Close()
			}
		})
		return e
	}
	restart := func(t *testing.T, e *env) {
		t.Helper()
		if err := e.s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		e.s = open(t, e.dir, e.clock.Now)
		if err := e.s.SyncBucket(ctx); err != nil {
			t.Fatalf("sync bucket after reopening: %v", err)
		}
	}
	// Where the spans of a trace are when it is read.
	stages := []struct {
		name string
		to   func(t *testing.T, e *env)
	}{
		{"head", func(*testing.T, *env) {}},
		{"local block", func(t *testing.T, e *env) { must(t, e.s.CutBlock(ctx)) }},
		{"bucket", func(t *testing.T, e *env) {
			must(t, e.s.CutBlock(ctx))
			must(t, e.s.Ship(ctx))
			must(t, e.s.ApplyRetention(ctx))
		}},
		{"bucket after restart", func(t *testing.T, e *env) {
			must(t, e.s.CutBlock(ctx))
			must(t, e.s.Ship(ctx))
			must(t, e.s.ApplyRetention(ctx))
			restart(t, e)
		}},
		{"head after restart", func(t *testing.T, e *env) { restart(t, e) }},
	}

	for _, st := range stages {
		t.Run("find by id/"+st.name, func(t *testing.T) {
			e := start(t)
			a := Trace(1, 5, T0.Add(-time.Minute))
			b := Trace(2, 3, T0.Add(-time.Minute))
			must(t, e.s.Append(ctx, slices.Concat(a, b)))
			st.to(t, e)
			for range 2 { // Cold and warm caches.
				ExpectTrace(t, e.s, a, traces.TimeRange{})
				ExpectTrace(t, e.s, b, traces.TimeRange{})
			}
			_, err := e.s.Trace(ctx, ID(3), traces.TimeRange{})
			if !errors.Is(err, traces.ErrNotFound) {
				t.Fatalf("absent trace: got %v, want ErrNotFound", err)
			}
		})

		t.Run("64-bit ids/"+st.name, func(t *testing.T) {
			e := start(t)
			short, err := traces.ParseTraceID("463ac35c9f6413ad")
			must(t, err)
			spans := Trace(0, 2, T0.Add(-time.Minute))
			for i := range spans {
				spans[i].TraceID = short
			}
			must(t, e.s.Append(ctx, spans))
			st.to(t, e)
			padded, err := traces.ParseTraceID("0000000000000000463ac35c9f6413ad")
			must(t, err)
			ExpectTrace(t, e.s, spans, traces.TimeRange{})
			got, err := e.s.Trace(ctx, padded, traces.TimeRange{})
			must(t, err)
			if len(got) != 2 || got[0].TraceID.String() != "0000000000000000463ac35c9f6413ad" {
				t.Fatalf("64-bit id: got %d spans of %v", len(got), got)
			}
		})

		t.Run("time range/"+st.name, func(t *testing.T) {
			e := start(t)
			early := Trace(1, 3, T0.Add(-3*time.Hour))
			late := Trace(2, 3, T0.Add(-time.Hour))
			must(t, e.s.Append(ctx, slices.Concat(early, late)))
			st.to(t, e)
			lateOnly := traces.TimeRange{Start: Nanos(T0.Add(-2 * time.Hour))}
			earlyOnly := traces.TimeRange{End: Nanos(T0.Add(-2 * time.Hour))}
			ExpectTrace(t, e.s, late, lateOnly)
			if _, err := e.s.Trace(ctx, ID(1), lateOnly); !errors.Is(err, traces.ErrNotFound) {
				t.Fatalf("trace outside the range: got %v, want ErrNotFound", err)
			}
			// Spans 1 ms apart: a range over the first two.
			two := traces.TimeRange{Start: early[0].StartUnixNano, End: early[1].StartUnixNano}
			ExpectTrace(t, e.s, early[:2], two)
			expectTraces(t, e.s, lateOnly, ID(2))
			expectTraces(t, e.s, earlyOnly, ID(1))
			expectTraces(t, e.s, traces.TimeRange{}, ID(1), ID(2))
			// Stopping early is honoured.
			n := 0
			must(t, e.s.Traces(ctx, traces.TimeRange{}, func([]traces.Span) bool { n++; return false }))
			if n != 1 {
				t.Fatalf("Traces went on after fn returned false: %d calls", n)
			}
		})

		t.Run("services, operations and tags/"+st.name, func(t *testing.T) {
			e := start(t)
			must(t, e.s.Append(ctx, Trace(1, 4, T0.Add(-time.Hour))))
			st.to(t, e)
			all := traces.TimeRange{}
			svcs, err := e.s.Services(ctx, all)
			must(t, err)
			expectEqual(t, "services", svcs, []string{"checkout", "frontend"})
			none, err := e.s.Services(ctx, traces.TimeRange{Start: Nanos(T0.Add(time.Hour))})
			must(t, err)
			expectEqual(t, "services in a later range", none, []string(nil))
			ops, err := e.s.Operations(ctx, "checkout", all)
			must(t, err)
			expectEqual(t, "checkout operations", ops, []traces.Operation{{Name: "GET /cart", Kind: traces.KindServer}, {Name: "SELECT", Kind: traces.KindClient}})
			ops, err = e.s.Operations(ctx, "", all)
			must(t, err)
			// Sorted by name, then kind in OTLP's numbering (server 2, client 3).
			expectEqual(t, "all operations", ops, []traces.Operation{{Name: "GET /cart", Kind: traces.KindServer}, {Name: "GET /cart", Kind: traces.KindClient}, {Name: "SELECT", Kind: traces.KindClient}})
			names, err := e.s.TagNames(ctx, traces.ScopeSpan, all)
			must(t, err)
			expectEqual(t, "span tags", names, []string{"http.status_code", "retry"})
			names, err = e.s.TagNames(ctx, traces.ScopeResource, all)
			must(t, err)
			expectEqual(t, "resource tags", names, []string{"k8s.namespace.name", "service.name"})
			vals, err := e.s.TagValues(ctx, traces.ScopeSpan, "http.status_code", all, 0)
			must(t, err)
			expectEqual(t, "status code values", texts(vals), []string{"200", "503"})
			if vals[0].Type != traces.TypeInt {
				t.Fatalf("status code value type %v, want int", vals[0].Type)
			}
			vals, err = e.s.TagValues(ctx, traces.ScopeSpan, "http.status_code", all, 1)
			must(t, err)
			expectEqual(t, "status code values, limit 1", texts(vals), []string{"200"})
			vals, err = e.s.TagValues(ctx, "", "service.name", all, 0)
			must(t, err)
			expectEqual(t, "service.name values in either scope", texts(vals), []string{"checkout", "frontend"})
		})

		t.Run("resent spans once/"+st.name, func(t *testing.T) {
			e := start(t)
			spans := Trace(1, 4, T0.Add(-time.Minute))
			must(t, e.s.Append(ctx, spans))
			must(t, e.s.Append(ctx, spans[:2]))
			st.to(t, e)
			must(t, e.s.Append(ctx, spans[1:]))
			ExpectTrace(t, e.s, spans, traces.TimeRange{})
		})

		t.Run("retention/"+st.name, func(t *testing.T) {
			e := start(t)
			old := Trace(1, 2, T0.Add(-2*time.Hour))
			recent := Trace(2, 2, T0.Add(-time.Minute))
			must(t, e.s.Append(ctx, old))
			st.to(t, e)
			must(t, e.s.Append(ctx, recent))
			st.to(t, e)
			e.clock.Add(Retention - time.Hour)
			must(t, e.s.ApplyRetention(ctx))
			if _, err := e.s.Trace(ctx, ID(1), traces.TimeRange{}); !errors.Is(err, traces.ErrNotFound) {
				t.Fatalf("trace past the retention: got %v, want ErrNotFound", err)
			}
			ExpectTrace(t, e.s, recent, traces.TimeRange{})
			restart(t, e)
			if _, err := e.s.Trace(ctx, ID(1), traces.TimeRange{}); err == nil {
				must(t, e.s.ApplyRetention(ctx))
				if _, err := e.s.Trace(ctx, ID(1), traces.TimeRange{}); !errors.Is(err, traces.ErrNotFound) {
					t.Fatalf("trace past the retention after a restart: got %v, want ErrNotFound", err)
				}
			}
			ExpectTrace(t, e.s, recent, traces.TimeRange{})
		})
	}

	t.Run("restart keeps everything acknowledged", func(t *testing.T) {
		e := start(t)
		a, b, c := Trace(1, 3, T0.Add(-time.Hour)), Trace(2, 3, T0.Add(-time.Hour)), Trace(3, 3, T0.Add(-time.Hour))
		must(t, e.s.Append(ctx, a))
		must(t, e.s.CutBlock(ctx))
		must(t, e.s.Ship(ctx))
		must(t, e.s.Append(ctx, b))
		must(t, e.s.CutBlock(ctx))
		must(t, e.s.Append(ctx, c[:2]))
		restart(t, e)
		must(t, e.s.Append(ctx, c[2:]))
		restart(t, e)
		for _, tr := range [][]traces.Span{a, b, c} {
			ExpectTrace(t, e.s, tr, traces.TimeRange{})
		}
		must(t, e.s.CutBlock(ctx))
		restart(t, e)
		for _, tr := range [][]traces.Span{a, b, c} {
			ExpectTrace(t, e.s, tr, traces.TimeRange{})
		}
	})

	t.Run("a trace split over blocks", func(t *testing.T) {
		e := start(t)
		spans := Trace(1, 6, T0.Add(-2*time.Hour))
		for i := range 3 {
			must(t, e.s.Append(ctx, spans[2*i:2*i+2]))
			must(t, e.s.CutBlock(ctx))
			if i == 0 {
				must(t, e.s.Ship(ctx))
				must(t, e.s.ApplyRetention(ctx))
			}
		}
		ExpectTrace(t, e.s, spans, traces.TimeRange{})
		must(t, e.s.Ship(ctx))
		must(t, e.s.Compact(ctx))
		must(t, e.s.SyncBucket(ctx))
		must(t, e.s.ApplyRetention(ctx))
		ExpectTrace(t, e.s, spans, traces.TimeRange{})
		restart(t, e)
		ExpectTrace(t, e.s, spans, traces.TimeRange{})
	})

	t.Run("concurrent appends are each durable", func(t *testing.T) {
		e := start(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 16 {
			wg.Go(func() {
				errs <- e.s.Append(ctx, Trace(byte(10+g), 4, T0.Add(-time.Minute)))
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			must(t, err)
		}
		restart(t, e)
		for g := range 16 {
			ExpectTrace(t, e.s, Trace(byte(10+g), 4, T0.Add(-time.Minute)), traces.TimeRange{})
		}
	})
}

// ID is the trace id the contract's trace n has.
func ID(n byte) traces.TraceID {
	return traces.TraceID{0x5a, n, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, n}
}

// Nanos is t in Unix nanoseconds.
func Nanos(t time.Time) uint64 { return uint64(t.UnixNano()) }

// Trace returns n spans of trace ID(id) starting at start, 1 ms apart: a
// frontend root span calling checkout, whose spans call a database.
func Trace(id byte, n int, start time.Time) []traces.Span {
	frontend := []traces.Attr{traces.String("service.name", "frontend"), traces.String("k8s.namespace.name", "shop")}
	checkout := []traces.Attr{traces.String("service.name", "checkout"), traces.String("k8s.namespace.name", "shop")}
	spans := make([]traces.Span, n)
	for i := range spans {
		s := traces.Span{
			TraceID:       ID(id),
			SpanID:        traces.SpanID{id, 0, 0, 0, 0, 0, 0, byte(i + 1)},
			StartUnixNano: Nanos(start) + uint64(i)*uint64(time.Millisecond),
			ScopeName:     "envoy",
		}
		s.EndUnixNano = s.StartUnixNano + uint64(10*time.Millisecond)
		switch {
		case i == 0:
			s.Name, s.Kind, s.Service, s.Resource = "GET /cart", traces.KindClient, "frontend", frontend
			s.Attrs = []traces.Attr{traces.Int("http.status_code", 200)}
		case i%2 == 1:
			s.ParentSpanID = spans[0].SpanID
			s.Name, s.Kind, s.Service, s.Resource = "GET /cart", traces.KindServer, "checkout", checkout
			s.Attrs = []traces.Attr{traces.Int("http.status_code", 503), traces.Bool("retry", true)}
			s.StatusCode, s.StatusMessage = traces.StatusError, "upstream reset"
			s.Events = []traces.Event{{TimeUnixNano: s.StartUnixNano + 1, Name: "retry", Attrs: []traces.Attr{traces.Int("attempt", 1)}}}
		default:
			s.ParentSpanID = spans[i-1].SpanID
			s.Name, s.Kind, s.Service, s.Resource = "SELECT", traces.KindClient, "checkout", checkout
			s.Links = []traces.Link{{TraceID: ID(id + 100), SpanID: traces.SpanID{9}}}
		}
		spans[i] = s
	}
	return spans
}

// ExpectTrace fails t unless the store returns exactly want (in any
// order) for want's trace over tr.
func ExpectTrace(t *testing.T, s traces.Reader, want []traces.Span, tr traces.TimeRange) {
	t.Helper()
	got, err := s.Trace(context.Background(), want[0].TraceID, tr)
	if err != nil {
		t.Fatalf("trace %s: %v", want[0].TraceID, err)
	}
	expectEqual(t, "trace "+want[0].TraceID.String(), canonical(got), canonical(want))
}

// expectTraces fails t unless Traces over tr passes the traces ids, each
// with its spans of one trace.
func expectTraces(t *testing.T, s traces.Reader, tr traces.TimeRange, ids ...traces.TraceID) {
	t.Helper()
	seen := map[traces.TraceID]bool{}
	err := s.Traces(context.Background(), tr, func(spans []traces.Span) bool {
		for _, sp := range spans[1:] {
			if sp.TraceID != spans[0].TraceID {
				t.Errorf("Traces passed spans of %s and %s together", spans[0].TraceID, sp.TraceID)
			}
		}
		seen[spans[0].TraceID] = true
		return true
	})
	must(t, err)
	var got []string
	for id := range seen {
		got = append(got, id.String())
	}
	var want []string
	for _, id := range ids {
		want = append(want, id.String())
	}
	slices.Sort(got)
	slices.Sort(want)
	expectEqual(t, fmt.Sprintf("traces in %+v", tr), got, want)
}

// canonical renders spans sorted, as comparable text: every field, with
// nil and empty slices alike.
func canonical(spans []traces.Span) []string {
	out := make([]string, len(spans))
	attrs := func(as []traces.Attr) string {
		var b []string
		for _, a := range as {
			b = append(b, fmt.Sprintf("%s:%d:%s", a.Key, a.Type, a.Text()))
		}
		slices.Sort(b)
		return strings.Join(b, ",")
	}
	for i, s := range spans {
		var evs, links []string
		for _, e := range s.Events {
			evs = append(evs, fmt.Sprintf("%d %s {%s}", e.TimeUnixNano, e.Name, attrs(e.Attrs)))
		}
		for _, l := range s.Links {
			links = append(links, fmt.Sprintf("%s/%s %s {%s}", l.TraceID, l.SpanID, l.TraceState, attrs(l.Attrs)))
		}
		out[i] = fmt.Sprintf("%s/%s parent=%s state=%q name=%q kind=%v start=%d end=%d status=%v %q service=%q resource={%s} scope=%q %q attrs={%s} events=%v links=%v",
			s.TraceID, s.SpanID, s.ParentSpanID, s.TraceState, s.Name, s.Kind, s.StartUnixNano, s.EndUnixNano, s.StatusCode, s.StatusMessage,
			s.Service, attrs(s.Resource), s.ScopeName, s.ScopeVersion, attrs(s.Attrs), evs, links)
	}
	slices.SortFunc(out, cmp.Compare[string])
	return out
}

func texts(as []traces.Attr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Text()
	}
	return out
}

func expectEqual[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if g, w := fmt.Sprintf("%v", got), fmt.Sprintf("%v", want); g != w {
		t.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
