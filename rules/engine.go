// Package rules evaluates alerting and recording rules, from rule files and
// the built-in mesh packs, over meshlens's storage with Prometheus's rule
// manager, and sends alerts to Alertmanager with Prometheus's notifier.
package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/notifier"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
)

// Options are the parts of an Engine fixed for its lifetime.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Queryable is what rules read; Appendable receives recording-rule
	// results and the ALERTS and ALERTS_FOR_STATE series.
	Queryable  storage.Queryable
	Appendable storage.AppendableV2
	Engine     promql.QueryEngine
	Parser     parser.Parser
	// OutageTolerance, ForGracePeriod and ResendDelay are Prometheus's
	// rules.outage-tolerance, rules.alert.for-grace-period and
	// rules.alert.resend-delay.
	OutageTolerance time.Duration
	ForGracePeriod  time.Duration
	ResendDelay     time.Duration
	// NotificationQueueCapacity is how many alerts wait for Alertmanager;
	// zero means 10000, as in Prometheus.
	NotificationQueueCapacity int
	// Annotator edits the annotations of alerts before they are sent; nil
	// sends them as the rules made them.
	Annotator AlertAnnotator
}

// AlertAnnotator edits the annotations of alerts about to be sent to
// Alertmanager (for example to add the traces behind them). The alerts are
// the notifier's copies; it may replace their Annotations. It must return
// within a bounded time and never drop an alert: every alert is sent
// after it returns, whatever it did.
type AlertAnnotator interface {
	Annotate(ctx context.Context, externalURL *url.URL, alerts []*promrules.Alert)
}

// Config is the reloadable part of an Engine.
type Config struct {
	// Interval is the evaluation interval of groups that set none.
	Interval time.Duration
	// QueryOffset evaluates rules this far in the past.
	QueryOffset time.Duration
	// Files are rule file globs.
	Files []string
	// Packs configures built-in packs by name; a pack not listed is on with
	// its defaults.
	Packs map[string]PackConfig
	// DisabledGroups are group names left out of every source.
	DisabledGroups []string
	// ExternalLabels are added to alerts sent to Alertmanager and available
	// to templates as $externalLabels.
	ExternalLabels labels.Labels
	// ExternalURL prefixes the generatorURL of alerts.
	ExternalURL *url.URL
	// Alerting lists the Alertmanagers and the alert relabeling.
	Alerting promconfig.AlertingConfig
}

// PackConfig configures a built-in pack.
type PackConfig struct {
	Disabled  bool
	Params    map[string]string
	Overrides []Override
}

// Override gives the series whose Label matches Matches (a regular
// expression) their own parameters.
type Override struct {
	Label, Matches string
	Params         map[string]string
}

// Engine evaluates rule groups and delivers their alerts. Build it with New,
// run it with Run, change its rules with ApplyConfig.
type Engine struct {
	opts   Options
	logger *slog.Logger
	loader *loader

	manager   *promrules.Manager
	notifier  *notifier.Manager
	discovery *discovery.Manager
	stopSD    context.CancelFunc

	queryOffset atomic.Int64
	externalURL atomic.Pointer[url.URL]

	mu  sync.Mutex // serialises ApplyConfig
	cfg Config
}

// New builds an Engine and applies c. Nothing runs until Run.
func New(o Options, c Config) (*Engine, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NotificationQueueCapacity == 0 {
		o.NotificationQueueCapacity = 10000
	}
	e := &Engine{opts: o, logger: o.Logger}
	e.loader = &loader{parser: o.Parser, logger: o.Logger, src: &sources{}}
	e.notifier = notifier.NewManager(&notifier.Options{
		QueueCapacity:   o.NotificationQueueCapacity,
		DrainOnShutdown: true,
		Registerer:      o.Registerer,
	}, model.UTF8Validation, o.Logger.With("component", "notifier"))

	sdMetrics, err := discovery.CreateAndRegisterSDMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("alertmanager discovery metrics: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.stopSD = cancel
	e.discovery = discovery.NewManager(ctx, o.Logger.With("component", "alertmanager discovery"), o.Registerer, sdMetrics, discovery.Name("notify"))
	if e.discovery == nil {
		cancel()
		return nil, errors.New("alertmanager discovery manager could not be created")
	}

	e.manager = promrules.NewManager(e.managerOptions(o.Queryable, o.Appendable, o.Registerer, e.notify))
	if err := e.ApplyConfig(c); err != nil {
		cancel()
		return nil, err
	}
	return e, nil
}

func (e *Engine) managerOptions(q storage.Queryable, a storage.AppendableV2, reg prometheus.Registerer, notify promrules.NotifyFunc) *promrules.ManagerOptions {
	return &promrules.ManagerOptions{
		NameValidationScheme:   model.UTF8Validation,
		ExternalURL:            e.externalURL.Load(),
		QueryFunc:              promrules.EngineQueryFunc(e.opts.Engine, q),
		NotifyFunc:             notify,
		Context:                context.Background(),
		AppendableV2:           a,
		Queryable:              q,
		Logger:                 e.logger.With("component", "rule manager"),
		Registerer:             reg,
		OutageTolerance:        e.opts.OutageTolerance,
		ForGracePeriod:         e.opts.ForGracePeriod,
		ResendDelay:            e.opts.ResendDelay,
		GroupLoader:            e.loader,
		DefaultRuleQueryOffset: func() time.Duration { return time.Duration(e.queryOffset.Load()) },
		Parser:                 e.opts.Parser,
	}
}

// notify sends alerts to the Alertmanagers, annotated by the Annotator,
// with generator URLs under the current external URL.
func (e *Engine) notify(ctx context.Context, expr string, alerts ...*promrules.Alert) {
	u := e.externalURL.Load()
	if e.opts.Annotator != nil && len(alerts) > 0 {
		e.opts.Annotator.Annotate(ctx, u, alerts)
	}
	base := ""
	if u != nil {
		base = u.String()
	}
	promrules.SendAlerts(e.notifier, base)(ctx, expr, alerts...)
}

// ApplyConfig loads the rules and Alertmanagers of c. When a rule file or
// pack does not load, it returns every problem (file, line, reason) and the
// running rules stay as they were.
func (e *Engine) ApplyConfig(c Config) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	src, err := resolve(c)
	if err != nil {
		return err
	}
	// Check every source before touching the running rules; the manager only
	// logs why a load failed.
	check := &loader{parser: e.opts.Parser, logger: e.logger, src: src}
	var errs []error
	for _, id := range src.identifiers() {
		if _, es := check.Load(id, false, model.UTF8Validation); len(es) > 0 {
			errs = append(errs, es...)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("rules not loaded, the previous rules keep running: %w", errors.Join(errs...))
	}

	pc := &promconfig.Config{
		GlobalConfig:   promconfig.GlobalConfig{ExternalLabels: c.ExternalLabels, MetricNameValidationScheme: model.UTF8Validation},
		AlertingConfig: c.Alerting,
	}
	if err := e.notifier.ApplyConfig(pc); err != nil {
		return fmt.Errorf("alerting: %w", err)
	}
	sd := map[string]discovery.Configs{}
	for k, am := range c.Alerting.AlertmanagerConfigs.ToMap() {
		sd[k] = am.ServiceDiscoveryConfigs
	}
	if err := e.discovery.ApplyConfig(sd); err != nil {
		return fmt.Errorf("alerting: alertmanager discovery: %w", err)
	}

	old := e.loader.current()
	e.loader.set(src)
	e.queryOffset.Store(int64(c.QueryOffset))
	e.externalURL.Store(c.ExternalURL)
	if err := e.manager.Update(c.Interval, src.identifiers(), c.ExternalLabels, urlString(c.ExternalURL), nil); err != nil {
		e.loader.set(old)
		return err
	}
	e.cfg = c
	e.logger.Debug("rules loaded", "sources", len(src.identifiers()), "groups", len(e.manager.RuleGroups()))
	return nil
}

func urlString(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.String()
}

// Run evaluates the rules and delivers alerts until ctx is done. On the way
// out the rule groups stop first, then the notifier drains its queue.
func (e *Engine) Run(ctx context.Context) error {
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			<-ctx.Done()
			return nil
		}, func(error) { cancel() })
	}
	g.Add(func() error {
		e.manager.Run()
		return nil
	}, func(error) { e.manager.Stop() })
	g.Add(func() error {
		e.notifier.Run(e.discovery.SyncCh())
		return nil
	}, func(error) { e.notifier.Stop() })
	g.Add(e.discovery.Run, func(error) { e.stopSD() })
	return g.Run()
}

// RuleGroups returns the loaded groups (for /api/v1/rules).
func (e *Engine) RuleGroups() []*promrules.Group { return e.manager.RuleGroups() }

// AlertingRules returns the loaded alerting rules (for /api/v1/alerts).
func (e *Engine) AlertingRules() []*promrules.AlertingRule { return e.manager.AlertingRules() }

// Alertmanagers returns the Alertmanagers alerts go to.
func (e *Engine) Alertmanagers() []*url.URL { return e.notifier.Alertmanagers() }

// DroppedAlertmanagers returns the Alertmanagers dropped by relabeling.
func (e *Engine) DroppedAlertmanagers() []*url.URL { return e.notifier.DroppedAlertmanagers() }

// Close releases what New acquired when Run was never called; after Run it
// does nothing.
func (e *Engine) Close() { e.stopSD() }
