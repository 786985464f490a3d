// Package exemplars joins metric exemplars to the stored traces: the
// drill-down from a latency query to the slowest requests behind it, the
// coverage of exemplars by stored traces, and where the time of those
// requests goes.
package exemplars

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"

	exstore "github.com/meshlens/meshlens/exemplars/store"
	"github.com/meshlens/meshlens/traces"
)

// TraceReader reads one trace; traces.Reader is one.
type TraceReader interface {
	Trace(ctx context.Context, id traces.TraceID, tr traces.TimeRange) ([]traces.Span, error)
}

// DrilldownOptions configure the drill-down handler. Every zero value
// stands for the default its comment names.
type DrilldownOptions struct {
	// Parser parses the query; nil is Prometheus's default parser.
	Parser parser.Parser
	// TraceIDLabels are the exemplar labels that may hold the trace id, in
	// order of preference; nil means exstore.DefaultTraceIDLabels.
	TraceIDLabels []string
	// DefaultLimit is how many exemplars are returned without a limit
	// parameter; zero means 10.
	DefaultLimit int
	// MaxLimit is the largest limit accepted; zero means 1000.
	MaxLimit int
	// DefaultRange is the time range before end used without a start
	// parameter; zero means 1h.
	DefaultRange time.Duration
	// MaxCoverageTraces bounds the distinct traces looked up for the
	// coverage; beyond it a sample of traces chosen by a hash of their id
	// is checked and the answer says "truncated": true. The returned
	// exemplars' traces are always looked up. Zero means 10,000.
	MaxCoverageTraces int
	// TraceWindow is how far before and after an exemplar's time the spans
	// of its trace are looked for (spans are found by their start time;
	// an exemplar is recorded when the request ends). Zero means 1h.
	TraceWindow time.Duration
	// Concurrency is how many traces are looked up at once; zero means 4.
	Concurrency int
}

func (o *DrilldownOptions) defaults() {
	if o.Parser == nil {
		o.Parser = parser.NewParser(parser.Options{})
	}
	if o.TraceIDLabels == nil {
		o.TraceIDLabels = exstore.DefaultTraceIDLabels
	}
	if o.DefaultLimit <= 0 {
		o.DefaultLimit = 10
	}
	if o.MaxLimit <= 0 {
		o.MaxLimit = 1000
	}
	if o.DefaultRange <= 0 {
		o.DefaultRange = time.Hour
	}
	if o.MaxCoverageTraces <= 0 {
		o.MaxCoverageTraces = 10000
	}
	if o.TraceWindow <= 0 {
		o.TraceWindow = time.Hour
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.DefaultLimit > o.MaxLimit {
		o.DefaultLimit = o.MaxLimit
	}
}

// NewDrilldownHandler serves GET and POST /api/v1/drilldown:
//
//	query=<PromQL>  required; its series selectors choose the exemplars
//	start, end      Unix seconds or RFC3339; end defaults to now, start to end-1h
//	limit           how many exemplars to return (default 10, at most 1000)
//
// It answers, in Prometheus's envelope, the limit highest-value exemplars
// with a trace id (one per trace) with their trace's summary, the coverage
// of exemplars by stored traces and the self time of the returned traces by
// service edge.
func NewDrilldownHandler(ex storage.ExemplarQueryable, tr TraceReader, o DrilldownOptions) http.Handler {
	o.defaults()
	return &drilldown{ex: ex, traces: tr, o: o}
}

type drilldown struct {
	ex     storage.ExemplarQueryable
	traces TraceReader
	o      DrilldownOptions
}

// Response is the data of a drill-down answer.
type Response struct {
	Exemplars    []Exemplar   `json:"exemplars"`
	Coverage     Coverage     `json:"coverage"`
	CriticalPath CriticalPath `json:"critical_path"`
}

// Exemplar is one returned exemplar with its trace.
type Exemplar struct {
	Series     map[string]string `json:"series"`
	Labels     map[string]string `json:"labels"`
	Value      float64           `json:"value"`
	Timestamp  float64           `json:"timestamp"` // Unix seconds
	TraceID    string            `json:"trace_id"`
	TraceFound bool              `json:"trace_found"`
	Trace      *TraceSummary     `json:"trace,omitempty"`
}

// Coverage counts the exemplars in range whose trace is stored.
type Coverage struct {
	// Exemplars is every exemplar of the selected series in range.
	Exemplars int `json:"exemplars"`
	// WithTraceID counts those with a valid trace id.
	WithTraceID int `json:"with_trace_id"`
	// Checked counts those whose trace was looked up (all of WithTraceID
	// unless Truncated), Found those whose trace is stored.
	Checked int `json:"checked"`
	Found   int `json:"found"`
	// Ratio is Found/Checked; 0 when nothing was checked.
	Ratio float64 `json:"ratio"`
	// Traces and TracesChecked count distinct trace ids.
	Traces        int `json:"traces"`
	TracesChecked int `json:"traces_checked"`
	// Truncated says only a sample of MaxTraces traces was checked.
	Truncated bool `json:"truncated"`
	MaxTraces int  `json:"max_traces"`
}

// CriticalPath is the self time of the returned traces summed by edge.
type CriticalPath struct {
	Traces int     `json:"traces"` // returned traces that were found
	SelfMS float64 `json:"self_ms"`
	// Top is the edge with the most self time; nil without traces.
	Top *EdgeTime `json:"top"`
	// Edges are the edges by self time, most first, at most maxEdges.
	Edges      []EdgeTime `json:"edges"`
	EdgesTotal int        `json:"edges_total"`
}

// EdgeTime is one edge's summed self time and its share of SelfMS.
type EdgeTime struct {
	Edge
	SelfMS float64 `json:"self_ms"`
	Share  float64 `json:"share"`
}

const maxEdges = 20

// badData is an invalid parameter: a 400 bad_data answer.
type badData struct{ msg string }

func (e badData) Error() string { return e.msg }

func (h *drilldown) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		respondError(w, http.StatusMethodNotAllowed, "bad_data", "method not allowed: use GET or POST")
		return
	}
	p, err := h.params(r)
	if err != nil {
		respondError(w, http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	resp, err := h.run(r.Context(), p)
	switch {
	case err == nil:
		respond(w, resp)
	case errors.Is(err, context.DeadlineExceeded):
		respondError(w, http.StatusServiceUnavailable, "timeout", err.Error())
	case errors.Is(err, context.Canceled):
		respondError(w, http.StatusServiceUnavailable, "canceled", err.Error())
	default:
		respondError(w, http.StatusUnprocessableEntity, "execution", err.Error())
	}
}

type params struct {
	matchers   [][]*labels.Matcher
	start, end int64 // ms
	limit      int
	// coverage looks up the traces of the exemplars not returned too;
	// without it Coverage counts only the returned ones.
	coverage bool
	// stored returns only exemplars whose trace is stored; failing only
	// those whose stored trace has error spans. Either reads the traces
	// of the slowest exemplars until limit qualify.
	stored, failing bool
}

func (h *drilldown) params(r *http.Request) (params, error) {
	var p params
	if err := r.ParseForm(); err != nil {
		return p, badData{fmt.Sprintf("invalid form: %v", err)}
	}
	q := r.Form.Get("query")
	if q == "" {
		return p, badData{`invalid parameter "query": empty`}
	}
	expr, err := h.o.Parser.ParseExpr(q)
	if err != nil {
		return p, badData{fmt.Sprintf(`invalid parameter "query": %v`, err)}
	}
	p.matchers = parser.ExtractSelectors(expr)
	if len(p.matchers) == 0 {
		return p, badData{`invalid parameter "query": no series selector`}
	}
	end := time.Now()
	if s := r.Form.Get("end"); s != "" {
		if end, err = parseTime(s); err != nil {
			return p, badData{fmt.Sprintf(`invalid parameter "end": %v`, err)}
		}
	}
	start := end.Add(-h.o.DefaultRange)
	if s := r.Form.Get("start"); s != "" {
		if start, err = parseTime(s); err != nil {
			return p, badData{fmt.Sprintf(`invalid parameter "start": %v`, err)}
		}
	}
	if start.After(end) {
		return p, badData{`invalid parameter "start": after end`}
	}
	p.start, p.end = timestamp.FromTime(start), timestamp.FromTime(end)
	p.limit = h.o.DefaultLimit
	p.coverage = true
	if s := r.Form.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > h.o.MaxLimit {
			return p, badData{fmt.Sprintf(`invalid parameter "limit": %q is not a number from 1 to %d`, s, h.o.MaxLimit)}
		}
		p.limit = n
	}
	return p, nil
}

// parseTime reads a time as Prometheus's HTTP API does: Unix seconds with
// an optional fraction, or RFC3339.
func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(t) || math.IsInf(t, 0) || math.Abs(t) > 1<<53 {
			return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
		}
		sec, frac := math.Modf(t)
		frac = math.Round(frac*1000) / 1000
		return time.Unix(int64(sec), int64(frac*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// candidate is one exemplar with a trace id.
type candidate struct {
	series labels.Labels
	ex     exemplar.Exemplar
	id     traces.TraceID
}

// traceCheck is what one trace lookup found.
type traceCheck struct {
	id        traces.TraceID
	ts        int64 // ms: the time of an exemplar of the trace
	exemplars int   // exemplars of the trace
	summarize bool
	looked    bool // read already (by storedTop)
	found     bool
	a         analysis
}

func (h *drilldown) run(ctx context.Context, p params) (*Response, error) {
	eq, err := h.ex.ExemplarQuerier(ctx)
	if err != nil {
		return nil, fmt.Errorf("exemplar querier: %w", err)
	}
	res, err := eq.Select(p.start, p.end, p.matchers...)
	if err != nil {
		return nil, fmt.Errorf("select exemplars: %w", err)
	}

	resp := &Response{Exemplars: []Exemplar{}}
	cov := &resp.Coverage
	cov.MaxTraces = h.o.MaxCoverageTraces
	var cands []candidate
	checks := map[traces.TraceID]*traceCheck{}
	for _, qr := range res {
		for _, e := range qr.Exemplars {
			cov.Exemplars++
			id, ok := h.traceID(e.Labels)
			if !ok {
				continue
			}
			cov.WithTraceID++
			c := checks[id]
			if c == nil {
				c = &traceCheck{id: id, ts: e.Ts}
				checks[id] = c
			}
			c.exemplars++
			if !math.IsNaN(e.Value) && !math.IsInf(e.Value, 0) {
				cands = append(cands, candidate{series: qr.SeriesLabels, ex: e, id: id})
			}
		}
	}
	cov.Traces = len(checks)

	// The slowest requests: the highest-value exemplar of each trace.
	slices.SortFunc(cands, func(x, y candidate) int {
		if c := cmp.Compare(y.ex.Value, x.ex.Value); c != 0 {
			return c
		}
		if c := cmp.Compare(y.ex.Ts, x.ex.Ts); c != 0 {
			return c
		}
		return slices.Compare(x.id[:], y.id[:])
	})
	var top []candidate
	picked := p.stored || p.failing
	if picked {
		if top, err = h.storedTop(ctx, cands, checks, p.limit, p.failing); err != nil {
			return nil, err
		}
	}
	for _, c := range cands {
		if len(top) == p.limit || picked {
			break
		}
		if ch := checks[c.id]; !ch.summarize {
			ch.summarize = true
			ch.ts = c.ex.Ts
			top = append(top, c)
		}
	}

	// The traces to look up: the returned ones, then a sample of the rest
	// by a hash of the id, up to MaxCoverageTraces in all.
	todo := make([]*traceCheck, 0, min(len(checks), h.o.MaxCoverageTraces+len(top)))
	var rest []*traceCheck
	for _, c := range checks {
		switch {
		case c.looked:
		case c.summarize:
			todo = append(todo, c)
		case p.coverage:
			rest = append(rest, c)
		}
	}
	if room := h.o.MaxCoverageTraces - len(todo); len(rest) > room {
		cov.Truncated = true
		rest = sampleTraces(rest, room)
	}
	todo = append(todo, rest...)
	if err := h.lookup(ctx, todo); err != nil {
		return nil, err
	}
	for _, c := range todo {
		cov.TracesChecked++
		cov.Checked += c.exemplars
		if c.found {
			cov.Found += c.exemplars
		}
	}
	if cov.Checked > 0 {
		cov.Ratio = float64(cov.Found) / float64(cov.Checked)
	}

	selfNS := map[Edge]uint64{}
	for _, c := range top {
		ch := checks[c.id]
		e := Exemplar{
			Series:     c.series.Map(),
			Labels:     c.ex.Labels.Map(),
			Value:      c.ex.Value,
			Timestamp:  float64(c.ex.Ts) / 1e3,
			TraceID:    c.id.String(),
			TraceFound: ch.found,
		}
		if ch.found {
			sum := ch.a.summary
			e.Trace = &sum
			resp.CriticalPath.Traces++
			for edge, ns := range ch.a.selfNS {
				selfNS[edge] += ns
			}
		}
		resp.Exemplars = append(resp.Exemplars, e)
	}
	resp.CriticalPath.fill(selfNS)
	return resp, nil
}

// fill sets the totals, the top edge and the edges from the self time by
// edge.
func (cp *CriticalPath) fill(selfNS map[Edge]uint64) {
	var total uint64
	for _, ns := range selfNS {
		total += ns
	}
	cp.SelfMS = nsToMS(total)
	cp.Edges = []EdgeTime{}
	cp.EdgesTotal = len(selfNS)
	for e, ns := range selfNS {
		et := EdgeTime{Edge: e, SelfMS: nsToMS(ns)}
		if total > 0 {
			et.Share = float64(ns) / float64(total)
		}
		cp.Edges = append(cp.Edges, et)
	}
	slices.SortFunc(cp.Edges, func(x, y EdgeTime) int {
		if c := cmp.Compare(y.SelfMS, x.SelfMS); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Caller, y.Caller); c != 0 {
			return c
		}
		return cmp.Compare(x.Callee, y.Callee)
	})
	if len(cp.Edges) > maxEdges {
		cp.Edges = cp.Edges[:maxEdges]
	}
	if len(cp.Edges) > 0 {
		top := cp.Edges[0]
		cp.Top = &top
	}
}

// storedTop reads the traces of cands (sorted slowest first) a batch at a
// time and returns the first limit whose trace is stored (and, if failing,
// has error spans), one per trace. It reads at most MaxCoverageTraces
// traces.
func (h *drilldown) storedTop(ctx context.Context, cands []candidate, checks map[traces.TraceID]*traceCheck, limit int, failing bool) ([]candidate, error) {
	var top []candidate
	budget := h.o.MaxCoverageTraces
	for i := 0; i < len(cands) && len(top) < limit && budget > 0; {
		var batch []candidate
		var todo []*traceCheck
		for ; i < len(cands) && len(batch) < min(2*limit, budget); i++ {
			c := cands[i]
			if ch := checks[c.id]; !ch.looked {
				ch.looked, ch.summarize, ch.ts = true, true, c.ex.Ts
				batch = append(batch, c)
				todo = append(todo, ch)
			}
		}
		budget -= len(batch)
		if err := h.lookup(ctx, todo); err != nil {
			return nil, err
		}
		for _, c := range batch {
			ch := checks[c.id]
			if ch.found && (!failing || ch.a.summary.ErrorSpans > 0) && len(top) < limit {
				top = append(top, c)
			} else {
				ch.summarize = false
			}
		}
	}
	return top, nil
}

// sampleTraces returns n of the checks (all when there are no more),
// chosen by a hash of the trace id so that the same traces are chosen
// every time. It reorders checks.
func sampleTraces(checks []*traceCheck, n int) []*traceCheck {
	if len(checks) <= n {
		return checks
	}
	slices.SortFunc(checks, func(x, y *traceCheck) int { return cmp.Compare(xxhash.Sum64(x.id[:]), xxhash.Sum64(y.id[:])) })
	return checks[:max(0, n)]
}

func (h *drilldown) lookup(ctx context.Context, todo []*traceCheck) error {
	return lookupTraces(ctx, h.traces, todo, h.o.TraceWindow, h.o.Concurrency)
}

// lookupTraces reads the traces of the checks from tr, concurrency at a
// time, each within window of its exemplar's time, and analyzes those to
// summarize. A trace that is not stored is not found; any other failure
// ends the lookups.
func lookupTraces(ctx context.Context, tr TraceReader, todo []*traceCheck, window time.Duration, concurrency int) error {
	if f, ok := tr.(traces.Finder); ok {
		// Those not to summarize need only be found: all at once.
		var find []*traceCheck
		rest := todo[:0:0]
		for _, c := range todo {
			if c.summarize {
				rest = append(rest, c)
			} else {
				find = append(find, c)
			}
		}
		if err := findTraces(ctx, f, find, window); err != nil {
			return err
		}
		todo = rest
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan *traceCheck)
		win      = window.Milliseconds()
	)
	for range min(concurrency, len(todo)) {
		wg.Go(func() {
			for c := range next {
				r := traces.TimeRange{Start: msToNS(c.ts - win), End: msToNS(c.ts + win)}
				spans, err := tr.Trace(ctx, c.id, r)
				switch {
				case err == nil && len(spans) > 0:
					c.found = true
					if c.summarize {
						c.a = analyze(spans)
					}
				case err == nil, errors.Is(err, traces.ErrNotFound):
				default:
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("read trace %s: %w", c.id, err)
						cancel()
					}
					mu.Unlock()
				}
			}
		})
	}
feed:
	for _, c := range todo {
		select {
		case next <- c:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// findTraces sets found for the checks whose trace f holds, over the
// window around the earliest and latest exemplar (trace ids are random:
// an id found a little outside its own exemplar's window is its trace).
func findTraces(ctx context.Context, f traces.Finder, todo []*traceCheck, window time.Duration) error {
	if len(todo) == 0 {
		return nil
	}
	ids := make([]traces.TraceID, len(todo))
	lo, hi := todo[0].ts, todo[0].ts
	for i, c := range todo {
		ids[i] = c.id
		lo, hi = min(lo, c.ts), max(hi, c.ts)
	}
	win := window.Milliseconds()
	found, err := f.Stored(ctx, ids, traces.TimeRange{Start: msToNS(lo - win), End: msToNS(hi + win)})
	if err != nil {
		return fmt.Errorf("find traces: %w", err)
	}
	for i, c := range todo {
		c.found = found[i]
	}
	return nil
}

func msToNS(ms int64) uint64 {
	if ms <= 0 {
		return 1 // 0 would leave the range open
	}
	return uint64(ms) * 1e6
}

func (h *drilldown) traceID(ls labels.Labels) (traces.TraceID, bool) {
	return traceIDOf(ls, h.o.TraceIDLabels)
}

// traceIDOf returns the exemplar's trace id from the first of names it
// has; false when none holds a valid id.
func traceIDOf(ls labels.Labels, names []string) (traces.TraceID, bool) {
	for _, name := range names {
		if v := ls.Get(name); v != "" {
			id, err := traces.ParseTraceID(v)
			if err != nil || id.IsZero() {
				return traces.TraceID{}, false
			}
			return id, true
		}
	}
	return traces.TraceID{}, false
}

func respond(w http.ResponseWriter, data any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": data})
}

func respondError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "error", "errorType": typ, "error": msg})
}
