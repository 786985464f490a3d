package exemplars

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"

	"github.com/meshlens/meshlens/traces"
)

// countingExemplars counts the exemplar queriers asked of ex; with err set
// it fails instead, with block it waits for the context to end.
type countingExemplars struct {
	ex    storage.ExemplarQueryable
	calls atomic.Int32
	err   error
	block bool
}

func (c *countingExemplars) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	c.calls.Add(1)
	if c.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if c.err != nil {
		return nil, c.err
	}
	return c.ex.ExemplarQuerier(ctx)
}

// alertFixture stores traces 1..8 (trace n takes 100·n ms, traces 6 and 3
// failed, trace 8 is not stored) with their exemplars on checkout's
// destination bucket, a minute apart, from 30m ago.
func alertFixture(t *testing.T) (*fixture, map[int]traces.TraceID) {
	t.Helper()
	f := newFixture(t)
	base := f.now.Add(-30 * time.Minute)
	ids := map[int]traces.TraceID{}
	for n := 1; n <= 8; n++ {
		ids[n] = traceID(n)
		at := base.Add(time.Duration(n) * time.Minute)
		if n != 8 {
			if err := f.spans.Append(context.Background(), checkoutTrace(ids[n], at, uint64(n), n == 6 || n == 3)); err != nil {
				t.Fatal(err)
			}
		}
		f.exemplar(t, "dst-5000", at.Add(time.Second), float64(100*n), "trace_id", ids[n].String())
	}
	return f, ids
}

const checkoutSelector = `istio_request_duration_milliseconds_bucket{reporter="destination",destination_service="checkout"}`

func firing(f *fixture, annotations ...string) *promrules.Alert {
	return &promrules.Alert{
		State:       promrules.StateFiring,
		Labels:      labels.FromStrings("alertname", "IstioHighRequestLatency", "destination_service", "checkout"),
		Annotations: labels.FromStrings(annotations...),
		ActiveAt:    f.now.Add(-30 * time.Minute),
		FiredAt:     f.now.Add(-27 * time.Minute),
		LastSentAt:  f.now,
	}
}

func ids(ns ...traces.TraceID) string {
	s := make([]string, len(ns))
	for i, id := range ns {
		s[i] = id.String()
	}
	return strings.Join(s, ",")
}

func TestAlertAnnotator(t *testing.T) {
	f, id := alertFixture(t)
	ext, _ := url.Parse("https://meshlens.example.org/prefix/")
	a := NewAlertAnnotator(f.db, f.spans, AlertAnnotatorOptions{Traces: 3})

	slow := firing(f, "summary", "checkout is slow", AnnotationSlowest, checkoutSelector)
	failing := firing(f, AnnotationFailing, checkoutSelector)
	failing.Labels = labels.FromStrings("alertname", "IstioHigh5xxErrorRate", "destination_service", "checkout")
	plain := firing(f, "summary", "no request")
	a.Annotate(context.Background(), ext, []*promrules.Alert{slow, failing, plain})

	// The slowest stored traces (8 is not stored), links under the external
	// URL, and checkout → payments, 80% of every trace's self time.
	want := map[string]string{
		"summary":            "checkout is slow",
		AnnotationTraceIDs:   ids(id[7], id[6], id[5]),
		AnnotationTraceURLs:  "https://meshlens.example.org/prefix/api/traces/" + id[7].String() + ",https://meshlens.example.org/prefix/api/traces/" + id[6].String() + ",https://meshlens.example.org/prefix/api/traces/" + id[5].String(),
		AnnotationBlamedEdge: "checkout -> payments",
	}
	if got := slow.Annotations.Map(); !equalMaps(got, want) {
		t.Errorf("slowest: annotations\n%v\nwant\n%v", got, want)
	}
	// Only the failed traces, slowest first.
	if got, want := failing.Annotations.Map(), map[string]string{AnnotationTraceIDs: ids(id[6], id[3])}; got[AnnotationTraceIDs] != want[AnnotationTraceIDs] ||
		got[AnnotationSlowest] != "" || got[AnnotationFailing] != "" || got[AnnotationBlamedEdge] != "checkout -> payments" {
		t.Errorf("failing: annotations %v, want trace ids %s", got, want[AnnotationTraceIDs])
	}
	if got := plain.Annotations.Map(); len(got) != 1 || got["summary"] != "no request" {
		t.Errorf("an alert without request: annotations %v", got)
	}
}

// TestAlertAnnotatorWindow: exemplars before the alert's activation less
// the lookback, or after the notification, are not the alert's.
func TestAlertAnnotatorWindow(t *testing.T) {
	f, id := alertFixture(t)
	a := NewAlertAnnotator(f.db, f.spans, AlertAnnotatorOptions{Lookback: 2 * time.Minute})
	al := firing(f, AnnotationSlowest, checkoutSelector)
	// Active from trace 4's minute: the window starts at trace 2's; sent
	// just after trace 5's exemplar.
	base := f.now.Add(-30 * time.Minute)
	al.ActiveAt = base.Add(4 * time.Minute)
	al.LastSentAt = base.Add(5*time.Minute + 2*time.Second)
	a.Annotate(context.Background(), nil, []*promrules.Alert{al})
	got := al.Annotations.Map()
	if got[AnnotationTraceIDs] != ids(id[5], id[4], id[3], id[2]) {
		t.Errorf("trace ids %q, want those of traces 5 to 2", got[AnnotationTraceIDs])
	}
	if _, ok := got[AnnotationTraceURLs]; ok {
		t.Errorf("links without an external URL: %v", got)
	}
}

// TestAlertAnnotatorCache: an alert is looked up once per activation, not
// at every resend, and keeps its traces when it resolves; the cache is
// bounded.
func TestAlertAnnotatorCache(t *testing.T) {
	f, id := alertFixture(t)
	ex := &countingExemplars{ex: f.db}
	a := NewAlertAnnotator(ex, f.spans, AlertAnnotatorOptions{Traces: 1, CacheSize: 2})
	send := func(al *promrules.Alert) string {
		a.Annotate(context.Background(), nil, []*promrules.Alert{al})
		return al.Annotations.Get(AnnotationTraceIDs)
	}
	if got := send(firing(f, AnnotationSlowest, checkoutSelector)); got != id[7].String() {
		t.Fatalf("first send: trace ids %q", got)
	}
	// Resent, then resolved: from the cache.
	if got := send(firing(f, AnnotationSlowest, checkoutSelector)); got != id[7].String() || ex.calls.Load() != 1 {
		t.Errorf("resend: trace ids %q after %d lookups, want the cached one after 1", got, ex.calls.Load())
	}
	resolved := firing(f, AnnotationSlowest, checkoutSelector)
	resolved.State, resolved.ResolvedAt = promrules.StateInactive, f.now
	if got := send(resolved); got != id[7].String() || ex.calls.Load() != 1 {
		t.Errorf("resolved: trace ids %q after %d lookups", got, ex.calls.Load())
	}
	// A resolved alert never seen firing is not looked up.
	other := firing(f, AnnotationSlowest, checkoutSelector)
	other.ActiveAt, other.ResolvedAt = other.ActiveAt.Add(time.Second), f.now
	if got := send(other); got != "" || ex.calls.Load() != 1 {
		t.Errorf("resolved without cache: trace ids %q after %d lookups", got, ex.calls.Load())
	}
	// Two more activations evict the first.
	for i := 1; i <= 2; i++ {
		al := firing(f, AnnotationSlowest, checkoutSelector)
		al.ActiveAt = al.ActiveAt.Add(time.Duration(i) * time.Minute)
		send(al)
	}
	if send(firing(f, AnnotationSlowest, checkoutSelector)); ex.calls.Load() != 4 {
		t.Errorf("%d lookups, want 4: the first activation evicted and looked up again", ex.calls.Load())
	}
}

// TestAlertAnnotatorFailures: a failing or slow lookup sends the alert
// without traces, in time, and is retried at the next send.
func TestAlertAnnotatorFailures(t *testing.T) {
	f, id := alertFixture(t)
	for _, tc := range []struct {
		name string
		ex   *countingExemplars
	}{
		{"error", &countingExemplars{ex: f.db, err: errors.New("exemplar storage down")}},
		{"timeout", &countingExemplars{ex: f.db, block: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAlertAnnotator(tc.ex, f.spans, AlertAnnotatorOptions{Timeout: 200 * time.Millisecond})
			first := firing(f, "summary", "slow", AnnotationSlowest, checkoutSelector)
			second := firing(f, AnnotationSlowest, checkoutSelector)
			second.Labels = labels.FromStrings("alertname", "Other")
			start := time.Now()
			a.Annotate(context.Background(), nil, []*promrules.Alert{first, second})
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("annotate took %s with a 200ms timeout", d)
			}
			for _, al := range []*promrules.Alert{first, second} {
				if got := al.Annotations.Map(); got[AnnotationTraceIDs] != "" || got[AnnotationSlowest] != "" {
					t.Errorf("annotations %v: want the request removed and no traces", got)
				}
			}
			if first.Annotations.Get("summary") != "slow" {
				t.Errorf("annotations %v lost the summary", first.Annotations)
			}
			// Recovered: the next send looks up again.
			tc.ex.err, tc.ex.block = nil, false
			again := firing(f, AnnotationSlowest, checkoutSelector)
			a.Annotate(context.Background(), nil, []*promrules.Alert{again})
			if got := again.Annotations.Get(AnnotationTraceIDs); !strings.HasPrefix(got, id[7].String()) {
				t.Errorf("after recovery: trace ids %q", got)
			}
		})
	}
}

// TestAlertAnnotatorOff: with a negative number of traces the requests
// are removed and nothing is looked up.
func TestAlertAnnotatorOff(t *testing.T) {
	f, _ := alertFixture(t)
	ex := &countingExemplars{ex: f.db}
	a := NewAlertAnnotator(ex, f.spans, AlertAnnotatorOptions{Traces: -1})
	al := firing(f, "summary", "slow", AnnotationSlowest, checkoutSelector, AnnotationFailing, checkoutSelector)
	a.Annotate(context.Background(), nil, []*promrules.Alert{al})
	if got := al.Annotations.Map(); len(got) != 1 || got["summary"] != "slow" || ex.calls.Load() != 0 {
		t.Errorf("annotations %v after %d lookups, want the summary only and no lookup", got, ex.calls.Load())
	}
}

// countingTraces counts the traces read.
type countingTraces struct {
	tr    TraceReader
	calls atomic.Int32
}

func (c *countingTraces) Trace(ctx context.Context, id traces.TraceID, r traces.TimeRange) ([]traces.Span, error) {
	c.calls.Add(1)
	return c.tr.Trace(ctx, id, r)
}

// TestAlertAnnotatorReadsFewTraces: when the exemplars' traces are not
// stored, an alert's lookup reads at most 10 times Traces of them.
func TestAlertAnnotatorReadsFewTraces(t *testing.T) {
	f := newFixture(t)
	for n := 1; n <= 100; n++ {
		f.exemplar(t, "dst-5000", f.now.Add(time.Duration(n-200)*time.Second), float64(n), "trace_id", traceID(n).String())
	}
	tr := &countingTraces{tr: f.spans}
	a := NewAlertAnnotator(f.db, tr, AlertAnnotatorOptions{Traces: 2})
	al := firing(f, AnnotationSlowest, checkoutSelector)
	a.Annotate(context.Background(), nil, []*promrules.Alert{al})
	if got := al.Annotations.Map(); len(got) != 0 || tr.calls.Load() != 20 {
		t.Errorf("annotations %v after reading %d traces, want none after 20", got, tr.calls.Load())
	}
}

func TestAlertAnnotatorBadQuery(t *testing.T) {
	f, _ := alertFixture(t)
	a := NewAlertAnnotator(f.db, f.spans, AlertAnnotatorOptions{})
	for _, q := range []string{"rate(", "1 + 1"} {
		al := firing(f, AnnotationSlowest, q)
		a.Annotate(context.Background(), nil, []*promrules.Alert{al})
		if got := al.Annotations.Map(); len(got) != 0 {
			t.Errorf("query %q: annotations %v, want none", q, got)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
