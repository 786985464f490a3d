package tsdb

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
)

// Gate is the storage the server's components are built with before the
// TSDB is open, as Prometheus's readyStorage: until Set, it answers every
// call with promtsdb.ErrNotReady (the TSDB replays its WAL). Then it
// queries the TSDB merged with the bucket (see Merged) and appends to the
// TSDB. It is a storage.SampleAndChunkQueryable, a
// storage.ExemplarQueryable and a storage.AppendableV2, and answers the
// admin and status calls of the Prometheus HTTP API.
type Gate struct {
	bucket storage.SampleAndChunkQueryable
	db     atomic.Pointer[DB]
	once   sync.Once
	ready  chan struct{}
}

// NewGate returns a Gate that reads bucket for the time the TSDB no longer
// holds.
func NewGate(bucket storage.SampleAndChunkQueryable) *Gate {
	return &Gate{bucket: bucket, ready: make(chan struct{})}
}

// Set opens the gate to db. Only the first call counts.
func (g *Gate) Set(db *DB) {
	g.once.Do(func() {
		g.db.Store(db)
		close(g.ready)
	})
}

// Ready reports whether the TSDB is open.
func (g *Gate) Ready() bool { return g.db.Load() != nil }

// Done is closed once the TSDB is open.
func (g *Gate) Done() <-chan struct{} { return g.ready }

// merged returns the merged view, or nil before Set.
func (g *Gate) merged() *Merged {
	db := g.db.Load()
	if db == nil {
		return nil
	}
	return &Merged{DB: db, Bucket: g.bucket}
}

// Querier implements storage.Queryable.
func (g *Gate) Querier(mint, maxt int64) (storage.Querier, error) {
	if m := g.merged(); m != nil {
		return m.Querier(mint, maxt)
	}
	return nil, promtsdb.ErrNotReady
}

// ChunkQuerier implements storage.ChunkQueryable.
func (g *Gate) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	if m := g.merged(); m != nil {
		return m.ChunkQuerier(mint, maxt)
	}
	return nil, promtsdb.ErrNotReady
}

// ExemplarQuerier implements storage.ExemplarQueryable.
func (g *Gate) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	if db := g.db.Load(); db != nil {
		return db.ExemplarQuerier(ctx)
	}
	return nil, promtsdb.ErrNotReady
}

// AppenderV2 implements storage.AppendableV2. Before Set, the appender's
// calls fail with promtsdb.ErrNotReady.
func (g *Gate) AppenderV2(ctx context.Context) storage.AppenderV2 {
	if db := g.db.Load(); db != nil {
		return db.AppenderV2(ctx)
	}
	return notReadyAppender{}
}

// CleanTombstones implements the admin call of the HTTP API.
func (g *Gate) CleanTombstones() error {
	if db := g.db.Load(); db != nil {
		return db.CleanTombstones()
	}
	return promtsdb.ErrNotReady
}

// Delete implements the admin call of the HTTP API.
func (g *Gate) Delete(ctx context.Context, mint, maxt int64, ms ...*labels.Matcher) error {
	if db := g.db.Load(); db != nil {
		return db.Delete(ctx, mint, maxt, ms...)
	}
	return promtsdb.ErrNotReady
}

// Snapshot implements the admin call of the HTTP API.
func (g *Gate) Snapshot(dir string, withHead bool) error {
	if db := g.db.Load(); db != nil {
		return db.Snapshot(dir, withHead)
	}
	return promtsdb.ErrNotReady
}

// Stats implements the status call of the HTTP API.
func (g *Gate) Stats(statsByLabelName string, limit int) (*promtsdb.Stats, error) {
	if db := g.db.Load(); db != nil {
		return db.Stats(statsByLabelName, limit)
	}
	return nil, promtsdb.ErrNotReady
}

// WALReplayStatus implements the status call of the HTTP API.
func (g *Gate) WALReplayStatus() (promtsdb.WALReplayStatus, error) {
	if db := g.db.Load(); db != nil {
		return db.WALReplayStatus()
	}
	return promtsdb.WALReplayStatus{}, promtsdb.ErrNotReady
}

// BlockMetas implements the status call of the HTTP API.
func (g *Gate) BlockMetas() ([]promtsdb.BlockMeta, error) {
	if db := g.db.Load(); db != nil {
		return db.BlockMetas()
	}
	return nil, promtsdb.ErrNotReady
}

// notReadyAppender is the appender of a Gate before Set.
type notReadyAppender struct{}

func (notReadyAppender) Append(storage.SeriesRef, labels.Labels, int64, int64, float64, *histogram.Histogram, *histogram.FloatHistogram, storage.AOptions) (storage.SeriesRef, error) {
	return 0, promtsdb.ErrNotReady
}

func (notReadyAppender) AppendExemplars(storage.SeriesRef, labels.Labels, []exemplar.Exemplar) (storage.SeriesRef, error) {
	return 0, promtsdb.ErrNotReady
}

func (notReadyAppender) Commit() error   { return promtsdb.ErrNotReady }
func (notReadyAppender) Rollback() error { return nil }

var (
	_ storage.AppendableV2       = (*Gate)(nil)
	_ storage.ExemplarAppenderV2 = notReadyAppender{}
)
