package aggregate

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
)

func openDB(t *testing.T) *promtsdb.DB {
	t.Helper()
	opts := promtsdb.DefaultOptions()
	opts.EnableExemplarStorage = true
	opts.MaxExemplars = 1000
	db, err := promtsdb.Open(t.TempDir(), nil, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newAgg(t *testing.T, db storage.AppendableV2, opts Options) *Aggregator {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return time.UnixMilli(1 << 50) } // the wall clock never holds writes back
	}
	a, err := New(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// istioRule sums istio_requests_total over pods, as the large-mesh
// configuration does.
func istioRule(keepNames, drop bool) Rule {
	return Rule{
		Match:           []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "istio_requests_total")},
		Interval:        30 * time.Second,
		Without:         []string{"pod", "instance"},
		KeepMetricNames: keepNames,
		DropInput:       drop,
	}
}

type sample struct {
	ls labels.Labels
	t  int64
	v  float64
}

// send appends samples in one transaction, as one remote write request.
func send(t *testing.T, a storage.AppendableV2, ss ...sample) {
	t.Helper()
	app := a.AppenderV2(context.Background())
	for _, s := range ss {
		if _, err := app.Append(0, s.ls, 0, s.t, s.v, nil, nil, storage.AOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

func series(name string, kv ...string) labels.Labels {
	return labels.FromStrings(append([]string{labels.MetricName, name}, kv...)...)
}

// read returns every sample of the series selected by ms.
func read(t *testing.T, db storage.Queryable, ms ...*labels.Matcher) map[string][][2]float64 {
	t.Helper()
	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string][][2]float64{}
	ss := q.Select(context.Background(), true, nil, ms...)
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			ts, v := it.At()
			out[ss.At().Labels().String()] = append(out[ss.At().Labels().String()], [2]float64{float64(ts), v})
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOutputIsTheSumOfIncreasesWithResets(t *testing.T) {
	db := openDB(t)
	a := newAgg(t, db, Options{Rules: []Rule{istioRule(true, true)}})
	svc := []string{"destination_service_name", "reviews", "response_code", "200"}
	podA := series("istio_requests_total", append(svc, "pod", "a", "instance", "10.0.0.1:15020")...)
	podB := series("istio_requests_total", append(svc, "pod", "b", "instance", "10.0.0.2:15020")...)
	// Scrapes every 15s; pod b restarts (its counter resets) at 75s.
	a0, b0 := 100.0, 1000.0
	for i := range 9 {
		ts := int64(i) * 15000
		va := a0 + float64(i)*3
		vb := b0 + float64(i)*5
		if i >= 5 {
			vb = float64(i-5) * 5 // reset: 0, 5, 10, 15
		}
		send(t, a, sample{podA, ts, va}, sample{podB, ts, vb})
	}
	a.Flush(context.Background(), false)

	got := read(t, db, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "istio_requests_total"))
	want := `{__name__="istio_requests_total", destination_service_name="reviews", response_code="200"}`
	if len(got) != 1 || got[want] == nil {
		t.Fatalf("want only the output %s stored (inputs dropped), got %v", want, got)
	}
	// Intervals end at 0, 30s, 60s, 90s; 120s is not due until a newer
	// sample arrives. First samples set the base: 0 at t=0. Increases:
	// (0,30]: a +6, b +10; (30,60]: a +6, b +10; (60,90]: a +6, b +0 (the
	// reset to 0 at 75s) +5.
	wantPts := [][2]float64{{0, 0}, {30000, 16}, {60000, 32}, {90000, 32 + 6 + 0 + 5}}
	if fmt.Sprint(got[want]) != fmt.Sprint(wantPts) {
		t.Fatalf("output samples: got %v, want %v", got[want], wantPts)
	}
	a.Flush(context.Background(), true) // shutdown writes the rest
	got = read(t, db, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "istio_requests_total"))
	if pts := got[want]; len(pts) != 5 || pts[4] != [2]float64{120000, 43 + 6 + 10} {
		t.Fatalf("after the final flush: %v", pts)
	}
}

// The rate of an output equals the sum of the rates of its inputs: the
// promise that lets the rule packs read outputs in place of inputs.
func TestRateOfOutputEqualsSumOfRates(t *testing.T) {
	db := openDB(t)
	a := newAgg(t, db, Options{Rules: []Rule{istioRule(false, false)}})
	const pods = 5
	var lsets []labels.Labels
	for p := range pods {
		lsets = append(lsets, series("istio_requests_total", "destination_service_name", "reviews", "pod", fmt.Sprint("p", p), "instance", fmt.Sprint("i", p)))
	}
	vals := make([]float64, pods)
	for i := range 80 { // 20 minutes at 15s
		var ss []sample
		for p := range pods {
			vals[p] += float64((i*7+p*13)%17) + 0.5
			if p == 2 && i == 40 {
				vals[p] = 1 // a restart
			}
			ss = append(ss, sample{lsets[p], int64(i) * 15000, vals[p]})
		}
		send(t, a, ss...)
		a.Flush(context.Background(), false)
	}
	eng := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e7, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	name := "istio_requests_total:30s_without_instance_pod_total"
	for _, at := range []time.Duration{6 * time.Minute, 10 * time.Minute, 15 * time.Minute, 19 * time.Minute} {
		ts := time.UnixMilli(0).Add(at)
		sumRates := instant(t, eng, db, `sum(rate(istio_requests_total[5m]))`, ts)
		ofOutput := instant(t, eng, db, `rate(`+name+`[5m])`, ts)
		// Both windows hold the same increases; extrapolation to the window
		// edges differs by at most one interval of the output.
		if math.Abs(sumRates-ofOutput)/sumRates > 0.12 {
			t.Errorf("at %s: sum of input rates %.3f, rate of output %.3f", at, sumRates, ofOutput)
		}
		inc := instant(t, eng, db, `sum(increase(istio_requests_total[10m]))`, ts)
		incOut := instant(t, eng, db, `increase(`+name+`[10m])`, ts)
		if math.Abs(inc-incOut)/inc > 0.1 {
			t.Errorf("at %s: increase of inputs %.1f, of output %.1f", at, inc, incOut)
		}
	}
}

func instant(t *testing.T, eng *promql.Engine, q storage.Queryable, expr string, ts time.Time) float64 {
	t.Helper()
	qry, err := eng.NewInstantQuery(context.Background(), q, nil, expr, ts)
	if err != nil {
		t.Fatal(err)
	}
	res := qry.Exec(context.Background())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	v, err := res.Vector()
	if err != nil || len(v) != 1 {
		t.Fatalf("%s at %s: want one sample, got %v (%v)", expr, ts, res.Value, err)
	}
	return v[0].F
}

func TestInputsKeptOrDroppedAndOtherSeriesPassThrough(t *testing.T) {
	for _, drop := range []bool{false, true} {
		t.Run(fmt.Sprintf("drop_input=%v", drop), func(t *testing.T) {
			db := openDB(t)
			a := newAgg(t, db, Options{Rules: []Rule{istioRule(false, drop)}})
			in := series("istio_requests_total", "pod", "a", "destination_service_name", "x")
			other := series("envoy_cluster_upstream_rq_total", "pod", "a")
			send(t, a, sample{in, 1000, 1}, sample{other, 1000, 7})
			send(t, a, sample{in, 31000, 4}, sample{other, 31000, 8})
			a.Flush(context.Background(), true)
			all := read(t, db, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+"))
			wantOut := `{__name__="istio_requests_total:30s_without_instance_pod_total", destination_service_name="x"}`
			if fmt.Sprint(all[wantOut]) != "[[30000 0] [60000 3]]" {
				t.Errorf("output: %v", all)
			}
			if len(all[other.String()]) != 2 {
				t.Errorf("unmatched series not stored: %v", all)
			}
			if _, stored := all[in.String()]; stored == drop {
				t.Errorf("input stored = %v with drop_input %v", stored, drop)
			}
		})
	}
}

func TestLateDuplicateAndNaNSamples(t *testing.T) {
	db := openDB(t)
	a := newAgg(t, db, Options{Rules: []Rule{istioRule(true, true)}})
	pa := series("istio_requests_total", "pod", "a")
	pb := series("istio_requests_total", "pod", "b")
	send(t, a, sample{pa, 10000, 10}, sample{pb, 10000, 10})
	send(t, a, sample{pa, 40000, 20})
	a.Flush(context.Background(), false) // writes the interval ending at 30s
	send(t, a, sample{pa, 70000, 30})
	a.Flush(context.Background(), false) // writes 60s
	send(t, a, sample{pb, 50000, 15})    // late: its interval (30s,60s] is written, so it counts in the next
	send(t, a, sample{pb, 50000, 15})    // a retried request: ignored
	send(t, a, sample{pa, 65000, 1e9})   // older than pod a's newest: ignored
	send(t, a, sample{pa, 80000, math.NaN()}, sample{pa, 85000, math.Float64frombits(value.StaleNaN)})
	send(t, a, sample{pa, 100000, 31})
	a.Flush(context.Background(), true)
	got := read(t, db, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "istio_requests_total"))
	// 30s: 0; 60s: +10 (a); 90s: +10 (a) +5 (b, late); 120s: +1 (a).
	if s := fmt.Sprint(got[`{__name__="istio_requests_total"}`]); s != "[[30000 0] [60000 10] [90000 25] [120000 26]]" {
		t.Fatalf("got %v", got)
	}
}

func TestBySumsToTheListedLabels(t *testing.T) {
	db := openDB(t)
	r := Rule{
		Match:    []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, "istio_request_duration_milliseconds_bucket|istio_requests_total")},
		Interval: time.Minute,
		By:       []string{"le", "destination_service_name"},
	}
	a := newAgg(t, db, Options{Rules: []Rule{r}})
	for i, code := range []string{"200", "503"} {
		for _, le := range []string{"10", "+Inf"} {
			ls := series("istio_request_duration_milliseconds_bucket", "le", le, "response_code", code, "destination_service_name", "x", "pod", "p")
			send(t, a, sample{ls, 0, 0}, sample{ls, 60000, float64(i + 1)})
		}
	}
	a.Flush(context.Background(), true)
	got := read(t, db, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".*:1m_by_.*"))
	want := map[string]string{
		`{__name__="istio_request_duration_milliseconds_bucket:1m_by_destination_service_name_le_total", destination_service_name="x", le="+Inf"}`: "[[0 0] [60000 3]]",
		`{__name__="istio_request_duration_milliseconds_bucket:1m_by_destination_service_name_le_total", destination_service_name="x", le="10"}`:   "[[0 0] [60000 3]]",
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if fmt.Sprint(got[k]) != v {
			t.Errorf("%s: got %v, want %s", k, got[k], v)
		}
	}
}

func TestStaleOutputsAreForgotten(t *testing.T) {
	db := openDB(t)
	r := istioRule(true, true)
	r.Staleness = 2 * time.Minute
	var wall int64 // samples arrive a second after their time
	a := newAgg(t, db, Options{Rules: []Rule{r}, Now: func() time.Time { return time.UnixMilli(wall) }})
	gone := series("istio_requests_total", "destination_service_name", "gone", "pod", "a")
	stays := series("istio_requests_total", "destination_service_name", "stays", "pod", "a")
	wall = 1000
	send(t, a, sample{gone, 0, 1}, sample{stays, 0, 1})
	for ts := int64(15000); ts <= 300000; ts += 15000 {
		wall = ts + 1000
		send(t, a, sample{stays, ts, float64(ts)})
		a.Flush(context.Background(), false)
	}
	if n := a.Outputs(); n != 1 {
		t.Fatalf("outputs after 5m without samples of one: %d, want 1", n)
	}
	// It comes back as a new series of the output: its first sample is a base.
	wall = 321000
	send(t, a, sample{gone, 310000, 50}, sample{gone, 320000, 60})
	a.Flush(context.Background(), true)
	pts := read(t, db, labels.MustNewMatcher(labels.MatchEqual, "destination_service_name", "gone"))[`{__name__="istio_requests_total", destination_service_name="gone"}`]
	if last := pts[len(pts)-1]; last != [2]float64{330000, 10} {
		t.Fatalf("returning output: %v", pts)
	}
}

func TestExemplarsOfDroppedInputsMoveToTheOutput(t *testing.T) {
	db := openDB(t)
	a := newAgg(t, db, Options{Rules: []Rule{istioRule(true, true)}})
	ls := series("istio_requests_total", "destination_service_name", "x", "pod", "a")
	for i, ts := range []int64{0, 15000, 30000, 45000} {
		app := a.AppenderV2(context.Background()).(storage.ExemplarAppenderV2)
		if _, err := app.Append(0, ls, 0, ts, float64(i), nil, nil, storage.AOptions{}); err != nil {
			t.Fatal(err)
		}
		ex := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", fmt.Sprintf("%032x", i+1)), Value: 1, Ts: ts, HasTs: true}
		if _, err := app.AppendExemplars(0, ls, []exemplar.Exemplar{ex}); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
		a.Flush(context.Background(), false)
	}
	a.Flush(context.Background(), true)
	eq, err := db.ExemplarQuerier(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	res, err := eq.Select(0, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "destination_service_name", "x")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].SeriesLabels.Get("pod") != "" || len(res[0].Exemplars) == 0 {
		t.Fatalf("exemplars: %+v", res)
	}
	if got := res[0].Exemplars[len(res[0].Exemplars)-1].Labels.Get("trace_id"); got != fmt.Sprintf("%032x", 4) {
		t.Fatalf("newest exemplar on the output has trace_id %s", got)
	}
}

// Remote write requests arrive concurrently; every increase is counted once.
func TestConcurrentAppenders(t *testing.T) {
	db := openDB(t)
	a := newAgg(t, db, Options{Rules: []Rule{istioRule(true, true)}})
	const workers, perWorker, steps = 4, 200, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for step := range steps {
				var ss []sample
				for p := range perWorker {
					ls := series("istio_requests_total", "destination_service_name", fmt.Sprint("svc", p%10), "pod", fmt.Sprintf("w%d-p%d", w, p))
					ss = append(ss, sample{ls, int64(step) * 15000, float64(step * 2)})
				}
				send(t, a, ss...)
			}
		}()
	}
	wg.Wait()
	a.Flush(context.Background(), true)
	got := read(t, db, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "istio_requests_total"))
	if len(got) != 10 {
		t.Fatalf("want 10 outputs, got %d", len(got))
	}
	for k, pts := range got {
		// 80 inputs per output, each +2 per step after its first, 19 steps.
		if last := pts[len(pts)-1][1]; last != 80*2*19 {
			t.Errorf("%s: total %v, want %d", k, last, 80*2*19)
		}
	}
}

func TestNewRejectsBadRules(t *testing.T) {
	m := []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "x")}
	for name, r := range map[string]Rule{
		"no interval":       {Match: m},
		"by and without":    {Match: m, Interval: time.Minute, By: []string{"a"}, Without: []string{"b"}},
		"metric name":       {Match: m, Interval: time.Minute, Without: []string{"__name__"}},
		"staleness too low": {Match: m, Interval: time.Minute, Staleness: time.Second},
	} {
		if _, err := New(nil, Options{Rules: []Rule{r}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A sender lagging behind the others (a Prometheus server replaying its
// backlog) has its samples counted in their own intervals, not piled into
// the newest one.
func TestLaggingSenderKeepsItsIntervals(t *testing.T) {
	db := openDB(t)
	a := newAgg(t, db, Options{Rules: []Rule{istioRule(true, true)}, FlushDelay: 30 * time.Second})
	east := series("istio_requests_total", "cluster", "east", "pod", "a")
	west := series("istio_requests_total", "cluster", "west", "pod", "a")
	// east is live; west, down for the first 10 minutes, replays them
	// while east goes on, with flushes in between.
	for ts := int64(0); ts < 600000; ts += 15000 {
		send(t, a, sample{east, ts, float64(ts / 1000)})
		a.Flush(context.Background(), false)
	}
	for ts := int64(0); ts <= 600000; ts += 15000 {
		send(t, a, sample{east, 600000 + ts, float64(600 + ts/1000)})
		a.Flush(context.Background(), false)
		send(t, a, sample{west, ts, float64(ts / 1000)})
		a.Flush(context.Background(), false)
	}
	a.Flush(context.Background(), true)
	got := read(t, db, labels.MustNewMatcher(labels.MatchEqual, "cluster", "west"))
	pts := got[`{__name__="istio_requests_total", cluster="west"}`]
	if len(pts) != 21 { // 0, 30s, ..., 600s
		t.Fatalf("west: %d points, want 21: %v", len(pts), pts)
	}
	for i, p := range pts {
		if want := [2]float64{float64(i) * 30000, float64(i) * 30}; p != want {
			t.Fatalf("west point %d: %v, want %v (a steady 1/s)", i, p, want)
		}
	}
}
