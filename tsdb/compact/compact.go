// Package compact is the bucket compactor: it merges the small blocks that
// the shippers of meshlens (or Thanos sidecars and receivers) upload into
// larger ones, downsamples old blocks to 5m and 1h resolution, applies
// retention per resolution and deletes what it has marked for deletion.
// It works on the Thanos bucket layout and writes what Thanos's compactor
// writes: meta.json with a thanos section, deletion-mark.json,
// no-compact-mark.json and Thanos's aggregate chunks, so that Thanos tools
// can read and compact the bucket too.
//
// One compactor must run per bucket (per prefix); two would compact the
// same blocks twice. It takes every top-level directory named by a ULID
// for a block, so other data (trace blocks) belongs under another prefix;
// a ULID directory with files a block does not have is left alone.
//
// Every step is safe to interrupt: a block is visible once its meta.json
// is uploaded, after its chunks and index; sources are marked for deletion
// after their compacted block is visible, and the next pass marks the
// sources of a visible compacted block that an interrupted pass did not
// mark (Thanos's garbage collection of blocks whose compaction sources
// another block holds); deletion removes meta.json first and the deletion
// mark last, so an interrupted deletion leaves a partial block that the
// next pass finishes deleting; an interrupted upload leaves a partial
// block that is deleted after PartialUploadAge.
//
// The compactor never deletes data to get past an inconsistency. A group
// whose blocks overlap (without one holding the other's sources), or that
// has a block that does not verify or lacks files, is halted: the
// offending blocks get a no-compact-mark.json with one of the reasons
// below, the group is logged and counted in meshlens_compactor_halted_groups
// and meshlens_compactor_group_errors_total, and the group is not
// compacted or downsampled until the marked blocks or their marks are
// removed. Retention and deletion go on. Blocks with other no-compact
// marks (manual ones, say) are only left out of compaction, as Thanos
// does.
//
// Differences from Thanos's compactor: native histograms are not
// downsampled (their series are left out of 5m and 1h blocks); overlapping
// blocks are never merged (no vertical compaction, no replica
// deduplication); the index_stats of meta.json are not written; blocks are
// not compacted for their tombstones, which the bucket does not hold; and
// there is no consistency delay, as the object stores meshlens supports
// list what was written at once.
package compact

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/model"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
)

// PartialUploadAge is how old a block without meta.json must be, by its
// ULID and by the time its objects were last written, before the
// compactor deletes it as an aborted upload (Thanos's
// PartialUploadThresholdAge). A partial block that carries a deletion mark
// is an interrupted deletion and is deleted at once.
const PartialUploadAge = 48 * time.Hour

// Options configures a Compactor. Zero values mean what the comments say.
type Options struct {
	// Bucket holds the blocks. Required.
	Bucket objstore.Bucket
	// WorkDir is where blocks are downloaded and built. The compactor owns
	// it: the subdirectories it uses are emptied at the start of each pass.
	// Required.
	WorkDir string
	// Ranges are the block ranges of the leveled compaction; blocks are
	// merged into blocks of the second range, those into the third and so
	// on. Each must be a larger multiple of the one before. Empty means
	// 2h, 8h, 2d, 14d, as Thanos.
	Ranges []time.Duration
	// DeleteDelay is how long a block marked for deletion stays in the
	// bucket, so that readers that still use it can finish; 0 means 48h.
	DeleteDelay time.Duration
	// Retention per resolution: blocks whose end is older get marked for
	// deletion. 0 keeps blocks of that resolution regardless of age.
	Retention Retention
	// RetentionSize bounds the bytes of the live blocks plus LocalBytes:
	// while they are over it, the blocks with the oldest data are marked
	// for deletion. 0 means no bound.
	RetentionSize int64
	// LocalBytes returns the bytes kept outside the bucket that count
	// against RetentionSize (the local TSDB of the node); nil is 0.
	LocalBytes func() int64
	// Downsample turns downsampling on.
	Downsample bool
	// DownsampleAfter are the block ranges from which blocks are
	// downsampled.
	DownsampleAfter DownsampleAfter
	// Logger gets what the compactor does; nil discards it.
	Logger *slog.Logger
	// Registerer gets the meshlens_compactor_* metrics; nil registers
	// nothing.
	Registerer prometheus.Registerer
	// Now is the clock for retention, marks and delays; nil is time.Now.
	Now func() time.Time
	// Interval is the time between the passes of Run; 0 means 5m.
	Interval time.Duration
}

// Retention is the retention of blocks per resolution; 0 keeps blocks of
// that resolution forever. A downsampled copy that would be past its
// resolution's retention is not made, so a shorter retention for 5m than
// for raw data does not make copies only to delete them.
type Retention struct {
	Raw, FiveMinutes, OneHour time.Duration
}

// WithDefault fills the resolutions left at 0: each keeps its data for d,
// or as long as the finer resolution if that is longer (raw 12h leaves 5m
// and 1h data at d; raw 30d takes 5m and 1h data to 30d). With d 0, r is
// returned as it is: a field at 0 keeps its data forever.
func (r Retention) WithDefault(d time.Duration) Retention {
	if d <= 0 {
		return r
	}
	if r.Raw == 0 {
		r.Raw = d
	}
	if r.FiveMinutes == 0 {
		r.FiveMinutes = max(d, r.Raw)
	}
	if r.OneHour == 0 {
		r.OneHour = max(d, r.FiveMinutes)
	}
	return r
}

// String is the retention per resolution, as "raw 15d, 5m 15d, 1h 15d",
// with "forever" for 0.
func (r Retention) String() string {
	f := func(d time.Duration) string {
		if d <= 0 {
			return "forever"
		}
		return model.Duration(d).String()
	}
	return fmt.Sprintf("raw %s, 5m %s, 1h %s", f(r.Raw), f(r.FiveMinutes), f(r.OneHour))
}

func (r Retention) of(res int64) time.Duration {
	switch res {
	case block.ResolutionRaw:
		return r.Raw
	case block.Resolution5m:
		return r.FiveMinutes
	case block.Resolution1h:
		return r.OneHour
	}
	return 0
}

// DownsampleAfter are the smallest block ranges that are downsampled, as
// Thanos decides it: a raw block that spans at least FiveMinutes (0 means
// 40h) gets a 5m copy, and a 5m block that spans at least OneHour (0 means
// 10d) a 1h copy. Compaction makes blocks that large once their data is
// old enough, so these are in effect the ages at which data is
// downsampled.
type DownsampleAfter struct {
	FiveMinutes, OneHour time.Duration
}

// Compactor compacts, downsamples, applies retention to and cleans up the
// blocks of a bucket.
type Compactor struct {
	bkt             objstore.Bucket
	workDir         string
	ranges          []int64
	deleteDelay     time.Duration
	retention       Retention
	retentionSize   int64
	localBytes      func() int64
	downsample      bool
	downsampleAfter [2]int64 // Raw→5m and 5m→1h, in milliseconds.
	logger          *slog.Logger
	now             func() time.Time
	interval        time.Duration
	metrics         metrics

	runMu sync.Mutex // Serialises passes.

	cacheMu sync.Mutex
	metas   map[ulid.ULID]*block.Meta
	sizes   map[ulid.ULID]int64 // Of blocks whose meta.json lists no sizes.

	haltMu sync.Mutex
	halted map[string]string // Group key → why, as of the last pass.
}

type metrics struct {
	compactions, blocksMarked, blocksDeleted, noCompactMarked prometheus.Counter
	downsamples, groupErrors                                  *prometheus.CounterVec
	haltedGroups, lastSuccess                                 prometheus.Gauge
}

// New returns a Compactor for o.
func New(o Options) (*Compactor, error) {
	switch {
	case o.Bucket == nil:
		return nil, errors.New("compactor: no bucket")
	case o.WorkDir == "":
		return nil, errors.New("compactor: no work directory")
	}
	c := &Compactor{
		bkt:           o.Bucket,
		workDir:       o.WorkDir,
		deleteDelay:   o.DeleteDelay,
		retention:     o.Retention,
		retentionSize: o.RetentionSize,
		localBytes:    o.LocalBytes,
		downsample:    o.Downsample,
		logger:        o.Logger,
		now:           o.Now,
		metas:         map[ulid.ULID]*block.Meta{},
		sizes:         map[ulid.ULID]int64{},
		halted:        map[string]string{},
	}
	ranges := o.Ranges
	if len(ranges) == 0 {
		ranges = []time.Duration{2 * time.Hour, 8 * time.Hour, 48 * time.Hour, 14 * 24 * time.Hour}
	}
	for i, r := range ranges {
		if r <= 0 || r%time.Millisecond != 0 {
			return nil, fmt.Errorf("compactor: block range %s is not a positive number of milliseconds", r)
		}
		if i > 0 && (r <= ranges[i-1] || r%ranges[i-1] != 0) {
			return nil, fmt.Errorf("compactor: block range %s is not a larger multiple of %s", r, ranges[i-1])
		}
		c.ranges = append(c.ranges, r.Milliseconds())
	}
	if o.RetentionSize < 0 {
		return nil, fmt.Errorf("compactor: negative retention size %d", o.RetentionSize)
	}
	if c.deleteDelay <= 0 {
		c.deleteDelay = 48 * time.Hour
	}
	for _, r := range []time.Duration{o.Retention.Raw, o.Retention.FiveMinutes, o.Retention.OneHour} {
		if r < 0 {
			return nil, fmt.Errorf("compactor: negative retention %s", r)
		}
	}
	c.downsampleAfter = [2]int64{DefaultFiveMinutesAfter.Milliseconds(), DefaultOneHourAfter.Milliseconds()}
	if o.DownsampleAfter.FiveMinutes > 0 {
		c.downsampleAfter[0] = o.DownsampleAfter.FiveMinutes.Milliseconds()
	}
	if o.DownsampleAfter.OneHour > 0 {
		c.downsampleAfter[1] = o.DownsampleAfter.OneHour.Milliseconds()
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	c.logger = c.logger.With("component", "compactor")
	c.interval = o.Interval
	if c.interval <= 0 {
		c.interval = 5 * time.Minute
	}
	if c.now == nil {
		c.now = time.Now
	}

	f := promauto.With(o.Registerer)
	c.metrics = metrics{
		compactions: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_compactor_compactions_total",
			Help: "Compacted blocks uploaded to the bucket.",
		}),
		downsamples: f.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlens_compactor_downsamples_total",
			Help: "Downsampled blocks uploaded to the bucket, by resolution.",
		}, []string{"resolution"}),
		blocksMarked: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_compactor_blocks_marked_for_deletion_total",
			Help: "Blocks marked for deletion: compacted sources, duplicates, blocks past retention.",
		}),
		blocksDeleted: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_compactor_blocks_deleted_total",
			Help: "Blocks deleted from the bucket, aborted uploads included.",
		}),
		noCompactMarked: f.NewCounter(prometheus.CounterOpts{
			Name: "meshlens_compactor_blocks_marked_for_no_compact_total",
			Help: "Blocks marked not to be compacted because of an inconsistency.",
		}),
		groupErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlens_compactor_group_errors_total",
			Help: "Times a compaction group was found halted, once per group and pass, by reason: a no-compact reason (overlapping-blocks, corrupt-block, missing-files) or invalid-output.",
		}, []string{"reason"}),
		haltedGroups: f.NewGauge(prometheus.GaugeOpts{
			Name: "meshlens_compactor_halted_groups",
			Help: "Compaction groups halted by an inconsistency as of the last pass; see the log and the no-compact marks.",
		}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "meshlens_compactor_last_successful_run_timestamp_seconds",
			Help: "Unix time of the end of the last pass that completed without error.",
		}),
	}
	return c, nil
}

// Run makes a pass at once and then every Options.Interval until ctx
// is done, and returns nil then. A failed pass is logged and the next one
// picks up the work.
func (c *Compactor) Run(ctx context.Context) error {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		if err := c.Once(ctx); err != nil && ctx.Err() == nil {
			c.logger.Warn("compactor pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Halted returns the halted compaction groups of the last pass, by group
// key (resolution@labels), with the reason.
func (c *Compactor) Halted() map[string]string {
	c.haltMu.Lock()
	defer c.haltMu.Unlock()
	out := make(map[string]string, len(c.halted))
	for k, v := range c.halted {
		out[k] = v
	}
	return out
}

// Once makes one pass over the bucket: it marks blocks past retention for
// deletion, compacts every group as far as the ranges allow, downsamples
// (if enabled), and deletes blocks marked for deletion more than
// DeleteDelay ago and aborted uploads. A group with an inconsistency it
// cannot resolve safely is halted: its offending blocks get a no-compact
// mark, the halt is logged and counted, and the other groups go on;
// halting is not an error of the pass. Errors of the bucket, of the disk
// and ctx's end are returned; the work done is kept and the next pass goes
// on from there.
func (c *Compactor) Once(ctx context.Context) error {
	c.runMu.Lock()
	defer c.runMu.Unlock()

	p := &pass{c: c, halted: map[string]string{}}
	err := p.run(ctx)

	c.haltMu.Lock()
	c.halted = p.halted
	c.haltMu.Unlock()
	c.metrics.haltedGroups.Set(float64(len(p.halted)))
	if err != nil {
		return err
	}
	c.metrics.lastSuccess.Set(float64(c.now().UnixNano()) / 1e9)
	return nil
}

// pass is the state of one Once.
type pass struct {
	c      *Compactor
	halted map[string]string
}

func (p *pass) run(ctx context.Context) error {
	c := p.c
	for _, sub := range []string{compactSubdir, downsampleSubdir} {
		if err := os.RemoveAll(filepath.Join(c.workDir, sub)); err != nil {
			return fmt.Errorf("clean work directory: %w", err)
		}
	}

	// A failing phase does not keep the later ones from their work (a
	// failing compaction must not stop deletions, say); a failing sync
	// does, and so does ctx's end.
	var errs []error
	phase := func(f func(blocks map[ulid.ULID]*remoteBlock) error) error {
		blocks, err := c.syncBlocks(ctx)
		if err != nil {
			return err
		}
		if err := f(blocks); err != nil {
			if ctx.Err() != nil {
				return err
			}
			errs = append(errs, err)
		}
		return nil
	}
	if err := phase(func(blocks map[ulid.ULID]*remoteBlock) error {
		return errors.Join(p.applyRetention(ctx, blocks), p.compact(ctx, blocks))
	}); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if c.downsample {
		// Twice: a 5m block made in the first round may be large enough
		// for a 1h copy.
		for range 2 {
			if err := phase(func(blocks map[ulid.ULID]*remoteBlock) error { return p.downsampleAll(ctx, blocks) }); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
	}
	if err := phase(func(blocks map[ulid.ULID]*remoteBlock) error { return p.deleteMarked(ctx, blocks) }); err != nil {
		return errors.Join(append(errs, err)...)
	}
	return errors.Join(errs...)
}

const (
	compactSubdir    = "compact"
	downsampleSubdir = "downsample"
)

// halt records that group key is halted because of err, counting it under
// reason.
func (p *pass) halt(key string, reason string, err error) {
	if _, ok := p.halted[key]; !ok {
		p.halted[key] = err.Error()
		p.c.metrics.groupErrors.WithLabelValues(reason).Inc()
	}
	p.c.logger.Error("compaction group halted; resolve the inconsistency and remove the no-compact marks to resume", "group", key, "reason", reason, "err", err)
}

// applyRetention marks the live blocks past their resolution's retention
// for deletion.
func (p *pass) applyRetention(ctx context.Context, blocks map[ulid.ULID]*remoteBlock) error {
	now := p.c.now()
	for _, b := range sortedBlocks(blocks) {
		if !b.live() {
			continue
		}
		r := p.c.retention.of(b.meta.Thanos.Downsample.Resolution)
		if r <= 0 || !now.After(time.UnixMilli(b.meta.MaxTime).Add(r)) {
			continue
		}
		if err := p.markDeleted(ctx, b, fmt.Sprintf("retention: older than %s at resolution %d", r, b.meta.Thanos.Downsample.Resolution)); err != nil {
			return err
		}
	}
	return p.applyRetentionSize(ctx, blocks)
}

// applyRetentionSize marks live blocks for deletion, the oldest data
// first (by end, raw before its downsampled copies), while the live
// blocks and LocalBytes are over RetentionSize. Blocks already marked do
// not count: they leave after DeleteDelay.
func (p *pass) applyRetentionSize(ctx context.Context, blocks map[ulid.ULID]*remoteBlock) error {
	c := p.c
	if c.retentionSize <= 0 {
		return nil
	}
	var (
		live  []*remoteBlock
		sizes = map[ulid.ULID]int64{}
		total int64
	)
	if c.localBytes != nil {
		total = c.localBytes()
	}
	for _, b := range sortedBlocks(blocks) {
		if !b.live() {
			continue
		}
		n, err := c.blockSize(ctx, b)
		if err != nil {
			return err
		}
		live = append(live, b)
		sizes[b.id] = n
		total += n
	}
	if total <= c.retentionSize {
		return nil
	}
	slices.SortStableFunc(live, func(a, b *remoteBlock) int {
		if a.meta.MaxTime != b.meta.MaxTime {
			return cmp.Compare(a.meta.MaxTime, b.meta.MaxTime)
		}
		return cmp.Compare(a.meta.Thanos.Downsample.Resolution, b.meta.Thanos.Downsample.Resolution)
	})
	for _, b := range live {
		if total <= c.retentionSize {
			break
		}
		if err := p.markDeleted(ctx, b, fmt.Sprintf("retention: %d bytes over the size retention of %d bytes", total-c.retentionSize, c.retentionSize)); err != nil {
			return err
		}
		total -= sizes[b.id]
	}
	return nil
}

// blockSize returns the bytes of block b: the sizes its meta.json lists,
// or else the sizes of its objects in the bucket.
func (c *Compactor) blockSize(ctx context.Context, b *remoteBlock) (int64, error) {
	if n := b.meta.ExpectedSize(); n > 0 {
		return n, nil
	}
	c.cacheMu.Lock()
	n, ok := c.sizes[b.id]
	c.cacheMu.Unlock()
	if ok {
		return n, nil
	}
	err := c.bkt.Iter(ctx, b.id.String()+"/", func(name string) error {
		if strings.HasSuffix(name, "/") {
			return nil
		}
		attrs, err := c.bkt.Attributes(ctx, name)
		if c.bkt.IsObjNotFoundErr(err) {
			return nil
		}
		if err != nil {
			return err
		}
		n += attrs.Size
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return 0, fmt.Errorf("size of block %s: %w", b.id, err)
	}
	c.cacheMu.Lock()
	c.sizes[b.id] = n
	c.cacheMu.Unlock()
	return n, nil
}

// markDeleted uploads the deletion mark of b.
func (p *pass) markDeleted(ctx context.Context, b *remoteBlock, details string) error {
	m := block.NewDeletionMark(b.id, p.c.now(), details)
	ok, err := block.UploadMark(ctx, p.c.bkt, b.id, block.DeletionMarkFilename, m)
	if err != nil {
		return err
	}
	b.deletion = &m
	if ok {
		p.c.metrics.blocksMarked.Inc()
		p.c.logger.Info("block marked for deletion", "block", b.id, "details", details)
	}
	return nil
}

// markNoCompact uploads the no-compact mark of b.
func (p *pass) markNoCompact(ctx context.Context, b *remoteBlock, reason block.NoCompactReason, details string) error {
	m := block.NewNoCompactMark(b.id, p.c.now(), reason, details)
	ok, err := block.UploadMark(ctx, p.c.bkt, b.id, block.NoCompactMarkFilename, m)
	if err != nil {
		return err
	}
	if b.noCompact == nil {
		b.noCompact = &m
	}
	if ok {
		p.c.metrics.noCompactMarked.Inc()
		p.c.logger.Warn("block marked for no compaction", "block", b.id, "reason", reason, "details", details)
	}
	return nil
}

// deleteMarked deletes the blocks marked for deletion more than
// DeleteDelay ago, interrupted deletions, and aborted uploads older than
// PartialUploadAge.
func (p *pass) deleteMarked(ctx context.Context, blocks map[ulid.ULID]*remoteBlock) error {
	c := p.c
	now := c.now()
	var errs []error
	for _, b := range sortedBlocks(blocks) {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case b.badMeta:
			continue
		case b.deletion != nil:
			if b.meta != nil && now.Sub(time.Unix(b.deletion.DeletionTime, 0)) <= c.deleteDelay {
				continue
			}
		case b.meta == nil:
			old, err := p.abortedUpload(ctx, b.id, now)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !old {
				continue
			}
			c.logger.Info("deleting aborted upload", "block", b.id)
		default:
			continue
		}
		if err := block.Delete(ctx, c.bkt, b.id.String()); err != nil {
			errs = append(errs, fmt.Errorf("delete block %s: %w", b.id, err))
			continue
		}
		c.metrics.blocksDeleted.Inc()
		c.logger.Info("block deleted", "block", b.id)
	}
	return errors.Join(errs...)
}

// abortedUpload reports whether the block id without meta.json is an
// aborted upload of a block: older than PartialUploadAge, by its ULID and
// by each of its objects, and holding only files a block has (so that a
// directory something else keeps under a ULID is left alone).
func (p *pass) abortedUpload(ctx context.Context, id ulid.ULID, now time.Time) (bool, error) {
	if now.Sub(ulid.Time(id.Time())) <= PartialUploadAge {
		return false, nil
	}
	old := true
	prefix := id.String() + "/"
	err := p.c.bkt.Iter(ctx, prefix, func(name string) error {
		if !old || strings.HasSuffix(name, "/") {
			return nil
		}
		switch rel := strings.TrimPrefix(name, prefix); {
		case rel == block.IndexFilename, rel == block.NoCompactMarkFilename, rel == "tombstones",
			strings.HasPrefix(rel, block.ChunksDirname+"/") && !strings.Contains(rel[len(block.ChunksDirname)+1:], "/"):
		default:
			p.c.logger.Debug("leaving directory that is not a block alone", "dir", prefix, "object", name)
			old = false
			return nil
		}
		attrs, err := p.c.bkt.Attributes(ctx, name)
		if p.c.bkt.IsObjNotFoundErr(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if !attrs.LastModified.IsZero() && now.Sub(attrs.LastModified) <= PartialUploadAge {
			old = false
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return false, fmt.Errorf("check partial block %s: %w", id, err)
	}
	return old, nil
}

// sortedBlocks returns the blocks ordered by ULID.
func sortedBlocks(blocks map[ulid.ULID]*remoteBlock) []*remoteBlock {
	out := make([]*remoteBlock, 0, len(blocks))
	for _, b := range blocks {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *remoteBlock) int { return a.id.Compare(b.id) })
	return out
}
