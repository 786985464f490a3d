package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/config"
	exstore "github.com/meshlens/meshlens/exemplars/store"
	"github.com/meshlens/meshlens/tsdb"
)

// openExemplars opens the store of exemplars with a trace id in
// <dataDir>/exemplars; they are kept as long as spans. compact makes this
// node delete them from the bucket after the retention, as it does spans.
func openExemplars(cfg config.TracesConfig, dataDir string, bkt objstore.Bucket, compact bool, set *metrics.Set, logger *slog.Logger) (*exstore.Store, error) {
	return exstore.Open(exstore.Options{
		Dir:              filepath.Join(dataDir, "exemplars"),
		Bucket:           bkt,
		Retention:        time.Duration(cfg.Retention),
		TraceIDLabels:    cfg.ExemplarTraceIDLabels,
		DeleteFromBucket: compact,
		Logger:           logger,
		Metrics:          set,
	})
}

// exemplarStage puts the exemplar store last in the ingest chain, after
// the aggregation: it keeps the exemplars of the series as stored.
func exemplarStage(s *exstore.Store) ingestStage {
	return func(next storage.AppendableV2) (storage.AppendableV2, error) {
		return s.Appendable(next), nil
	}
}

// storageWithExemplars is the TSDB behind its gate, whose exemplar
// queries also read the exemplar store: /api/v1/query_exemplars, the
// drill-down and the alerts' traces see exemplars for the span
// retention, not only the TSDB's ring.
type storageWithExemplars struct {
	*tsdb.Gate
	exemplars storage.ExemplarQueryable
}

func newStorageWithExemplars(g *tsdb.Gate, s *exstore.Store) storageWithExemplars {
	return storageWithExemplars{Gate: g, exemplars: exstore.Merge(g, s)}
}

func (s storageWithExemplars) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return s.exemplars.ExemplarQuerier(ctx)
}
