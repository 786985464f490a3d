package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/oklog/run"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"

	"github.com/meshlens/meshlens/config"
	"github.com/meshlens/meshlens/exemplars"
)

// newTraceCoverage builds the writer of the trace coverage series: the
// exemplars of ex checked against the traces of tr, written to app. It is
// nil when traces.coverage.enabled is false.
func newTraceCoverage(c config.TraceCoverageConfig, traceIDLabels []string, ex storage.ExemplarQueryable, tr exemplars.TraceReader, app storage.AppendableV2, set *metrics.Set, logger *slog.Logger) (*exemplars.TraceCoverage, error) {
	if !c.Enabled {
		return nil, nil
	}
	var sels [][]*labels.Matcher
	for i, s := range c.Selectors {
		ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(s)
		if err != nil {
			return nil, fmt.Errorf("traces.coverage.selectors[%d]: %w", i, err)
		}
		sels = append(sels, ms)
	}
	return exemplars.NewTraceCoverage(ex, tr, app, exemplars.TraceCoverageOptions{
		Interval:      time.Duration(c.Interval),
		Lag:           time.Duration(c.Lag),
		MaxTraces:     c.MaxTraces,
		Selectors:     sels,
		TraceIDLabels: traceIDLabels,
		Logger:        logger,
		Metrics:       set,
	}), nil
}

// addTraceCoverage puts c, if not nil, into the run group; it starts once
// ready is closed (the TSDB is open).
func addTraceCoverage(g *run.Group, c *exemplars.TraceCoverage, ready <-chan struct{}) {
	if c == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error {
		select {
		case <-ready:
		case <-ctx.Done():
			return nil
		}
		return c.Run(ctx)
	}, func(error) { cancel() })
}
