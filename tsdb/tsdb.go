// Package tsdb runs the embedded Prometheus TSDB that holds every series
// meshlens receives.
package tsdb

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/compression"
)

// Options configures the embedded TSDB. Zero values mean what their comments
// say; they are not replaced by defaults here (the config package owns those).
type Options struct {
	// Retention drops blocks older than this; 0 keeps blocks regardless of age.
	Retention time.Duration
	// RetentionSize drops the oldest blocks once blocks, WAL and head chunks
	// exceed it; 0 is no limit.
	RetentionSize int64
	// OutOfOrderWindow accepts samples this much older than a series' newest
	// sample; 0 rejects out-of-order samples.
	OutOfOrderWindow time.Duration
	// MaxExemplars sizes the exemplar ring; 0 disables exemplar storage.
	MaxExemplars int64
	// MinBlockDuration and MaxBlockDuration bound block ranges. Both must be set.
	MinBlockDuration, MaxBlockDuration time.Duration
	// WALCompression compresses WAL records with snappy.
	WALCompression bool
	// BlocksToDelete picks the blocks the TSDB deletes on each reload, in
	// place of Retention and RetentionSize (Shipper.BlocksToDelete keeps
	// blocks until they are shipped). nil is Prometheus's default: blocks
	// beyond Retention or RetentionSize, and blocks marked deletable.
	BlocksToDelete func(blocks []*promtsdb.Block) map[ulid.ULID]struct{}
}

// DB is the embedded TSDB. It is a storage.Storage, a storage.ExemplarQueryable
// and a storage.AppendableV2, and answers the admin and status calls of the
// Prometheus HTTP API.
type DB struct {
	*promtsdb.DB
	stats *promtsdb.DBStats
}

// Open opens (creating if needed) the TSDB in dir and replays its WAL.
func Open(dir string, o Options, logger *slog.Logger, reg prometheus.Registerer) (*DB, error) {
	opts := promtsdb.DefaultOptions()
	opts.RetentionDuration = o.Retention.Milliseconds()
	opts.MaxBytes = o.RetentionSize
	opts.OutOfOrderTimeWindow = o.OutOfOrderWindow.Milliseconds()
	opts.EnableExemplarStorage = o.MaxExemplars > 0
	opts.MaxExemplars = o.MaxExemplars
	opts.MinBlockDuration = o.MinBlockDuration.Milliseconds()
	opts.MaxBlockDuration = o.MaxBlockDuration.Milliseconds()
	if o.WALCompression {
		opts.WALCompression = compression.Snappy
	}
	opts.BlocksToDelete = o.BlocksToDelete
	stats := promtsdb.NewDBStats()
	db, err := promtsdb.Open(dir, logger.With("component", "tsdb"), reg, opts, stats)
	if err != nil {
		return nil, fmt.Errorf("open tsdb in %s: %w", dir, err)
	}
	return &DB{DB: db, stats: stats}, nil
}

// Stats returns head cardinality statistics, as /api/v1/status/tsdb shows them.
func (db *DB) Stats(statsByLabelName string, limit int) (*promtsdb.Stats, error) {
	return db.Head().Stats(statsByLabelName, limit), nil
}

// WALReplayStatus reports WAL replay progress.
func (db *DB) WALReplayStatus() (promtsdb.WALReplayStatus, error) {
	return db.stats.Head.WALReplayStatus.GetWALReplayStatus(), nil
}

// BlockMetas lists the persisted blocks.
func (db *DB) BlockMetas() ([]promtsdb.BlockMeta, error) {
	return db.DB.BlockMetas(), nil
}
