package main

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"

	"github.com/meshlens/meshlens/config"
	"github.com/meshlens/meshlens/tsdb"
)

// notSupported lists the built-in scripts meshlens does not run, and why.
var notSupported = map[string]string{
	// Start-timestamp storage is a Prometheus feature flag (a new chunk
	// encoding) that meshlens leaves off so its blocks stay readable by
	// Prometheus and Thanos tools of today.
	"testdata/start_timestamps.test": "start-timestamp storage is off",
}

// TestPromQLBuiltin runs Prometheus's own PromQL acceptance scripts against
// meshlens's engine and TSDB, built exactly as the server builds them.
func TestPromQLBuiltin(t *testing.T) {
	cfg := config.Default()
	// The scripts cover Prometheus's feature-flagged PromQL too.
	cfg.Query.ExperimentalPromQL = true
	// The scripts load days of data at once, as Prometheus's test storage
	// allows: one-day blocks and no retention.
	cfg.Storage.TSDB.Retention = 0
	cfg.Storage.TSDB.MinBlockDuration = config.Duration(24 * time.Hour)
	cfg.Storage.TSDB.MaxBlockDuration = config.Duration(24 * time.Hour)

	engine := newEngine(cfg.Query, slog.New(slog.DiscardHandler), nil, nil)
	t.Cleanup(func() { engine.Close() })
	promqltest.RunBuiltinTestsWithStorage(excluding{t}, engine, func(tb testing.TB) storage.Storage {
		db, err := tsdb.Open(filepath.Join(tb.TempDir(), "tsdb"), tsdbOptions(cfg.Storage.TSDB), slog.New(slog.DiscardHandler), nil)
		if err != nil {
			tb.Fatal(err)
		}
		return db
	})
}

// excluding runs every script but those in notSupported, which it reports
// as skipped with the reason.
type excluding struct{ *testing.T }

func (e excluding) Run(name string, f func(*testing.T)) bool {
	if why, ok := notSupported[name]; ok {
		return e.T.Run(name, func(t *testing.T) { t.Skip(why) })
	}
	return e.T.Run(name, f)
}
