package tsdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
)

// ShipperRecordFilename is the file in the TSDB directory where the Shipper
// records the blocks it has shipped, like Thanos's thanos.shipper.json.
const ShipperRecordFilename = "meshlens-shipper.json"

// shipperRecordVersion1 is the only version of the record file.
const shipperRecordVersion1 = 1

// ShipperOptions configures a Shipper. Zero values mean what their comments
// say.
type ShipperOptions struct {
	// Dir is the TSDB directory whose blocks are shipped.
	Dir string
	// Bucket receives the blocks under <ULID>/.
	Bucket objstore.Bucket
	// Labels are the external labels written into every uploaded meta.json.
	// They must not be empty: Thanos refuses blocks without them.
	Labels labels.Labels
	// Logger gets debug lines for routine work; nil discards them. Failures
	// are returned, and Run logs them as warnings.
	Logger *slog.Logger
	// Registerer gets the meshlens_shipper_* metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Interval is the time between the syncs of Run; 0 means 30s.
	Interval time.Duration
	// Attempts bounds the tries of each bucket operation; 0 means 5.
	Attempts int
	// MinBackoff is the wait after the first failed try, doubled after each
	// further one up to MaxBackoff; 0 means 1s and 30s.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one try of one bucket operation, so that a
	// stalled upload fails and is retried; 0 means no bound other than the
	// context of Sync.
	AttemptTimeout time.Duration
}

// Shipper uploads the completed blocks of a TSDB directory to a bucket in
// the Thanos layout: <ULID>/chunks/*, <ULID>/index, then <ULID>/meta.json
// with a thanos section. meta.json goes last, so a block whose meta.json is
// in the bucket is complete, and readers (and Thanos) ignore a partial
// upload. Uploading again overwrites the same objects, so a retry after a
// failure, a crash or a lost record is harmless.
//
// Only level-1 blocks (cut from the head) are uploaded as a rule. The
// shipper expects the TSDB not to compact locally (MinBlockDuration ==
// MaxBlockDuration), because on every reload Prometheus deletes the parents
// of a compacted block whatever BlocksToDelete says. Should a compacted
// block appear anyway, it counts as shipped when all its sources are, and
// is uploaded otherwise, since it then holds the only copy of data that is
// not in the bucket; the bucket may then hold overlapping blocks.
//
// Blocks without samples are neither uploaded nor counted as shipped;
// BlocksToDelete treats them as it treats shipped blocks.
// Tombstones are not uploaded (nor are they by Thanos): samples deleted
// through the admin API after a block was cut stay in its shipped copy.
type Shipper struct {
	dir      string
	bkt      objstore.Bucket
	lset     labels.Labels
	logger   *slog.Logger
	interval time.Duration
	retry    block.RetryOptions
	metrics  shipperMetrics
	now      func() time.Time // Wall clock; replaced in tests.

	syncMu sync.Mutex // Serialises Sync.

	mu      sync.RWMutex
	shipped map[ulid.ULID]struct{} // Blocks whose data is in the bucket.
}

type shipperMetrics struct {
	uploads, failures prometheus.Counter
	lastSync, pending prometheus.Gauge
}

// NewShipper returns a Shipper for o.Dir. It reads the record file, so
// Shipped answers before the first Sync; without a record, Sync asks the
// bucket before uploading.
func NewShipper(o ShipperOptions) (*Shipper, error) {
	switch {
	case o.Dir == "":
		return nil, errors.New("shipper: no TSDB directory")
	case o.Bucket == nil:
		return nil, errors.New("shipper: no bucket")
	case o.Labels.IsEmpty():
		return nil, errors.New("shipper: external labels are empty; Thanos refuses blocks without them")
	}
	if err := o.Labels.Validate(func(l labels.Label) error {
		if l.Value == "" {
			return fmt.Errorf("shipper: external label %s has an empty value", l.Name)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	s := &Shipper{
		dir:      o.Dir,
		bkt:      o.Bucket,
		lset:     o.Labels,
		logger:   o.Logger,
		interval: o.Interval,
		retry: block.RetryOptions{
			Attempts:       o.Attempts,
			MinBackoff:     o.MinBackoff,
			MaxBackoff:     o.MaxBackoff,
			AttemptTimeout: o.AttemptTimeout,
		},
		now:     time.Now,
		shipped: map[ulid.ULID]struct{}{},
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.logger = s.logger.With("component", "shipper")
	s.retry.Logger = s.logger
	if s.interval <= 0 {
		s.interval = 30 * time.Second
	}
	if s.retry.Attempts <= 0 {
		s.retry.Attempts = 5
	}
	if s.retry.MinBackoff <= 0 {
		s.retry.MinBackoff = time.Second
	}
	if s.retry.MaxBackoff <= 0 {
		s.retry.MaxBackoff = 30 * time.Second
	}
	s.retry.MaxBackoff = max(s.retry.MaxBackoff, s.retry.MinBackoff)

	f := promauto.With(o.Registerer)
	s.metrics = shipperMetrics{
		uploads: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_shipper_uploads_total",
			Help: "Blocks uploaded to the bucket.",
		}),
		failures: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_shipper_upload_failures_total",
			Help: "Block uploads that failed after all retries.",
		}),
		lastSync: f.NewGauge(prometheus.GaugeOpts{
			Name: "meshlens_shipper_last_successful_sync_timestamp_seconds",
			Help: "Unix time of the last sync that left no block behind.",
		}),
		pending: f.NewGauge(prometheus.GaugeOpts{
			Name: "meshlens_shipper_blocks_pending",
			Help: "Local blocks with samples that are not in the bucket yet, as of the last sync.",
		}),
	}

	ids, err := readShipperRecord(s.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		// The record only saves bucket lookups; Sync rewrites it.
		s.logger.Warn("ignoring unreadable shipper record", "file", filepath.Join(s.dir, ShipperRecordFilename), "err", err)
	default:
		for _, id := range ids {
			s.shipped[id] = struct{}{}
		}
	}
	return s, nil
}

// Run syncs every Interval until ctx is done, then returns nil. A failed
// sync is logged and retried at the next tick.
func (s *Shipper) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if _, err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("ship blocks", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Shipped reports whether the data of block id is in the bucket, as far as
// this shipper knows.
func (s *Shipper) Shipped(id ulid.ULID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.shipped[id]
	return ok
}

// Sync makes one pass over the blocks in the TSDB directory, oldest first,
// and uploads every one that is not in the bucket yet. A failed block does
// not stop the others; the error names every block that failed. Sync calls
// are serialised.
func (s *Shipper) Sync(ctx context.Context) (uploaded int, err error) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()

	blocks, err := s.localBlocks()
	if err != nil {
		return 0, err
	}
	s.mu.RLock()
	known := maps.Clone(s.shipped)
	s.mu.RUnlock()

	var errs []error
	local := make(map[ulid.ULID]struct{}, len(blocks))
	for _, b := range blocks {
		local[b.meta.ULID] = struct{}{}
		if _, ok := known[b.meta.ULID]; ok || b.meta.Stats.NumSamples == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		up, err := s.syncBlock(ctx, b, known)
		if err != nil {
			errs = append(errs, fmt.Errorf("block %s: %w", b.meta.ULID, err))
			if ctx.Err() == nil {
				s.metrics.failures.Inc()
			}
			continue
		}
		if up {
			uploaded++
			s.metrics.uploads.Inc()
		}
		s.mu.Lock()
		s.shipped[b.meta.ULID] = struct{}{}
		s.mu.Unlock()
		// Record at once, so that a crash does not cost an upload.
		if err := s.writeRecord(); err != nil {
			errs = append(errs, err)
		}
	}

	// Forget blocks that are gone from the directory.
	pending, pruned := 0, false
	s.mu.Lock()
	for id := range s.shipped {
		if _, ok := local[id]; !ok {
			delete(s.shipped, id)
			pruned = true
		}
	}
	for _, b := range blocks {
		if _, ok := s.shipped[b.meta.ULID]; !ok && b.meta.Stats.NumSamples > 0 {
			pending++
		}
	}
	s.mu.Unlock()
	if pruned {
		if err := s.writeRecord(); err != nil {
			errs = append(errs, err)
		}
	}
	s.metrics.pending.Set(float64(pending))
	if len(errs) > 0 {
		return uploaded, errors.Join(errs...)
	}
	s.metrics.lastSync.Set(float64(s.now().UnixNano()) / 1e9)
	return uploaded, nil
}

// localBlock is a completed block in the TSDB directory.
type localBlock struct {
	dir  string
	meta *promtsdb.BlockMeta
}

// localBlocks lists the completed blocks in the TSDB directory, oldest
// first: directories named by a ULID that hold a readable meta.json.
// Prometheus writes a block under a temporary name and renames it when
// done, and renames it away before deleting it, so a block being written or
// deleted is not listed.
func (s *Shipper) localBlocks() ([]localBlock, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list blocks in %s: %w", s.dir, err)
	}
	var blocks []localBlock
	for _, e := range entries {
		id, err := ulid.ParseStrict(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		dir := filepath.Join(s.dir, e.Name())
		m, err := block.ReadPrometheusMeta(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			s.logger.Debug("skipping block with unreadable meta.json", "block", id, "err", err)
			continue
		}
		if m.ULID != id {
			s.logger.Debug("skipping block whose meta.json names another block", "dir", dir, "ulid", m.ULID)
			continue
		}
		blocks = append(blocks, localBlock{dir: dir, meta: m})
	}
	sort.Slice(blocks, func(i, j int) bool { return blocks[i].meta.MinTime < blocks[j].meta.MinTime })
	return blocks, nil
}

// syncBlock makes sure the data of block b is in the bucket and reports
// whether it uploaded it. known holds the blocks shipped before this Sync.
func (s *Shipper) syncBlock(ctx context.Context, b localBlock, known map[ulid.ULID]struct{}) (uploaded bool, err error) {
	if b.meta.Compaction.Level > 1 {
		covered, err := s.sourcesShipped(ctx, b.meta, known)
		if err != nil {
			return false, err
		}
		if covered {
			s.logger.Debug("compacted block already shipped through its sources", "block", b.meta.ULID)
			return false, nil
		}
	}
	exists, err := s.inBucket(ctx, b.meta.ULID)
	if err != nil {
		return false, err
	}
	if exists {
		s.logger.Debug("block already in bucket", "block", b.meta.ULID)
		return false, nil
	}
	if b.meta.Compaction.Level > 1 {
		s.logger.Warn("shipping a compacted block whose sources are not all in the bucket; the bucket may get overlapping blocks", "block", b.meta.ULID, "level", b.meta.Compaction.Level)
	}
	start := s.now()
	if err := s.upload(ctx, b); err != nil {
		return false, err
	}
	s.logger.Debug("block uploaded", "block", b.meta.ULID, "mint", b.meta.MinTime, "maxt", b.meta.MaxTime, "duration", s.now().Sub(start))
	return true, nil
}

// sourcesShipped reports whether every source block of the compacted block
// m is known shipped or has its meta.json in the bucket.
func (s *Shipper) sourcesShipped(ctx context.Context, m *promtsdb.BlockMeta, known map[ulid.ULID]struct{}) (bool, error) {
	if len(m.Compaction.Sources) == 0 {
		return false, nil
	}
	for _, src := range m.Compaction.Sources {
		if _, ok := known[src]; ok {
			continue
		}
		ok, err := s.inBucket(ctx, src)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// inBucket reports whether block id is complete in the bucket: whether its
// meta.json is there.
func (s *Shipper) inBucket(ctx context.Context, id ulid.ULID) (bool, error) {
	var ok bool
	name := id.String() + "/" + block.MetaFilename
	err := block.Retry(ctx, s.bkt, s.retry, func(ctx context.Context) error {
		var err error
		ok, err = s.bkt.Exists(ctx, name)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("check %s: %w", name, err)
	}
	return ok, nil
}

// upload puts block b into the bucket: the chunk files, the index, and then
// meta.json with the thanos section. Files are read from the block
// directory as they are; Prometheus never changes them once the block is
// complete.
func (s *Shipper) upload(ctx context.Context, b localBlock) error {
	meta, err := block.NewMeta(b.dir, s.lset, block.SourceShipper)
	if err != nil {
		return fmt.Errorf("make meta.json: %w", err)
	}
	return block.UploadWithMeta(ctx, s.bkt, b.dir, meta, s.retry)
}

// BlocksToDelete returns a function for promtsdb.Options.BlocksToDelete
// that lets the TSDB delete a block only once its data is in the bucket
// (or it has no samples), and then when its end is more than
// localRetention ago or Prometheus has marked it deletable after a
// compaction. localRetention <= 0 keeps blocks regardless of age. It
// replaces Prometheus's time and size retention: a block that is not
// shipped is never deleted, however full the disk.
func (s *Shipper) BlocksToDelete(localRetention time.Duration) func(blocks []*promtsdb.Block) map[ulid.ULID]struct{} {
	return func(blocks []*promtsdb.Block) map[ulid.ULID]struct{} {
		deletable := map[ulid.ULID]struct{}{}
		cutoff := s.now().Add(-localRetention).UnixMilli()
		s.mu.RLock()
		defer s.mu.RUnlock()
		for _, b := range blocks {
			m := b.Meta()
			if _, ok := s.shipped[m.ULID]; !ok && m.Stats.NumSamples > 0 {
				continue
			}
			if m.Compaction.Deletable || (localRetention > 0 && m.MaxTime < cutoff) {
				deletable[m.ULID] = struct{}{}
			}
		}
		return deletable
	}
}

// shipperRecord is the content of the record file.
type shipperRecord struct {
	Version  int         `json:"version"`
	Uploaded []ulid.ULID `json:"uploaded"`
}

func readShipperRecord(dir string) ([]ulid.ULID, error) {
	b, err := os.ReadFile(filepath.Join(dir, ShipperRecordFilename))
	if err != nil {
		return nil, err
	}
	var r shipperRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if r.Version != shipperRecordVersion1 {
		return nil, fmt.Errorf("unexpected version %d", r.Version)
	}
	return r.Uploaded, nil
}

// writeRecord replaces the record file with the shipped set: a temporary
// file, synced, renamed over the old one, and the directory synced.
func (s *Shipper) writeRecord() error {
	s.mu.RLock()
	r := shipperRecord{Version: shipperRecordVersion1, Uploaded: make([]ulid.ULID, 0, len(s.shipped))}
	for id := range s.shipped {
		r.Uploaded = append(r.Uploaded, id)
	}
	s.mu.RUnlock()
	slices.SortFunc(r.Uploaded, func(a, b ulid.ULID) int { return a.Compare(b) })
	b, err := json.MarshalIndent(r, "", "\t")
	if err != nil {
		return fmt.Errorf("encode shipper record: %w", err)
	}
	if err := block.WriteFileAtomic(filepath.Join(s.dir, ShipperRecordFilename), append(b, '\n')); err != nil {
		return fmt.Errorf("write shipper record: %w", err)
	}
	return nil
}
