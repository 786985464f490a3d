package rules

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
)

// BacktestOptions configure Backtest.
type BacktestOptions struct {
	// Start and End bound the evaluation timestamps (both included).
	Start, End time.Time
	// Scratch receives what the rules write (recording-rule results, ALERTS,
	// ALERTS_FOR_STATE) so that later evaluations see them; it is read
	// together with the engine's storage, which Backtest never writes.
	Scratch Scratch
	// Notify sends the alerts to the configured Alertmanagers as the running
	// engine would have sent them at each evaluation, except that alerts
	// still firing are valid from the present on rather than from their
	// evaluation time: those firing at End are active in Alertmanager when
	// Backtest returns, those resolved earlier arrive resolved.
	Notify bool
	// Labels are added to every alert sent, so that Alertmanager tells
	// backtest alerts from live ones (for example backtest="true").
	Labels labels.Labels
}

// Scratch is a writable storage for Backtest.
type Scratch interface {
	storage.Queryable
	storage.AppendableV2
}

// FiredAlert is an alert that reached the firing state during a backtest.
type FiredAlert struct {
	Labels labels.Labels
	// ActiveAt is when its condition first held, FiredAt when it first fired
	// and LastFiring the last evaluation at which it was firing.
	ActiveAt, FiredAt, LastFiring time.Time
}

// Backtest evaluates the current rule set over stored history, at every
// evaluation interval from Start to End, as the engine would have evaluated it
// live, and returns every alert that fired, ordered by FiredAt. Each group is
// evaluated at the timestamps of its own interval; groups without alerting
// rules (recording groups) go first at each timestamp.
func (e *Engine) Backtest(ctx context.Context, o BacktestOptions) ([]FiredAlert, error) {
	if o.Scratch == nil {
		return nil, errors.New("backtest: no scratch storage")
	}
	if !o.End.After(o.Start) {
		return nil, fmt.Errorf("backtest: end %s is not after start %s", o.End, o.Start)
	}
	e.mu.Lock()
	cfg := e.cfg
	ids := e.loader.current().identifiers()
	e.mu.Unlock()

	q := storage.QueryableFunc(func(mint, maxt int64) (storage.Querier, error) {
		a, err := e.opts.Queryable.Querier(mint, maxt)
		if err != nil {
			return nil, err
		}
		b, err := o.Scratch.Querier(mint, maxt)
		if err != nil {
			a.Close()
			return nil, err
		}
		return storage.NewMergeQuerier([]storage.Querier{a, b}, nil, storage.ChainedSeriesMerge), nil
	})
	// evalTime is the timestamp being evaluated; the notifier needs it to
	// move the validity of firing alerts from history to the present.
	var evalTime time.Time
	notify := func(context.Context, string, ...*promrules.Alert) {}
	if o.Notify {
		notify = func(ctx context.Context, expr string, alerts ...*promrules.Alert) {
			shift := time.Since(evalTime)
			sent := make([]*promrules.Alert, len(alerts))
			for i, a := range alerts {
				c := *a
				if c.ResolvedAt.IsZero() {
					// Still firing: valid for as long after now as after the
					// evaluation, so the alerts firing at End are active in
					// Alertmanager when the backtest returns.
					c.ValidUntil = c.ValidUntil.Add(shift)
				}
				if !o.Labels.IsEmpty() {
					b := labels.NewBuilder(a.Labels)
					o.Labels.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
					c.Labels = b.Labels()
				}
				sent[i] = &c
			}
			e.notify(ctx, expr, sent...)
		}
	}
	m := promrules.NewManager(e.managerOptions(q, o.Scratch, nil, notify))
	loaded, errs := m.LoadGroups(cfg.Interval, cfg.ExternalLabels, urlString(cfg.ExternalURL), nil, false, ids...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("backtest: %w", errors.Join(errs...))
	}
	groups := make([]*promrules.Group, 0, len(loaded))
	for _, g := range loaded {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b *promrules.Group) int {
		ra, rb := len(a.AlertingRules()) > 0, len(b.AlertingRules()) > 0
		if ra != rb {
			if rb {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.File(), b.File()), cmp.Compare(a.Name(), b.Name()))
	})

	fired := map[string]*FiredAlert{}
	start := o.Start.Truncate(time.Millisecond)
	for ts := start; !ts.After(o.End); ts = ts.Add(cfg.Interval) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for _, g := range groups {
			if ts.Sub(start)%g.Interval() != 0 {
				continue
			}
			evalTime = ts
			g.Eval(ctx, ts)
			for _, r := range g.AlertingRules() {
				for _, a := range r.ActiveAlerts() {
					if a.State != promrules.StateFiring {
						continue
					}
					key := a.Labels.String()
					f := fired[key]
					if f == nil {
						f = &FiredAlert{Labels: a.Labels, ActiveAt: a.ActiveAt, FiredAt: ts}
						fired[key] = f
					}
					f.LastFiring = ts
				}
			}
		}
	}
	out := make([]FiredAlert, 0, len(fired))
	for _, f := range fired {
		out = append(out, *f)
	}
	slices.SortFunc(out, func(a, b FiredAlert) int {
		return cmp.Or(a.FiredAt.Compare(b.FiredAt), labels.Compare(a.Labels, b.Labels))
	})
	return out, nil
}
