// Package bucketstore queries the metric blocks in the bucket: the blocks
// the Shipper uploaded and those the bucket compactor made from them, in
// the Thanos layout (<ULID>/chunks/*, index, meta.json). A Store knows the
// blocks by their meta.json, kept in memory, and downloads a block into a
// bounded on-disk cache when a query first needs it, so that opening a
// large bucket downloads nothing. It is a storage.Queryable and a
// storage.ChunkQueryable; merged with the local TSDB (storage.NewMergeQuerier
// with storage.ChainedSeriesMerge) it serves queries over any range.
//
// Blocks of the same data that overlap (a level-1 block and the block it
// was compacted into, replicas with the same series) are merged, and
// identical samples are returned once. Downsampled blocks (Thanos's 5m
// and 1h resolutions) are read when the query step allows, as Thanos's
// querier does with auto-downsampling.
//
// What is not done: blocks are downloaded whole (index and chunks); there
// is no index-header, no lazy or ranged reading of the index or chunks and
// no caching of postings, so the first query of a block waits for its
// download. Tombstones are not read from the bucket (the Shipper uploads
// none). Aggregates of downsampled blocks are decoded as floats: native
// histogram aggregates are passed through by the modes that read one
// aggregate and fail in the average and counter modes; raw chunks that a
// downsampled block may hold are returned as they are.
package bucketstore

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
	"github.com/meshlens/meshlens/tsdb/block/downsample"
)

// Defaults of Options.
const (
	DefaultCacheBytes   = 10 << 30
	DefaultSyncInterval = time.Minute
)

// Errors of the Store.
var (
	// ErrClosed is returned by the methods of a closed Store.
	ErrClosed = errors.New("bucket store closed")
)

// Options configures a Store. Zero values mean what their comments say.
type Options struct {
	// Bucket holds the blocks; the Store only reads it.
	Bucket objstore.BucketReader
	// CacheDir holds the downloaded blocks, one directory per block named
	// by its ULID. It must not be shared with another Store or a TSDB. A
	// Store started on the same directory uses the blocks already there.
	CacheDir string
	// CacheBytes bounds the size of the blocks in CacheDir. The least
	// recently used blocks are deleted to stay below it, but never a
	// block an open querier reads, so a query whose blocks do not fit
	// exceeds it until the querier is closed. 0 means DefaultCacheBytes.
	CacheBytes int64
	// SyncInterval is the time between the syncs of Run; 0 means
	// DefaultSyncInterval.
	SyncInterval time.Duration
	// ExternalLabels adds the external labels of each block (meta.json
	// thanos.labels) to its series, replacing a series label of the same
	// name, as Thanos's store gateway does; matchers on those label
	// names then select whole blocks. Use it for a bucket written by
	// several producers whose series differ only by their external
	// labels. false (the zero value) returns series as stored in the
	// blocks: meshlens writes the cluster label into the series
	// themselves, so the external labels would only repeat it. With
	// ExternalLabels every Select holds the labels of the series it
	// selects in memory, to sort them after relabelling.
	ExternalLabels bool
	// RawOnly makes queries read only raw (resolution 0) blocks, ignoring
	// downsampled ones, whatever the step. false (the zero value) picks
	// the resolution by the query step, as Thanos's querier does with
	// auto-downsampling.
	RawOnly bool
	// Logger gets debug lines for routine work and warnings for blocks
	// that cannot be used; nil discards them.
	Logger *slog.Logger
	// Registerer gets the meshlens_bucketstore_* metrics; nil registers
	// nothing.
	Registerer prometheus.Registerer
}

// Store queries the blocks in a bucket. It is safe for concurrent use.
// Until the first Sync it knows no blocks.
type Store struct {
	bkt            objstore.BucketReader
	dir            string
	limit          int64
	interval       time.Duration
	externalLabels bool
	rawOnly        bool
	logger         *slog.Logger
	pool           chunkenc.Pool
	metrics        metrics

	syncMu sync.Mutex // Serialises Sync.

	mu      sync.Mutex
	closed  bool
	metas   map[ulid.ULID]*block.Meta // Blocks to query, from the last Sync.
	entries map[ulid.ULID]*entry      // Blocks in the cache or being downloaded.
	lru     *list.List                // Unused cached blocks, most recently used first.
	bytes   int64                     // Size of the cached blocks.
	seq     uint64                    // For unique names of directories to delete.
}

type metrics struct {
	known, cached, cacheBytes                        prometheus.Gauge
	downloads, downloadFailures, evictions, syncFail prometheus.Counter
	lastSync                                         prometheus.Gauge
}

// New returns a Store for o.Bucket. It creates CacheDir if needed, takes
// in the blocks already there and deletes leftovers of interrupted
// downloads; it does not read the bucket.
func New(o Options) (*Store, error) {
	switch {
	case o.Bucket == nil:
		return nil, errors.New("bucket store: no bucket")
	case o.CacheDir == "":
		return nil, errors.New("bucket store: no cache directory")
	case o.CacheBytes < 0:
		return nil, fmt.Errorf("bucket store: negative cache size %d", o.CacheBytes)
	}
	s := &Store{
		bkt:            o.Bucket,
		dir:            o.CacheDir,
		limit:          o.CacheBytes,
		interval:       o.SyncInterval,
		externalLabels: o.ExternalLabels,
		rawOnly:        o.RawOnly,
		logger:         o.Logger,
		pool:           downsample.NewPool(),
		metas:          map[ulid.ULID]*block.Meta{},
		entries:        map[ulid.ULID]*entry{},
		lru:            list.New(),
	}
	if s.limit == 0 {
		s.limit = DefaultCacheBytes
	}
	if s.interval <= 0 {
		s.interval = DefaultSyncInterval
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.logger = s.logger.With("component", "bucketstore")

	f := promauto.With(o.Registerer)
	s.metrics = metrics{
		known: f.NewGauge(prometheus.GaugeOpts{
			Name: "meshlens_bucketstore_blocks_known",
			Help: "Blocks in the bucket that queries read, as of the last sync.",
		}),
		cached: f.NewGauge(prometheus.GaugeOpts{
			Name: "meshlens_bucketstore_blocks_cached",
			Help: "Blocks in the local block cache.",
		}),
		cacheBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "meshlens_bucketstore_cache_bytes",
			Help: "Size of the blocks in the local block cache.",
		}),
		downloads: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_bucketstore_downloads_total",
			Help: "Blocks downloaded from the bucket into the cache.",
		}),
		downloadFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_bucketstore_download_failures_total",
			Help: "Block downloads that failed.",
		}),
		evictions: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_bucketstore_evictions_total",
			Help: "Blocks deleted from the cache to keep it within its size limit.",
		}),
		syncFail: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_bucketstore_sync_failures_total",
			Help: "Syncs with the bucket that failed in part or in whole.",
		}),
		lastSync: f.NewGauge(prometheus.GaugeOpts{
			Name: "meshlens_bucketstore_last_successful_sync_timestamp_seconds",
			Help: "Unix time of the last sync that read every block.",
		}),
	}

	if err := os.MkdirAll(s.dir, 0o777); err != nil {
		return nil, fmt.Errorf("bucket store: create cache directory: %w", err)
	}
	if err := s.loadCache(); err != nil {
		return nil, fmt.Errorf("bucket store: %w", err)
	}
	return s, nil
}

// Run syncs every SyncInterval until ctx is done, then returns nil. A
// failed sync is logged and retried at the next tick.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("sync with bucket", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sync reads the list of blocks from the bucket: every <ULID>/ directory
// with a meta.json and without a deletion-mark.json. A block without
// meta.json is being uploaded (meta.json goes last) or deleted and is
// skipped, as are blocks with an unreadable meta.json. Only the meta.json
// of blocks new to the Store is read; for the others Sync only checks for
// a deletion mark. Blocks gone from the bucket or marked for deletion are
// dropped from queries and from the cache (once no querier reads them).
// A block whose check fails keeps its previous state, and the error says
// which. Sync calls are serialised.
func (s *Store) Sync(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()

	ids, err := block.IDs(ctx, s.bkt, "")
	if err != nil {
		s.metrics.syncFail.Inc()
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	old := maps.Clone(s.metas)
	s.mu.Unlock()

	var (
		mu   sync.Mutex
		next = make(map[ulid.ULID]*block.Meta, len(ids))
	)
	err = forEach(ctx, fetchConcurrency, ids, func(id ulid.ULID) error {
		m, known := old[id]
		keep := func() {
			if known {
				mu.Lock()
				next[id] = m
				mu.Unlock()
			}
		}
		if !known {
			var err error
			m, err = block.DownloadMeta(ctx, s.bkt, id)
			switch {
			case errors.Is(err, block.ErrNotFound):
				s.logger.Debug("skipping block without meta.json", "block", id)
				return nil
			case errors.Is(err, block.ErrInvalidMeta):
				s.logger.Warn("skipping block", "block", id, "err", err)
				return nil
			case err != nil:
				return fmt.Errorf("block %s: %w", id, err)
			}
		}
		marked, err := s.bkt.Exists(ctx, path.Join(id.String(), block.DeletionMarkFilename))
		if err != nil {
			keep()
			return fmt.Errorf("block %s: check deletion mark: %w", id, err)
		}
		if marked {
			s.logger.Debug("skipping block marked for deletion", "block", id)
			return nil
		}
		mu.Lock()
		next[id] = m
		mu.Unlock()
		return nil
	})
	if ctx.Err() != nil {
		// An interrupted sync knows too little to drop blocks.
		s.metrics.syncFail.Inc()
		return err
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	for id := range next {
		if _, ok := old[id]; !ok {
			s.logger.Debug("new block", "block", id)
		}
	}
	s.metas = next
	var trash []trashItem
	for id, e := range s.entries {
		if _, ok := next[id]; ok {
			e.gone = false // Back, say after its deletion mark was removed.
			continue
		}
		e.gone = true
		if e.refs == 0 && e.loading == nil {
			s.logger.Debug("deleting cached block gone from the bucket", "block", id)
			trash = append(trash, s.removeLocked(e))
		}
	}
	s.updateGaugesLocked()
	s.mu.Unlock()
	s.emptyTrash(trash)

	if err != nil {
		s.metrics.syncFail.Inc()
		return err
	}
	s.metrics.lastSync.SetToCurrentTime()
	return nil
}

// Blocks returns the metas of the blocks that queries read, as of the
// last Sync, ordered by min time.
func (s *Store) Blocks() []*block.Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedMetas(s.metas)
}

func sortedMetas(m map[ulid.ULID]*block.Meta) []*block.Meta {
	ms := slices.Collect(maps.Values(m))
	slices.SortFunc(ms, func(a, b *block.Meta) int {
		if a.MinTime != b.MinTime {
			return compareInt64(a.MinTime, b.MinTime)
		}
		return a.ULID.Compare(b.ULID)
	})
	return ms
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Close closes the open blocks and makes later queries fail. It waits for
// the readers of open queriers, so close those first. The cache stays on
// disk for the next Store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var blocks []*promtsdb.Block
	for _, e := range s.entries {
		if e.block != nil {
			blocks = append(blocks, e.block)
			e.block = nil
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, b := range blocks {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

// Querier returns a querier of the blocks that overlap [mint, maxt]. It
// downloads blocks only when Select or a label method needs them; blocks
// it reads stay in the cache until Close.
func (s *Store) Querier(mint, maxt int64) (storage.Querier, error) {
	b, err := s.newBaseQuerier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &querier{baseQuerier: b}, nil
}

// ChunkQuerier returns a chunk querier of the blocks that overlap
// [mint, maxt], like Querier. Raw blocks give their chunks as stored;
// downsampled blocks give chunks encoded afresh from the samples their
// aggregates yield.
func (s *Store) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	b, err := s.newBaseQuerier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &chunkQuerier{baseQuerier: b}, nil
}

var (
	_ storage.Queryable      = (*Store)(nil)
	_ storage.ChunkQueryable = (*Store)(nil)
)
