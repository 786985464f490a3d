package exemplars

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql/parser"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
)

// The annotations an alerting rule sets to ask for the traces behind its
// alerts, and those the AlertAnnotator puts in their place. The value of a
// request is a PromQL query, usually one selector expanded from the
// alert's labels, for example
//
//	meshlens_exemplars: 'istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="{{ $labels.destination_service_name }}"}'
//
// Its selectors choose the exemplars, as the drill-down's query does.
const (
	// AnnotationSlowest asks for the traces of the slowest exemplars.
	AnnotationSlowest = "meshlens_exemplars"
	// AnnotationFailing asks for the traces of the slowest exemplars whose
	// trace has error spans.
	AnnotationFailing = "meshlens_failing_exemplars"

	// AnnotationTraceIDs is the comma-separated trace ids, slowest first.
	AnnotationTraceIDs = "trace_ids"
	// AnnotationTraceURLs is the comma-separated links to the traces under
	// the external URL (the Tempo API's /api/traces/<id>).
	AnnotationTraceURLs = "trace_urls"
	// AnnotationBlamedEdge is the caller -> callee edge with the most self
	// time over those traces; "(entry)" stands for the caller of a trace's
	// entry service, "(unknown)" for a callee that is neither traced nor
	// named.
	AnnotationBlamedEdge = "blamed_edge"
)

// AlertAnnotatorOptions configure an AlertAnnotator. Every zero value
// stands for the default its comment names.
type AlertAnnotatorOptions struct {
	Logger *slog.Logger
	// Metrics receives meshlens_alert_traces_lookups_total{result}; nil
	// means no metrics.
	Metrics *metrics.Set
	// Drilldown configures the lookups as it does the drill-down handler
	// (parser, trace id labels, trace window, concurrency). Its
	// MaxCoverageTraces bounds the traces read to find an alert's stored
	// ones; zero means 10 times Traces.
	Drilldown DrilldownOptions
	// Traces is how many trace ids an alert carries at most; zero means 5,
	// a negative number removes the requests without looking up anything.
	Traces int
	// Timeout bounds the lookups of one notification; alerts still
	// without traces when it passes are sent without them. Zero means 5s.
	Timeout time.Duration
	// Lookback is how long before the alert became active its exemplars
	// are looked for (the window of the rules' rates). Zero means 5m.
	Lookback time.Duration
	// CacheSize is how many alerts' annotations are remembered, so that an
	// alert's traces are looked up once, not at every resend; zero means
	// 10,000.
	CacheSize int
}

// AlertAnnotator puts the traces behind alerts into their annotations:
// for an alert with AnnotationSlowest or AnnotationFailing, the trace ids
// of its slowest (or failing) exemplars between its activation and now
// whose trace is stored, links to them and the blamed edge of their
// aggregate critical path. It implements rules.AlertAnnotator.
type AlertAnnotator struct {
	dd      *drilldown
	o       AlertAnnotatorOptions
	lookups func(result string) *metrics.Counter

	mu    sync.Mutex
	cache map[alertKey][]labels.Label
	order []alertKey // ring of the cached keys, oldest at next
	next  int
}

// alertKey is one activation of one alert.
type alertKey struct {
	fingerprint uint64
	activeAt    int64
}

// NewAlertAnnotator returns an AlertAnnotator reading exemplars from ex and
// traces from tr.
func NewAlertAnnotator(ex storage.ExemplarQueryable, tr TraceReader, o AlertAnnotatorOptions) *AlertAnnotator {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Traces == 0 {
		o.Traces = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Lookback <= 0 {
		o.Lookback = 5 * time.Minute
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	if o.Drilldown.MaxCoverageTraces <= 0 {
		o.Drilldown.MaxCoverageTraces = 10 * max(o.Traces, 1)
	}
	o.Drilldown.defaults()
	a := &AlertAnnotator{
		dd:    &drilldown{ex: ex, traces: tr, o: o.Drilldown},
		o:     o,
		cache: map[alertKey][]labels.Label{},
	}
	a.lookups = func(string) *metrics.Counter { return nil }
	if o.Metrics != nil {
		a.lookups = func(result string) *metrics.Counter {
			return o.Metrics.GetOrCreateCounter(`meshlens_alert_traces_lookups_total{result="` + result + `"}`)
		}
	}
	return a
}

// Annotate replaces the requests of the alerts with their traces. Firing
// alerts not seen before are looked up, within Timeout for all of them;
// an alert whose lookup fails, times out or finds no stored trace goes
// without traces (and is looked up again at its next resend). Resolved
// alerts keep the traces they fired with.
func (a *AlertAnnotator) Annotate(ctx context.Context, externalURL *url.URL, alerts []*promrules.Alert) {
	ctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
	defer cancel()
	for _, al := range alerts {
		slowest, failing := al.Annotations.Get(AnnotationSlowest), al.Annotations.Get(AnnotationFailing)
		if slowest == "" && failing == "" {
			continue
		}
		b := labels.NewBuilder(al.Annotations).Del(AnnotationSlowest, AnnotationFailing)
		key := alertKey{al.Labels.Hash(), al.ActiveAt.UnixNano()}
		add, ok := a.cached(key)
		if !ok && a.o.Traces > 0 && al.ResolvedAt.IsZero() && ctx.Err() == nil {
			name, query := AnnotationSlowest, slowest
			if failing != "" {
				name, query = AnnotationFailing, failing
			}
			var err error
			add, err = a.lookup(ctx, al, name, query, externalURL)
			switch {
			case err != nil:
				a.inc("error")
				a.o.Logger.Warn("alert traces not found", "alert", al.Labels.String(), "err", err)
			case len(add) == 0:
				a.inc("empty")
			default:
				a.inc("found")
				a.store(key, add)
			}
		}
		for _, l := range add {
			b.Set(l.Name, l.Value)
		}
		al.Annotations = b.Labels()
	}
}

func (a *AlertAnnotator) inc(result string) {
	if c := a.lookups(result); c != nil {
		c.Inc()
	}
}

// lookup runs the drill-down for the query of one alert's annotation name
// and returns the annotations to add; none when no exemplar's trace is
// stored.
func (a *AlertAnnotator) lookup(ctx context.Context, al *promrules.Alert, name, query string, externalURL *url.URL) ([]labels.Label, error) {
	expr, err := a.o.Drilldown.Parser.ParseExpr(query)
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %w", name, err)
	}
	p := params{matchers: parser.ExtractSelectors(expr), limit: a.o.Traces, stored: true, failing: name == AnnotationFailing}
	if len(p.matchers) == 0 {
		return nil, fmt.Errorf("annotation %s: no series selector in %q", name, query)
	}
	end := al.LastSentAt
	if end.IsZero() {
		end = time.Now()
	}
	p.start, p.end = timestamp.FromTime(al.ActiveAt.Add(-a.o.Lookback)), timestamp.FromTime(end)
	resp, err := a.dd.run(ctx, p)
	if err != nil {
		return nil, err
	}
	var ids, urls []string
	for _, e := range resp.Exemplars {
		if !e.TraceFound {
			continue
		}
		ids = append(ids, e.TraceID)
		if externalURL != nil {
			urls = append(urls, externalURL.JoinPath("api", "traces", e.TraceID).String())
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	add := []labels.Label{{Name: AnnotationTraceIDs, Value: strings.Join(ids, ",")}}
	if len(urls) > 0 {
		add = append(add, labels.Label{Name: AnnotationTraceURLs, Value: strings.Join(urls, ",")})
	}
	if top := resp.CriticalPath.Top; top != nil {
		add = append(add, labels.Label{Name: AnnotationBlamedEdge, Value: top.Edge.String()})
	}
	return add, nil
}

// String returns "caller -> callee".
func (e Edge) String() string {
	caller, callee := e.Caller, e.Callee
	if caller == "" {
		caller = "(entry)"
	}
	if callee == "" {
		callee = "(unknown)"
	}
	return caller + " -> " + callee
}

func (a *AlertAnnotator) cached(k alertKey) ([]labels.Label, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	add, ok := a.cache[k]
	return add, ok
}

// store remembers the annotations of k, forgetting the oldest entry when
// the cache is full.
func (a *AlertAnnotator) store(k alertKey, add []labels.Label) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cache[k]; ok {
		return
	}
	if len(a.order) < a.o.CacheSize {
		a.order = append(a.order, k)
	} else {
		delete(a.cache, a.order[a.next])
		a.order[a.next] = k
		a.next = (a.next + 1) % len(a.order)
	}
	a.cache[k] = add
}
