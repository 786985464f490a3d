// Package store is meshlens's span store: a write-ahead log and an
// in-memory head for the spans just received, immutable blocks
// (traces/store/spanblock) cut from the head, shipped to the bucket,
// compacted there and deleted after the retention.
//
// Append logs a batch of spans to the WAL (Prometheus's tsdb/wlog) and
// returns once it is fsynced; concurrent calls share one fsync. The head
// groups spans by trace. The owner goroutine (Run) cuts the head into a
// block when it is due, uploads blocks, lists the bucket, compacts it and
// applies the retention. Reads cover the head, the local blocks and the
// bucket's blocks (downloaded into a bounded cache on first use).
//
// A cut writes the block, opens it, drops its spans from the head, logs a
// cut record and deletes the WAL segments that hold no span still in the
// head. A crash before the cut record replays the spans into the head
// although they are in the block too; reads deduplicate spans by id, so
// results do not change, and nothing acknowledged is lost at any point.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb/wlog"
	"github.com/prometheus/prometheus/util/compression"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/store/spanblock"
)

// Defaults of Options.
const (
	DefaultPrefix           = "traces"
	DefaultTraceIdle        = 10 * time.Second
	DefaultMaxBlockDuration = 5 * time.Minute
	DefaultMaxBlockSpans    = 1_000_000
	DefaultMaxSpansPerTrace = 100_000
	DefaultRetention        = 7 * 24 * time.Hour
	DefaultCacheBytes       = 10 << 30
)

// DefaultCompactionRanges are the windows bucket compaction merges blocks
// into: an hour of 5-minute blocks, then 6 hours, then a day. A day of
// spans at 50K spans/s is ~4.3G spans; larger windows would make blocks
// too large to download for one trace.
var DefaultCompactionRanges = []time.Duration{time.Hour, 6 * time.Hour, 24 * time.Hour}

// Options configure a Store. Zero values mean what their comments say.
type Options struct {
	// Dir holds the store's local data: Dir/wal, Dir/blocks/<ULID> and the
	// record of shipped blocks. Required.
	Dir string
	// Bucket receives the blocks under Prefix/<ULID>/. Nil means no
	// shipping: blocks stay on the local disk until the retention.
	Bucket objstore.Bucket
	// Prefix is the bucket folder of trace blocks; "" means "traces".
	Prefix string

	// TraceIdle is how long a trace must go without a new span before a
	// cut writes it into a block (it is then taken as complete); zero
	// means 10s.
	TraceIdle time.Duration
	// MaxBlockDuration bounds how long a span waits in the head: a cut is
	// due when a trace has been in the head this long, and writes every
	// idle trace and every trace that old. Zero means 5m.
	MaxBlockDuration time.Duration
	// MaxBlockSpans makes a cut due when the head holds this many spans; a
	// cut writes every trace when the idle ones alone would leave the head
	// over half of it. It bounds the head's memory (a span takes about
	// 1 KiB). Zero means 1,000,000.
	MaxBlockSpans int
	// MaxSpansPerTrace is the most spans a trace may have in the head;
	// Append refuses the spans beyond it with traces.ErrTraceTooLarge.
	// Zero means 100,000.
	MaxSpansPerTrace int

	// Retention is how long spans are kept, by their start time: older
	// blocks are deleted locally and in the bucket, older head spans are
	// dropped. Zero means 7 days.
	Retention time.Duration
	// LocalRetention is how long a shipped block stays on the local disk
	// (by its latest span start); zero keeps it until Retention. Blocks
	// that are not shipped stay until Retention.
	LocalRetention time.Duration

	// Compact makes Run compact the bucket. Only one store (or other
	// compactor) per bucket prefix may do so.
	Compact bool
	// CompactionRanges are the windows, shortest first, into which bucket
	// compaction merges the blocks whose spans start within one window
	// once it has closed. Nil means DefaultCompactionRanges.
	CompactionRanges []time.Duration

	// CacheDir holds bucket blocks downloaded for reads; "" means
	// Dir/cache. Its content is reused after a restart.
	CacheDir string
	// CacheBytes bounds the cache: least recently used blocks no reader
	// holds are deleted beyond it. Zero means 10 GiB; negative means no
	// bound.
	CacheBytes int64

	// WALCompression compresses WAL records; "" means snappy,
	// compression.None turns it off.
	WALCompression compression.Type

	// Logger gets debug lines for routine work and warnings from Run; nil
	// discards.
	Logger *slog.Logger
	// Metrics gets the meshlens_traces_* metrics; nil means a private set.
	Metrics *metrics.Set
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
}

// Store is the span store. It implements traces.Appender and
// traces.Reader.
type Store struct {
	o       Options
	logger  *slog.Logger
	metrics *storeMetrics
	now     func() time.Time
	enc     sync.Pool // *encoder

	wal       *wlog.WL
	walMu     sync.Mutex // Guards the fields below, WAL writes and head inserts.
	seq       uint64     // Last logged record.
	curSeg    int        // Every record logged from now on goes into this segment or a later one.
	syncedSeg int        // Segments before it are fsynced.
	syncMu    sync.Mutex // Held by the goroutine that fsyncs for the others.
	synced    atomic.Uint64

	headMu sync.RWMutex
	head   *head

	blocksMu sync.Mutex
	local    map[ulid.ULID]*blockEntry // Blocks in Dir/blocks.
	bucket   map[ulid.ULID]*blockEntry // Complete blocks in the bucket, cached or not.
	shipped  map[ulid.ULID]struct{}    // Local blocks known to be in the bucket.

	passMu sync.Mutex // Serialises cuts, shipping, compaction and retention.
	closed atomic.Bool
}

var (
	_ traces.Appender = (*Store)(nil)
	_ traces.Reader   = (*Store)(nil)
)

// Open opens the store in o.Dir: it replays the WAL (repairing a torn
// tail), opens the local blocks and the cached bucket blocks and reads the
// record of shipped blocks. The bucket is listed by the first SyncBucket
// (Run does it at once).
func Open(o Options) (*Store, error) {
	if o.Dir == "" {
		return nil, errors.New("span store: no directory")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.TraceIdle <= 0 {
		o.TraceIdle = DefaultTraceIdle
	}
	if o.MaxBlockDuration <= 0 {
		o.MaxBlockDuration = DefaultMaxBlockDuration
	}
	if o.MaxBlockSpans <= 0 {
		o.MaxBlockSpans = DefaultMaxBlockSpans
	}
	if o.MaxSpansPerTrace <= 0 {
		o.MaxSpansPerTrace = DefaultMaxSpansPerTrace
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.CompactionRanges == nil {
		o.CompactionRanges = DefaultCompactionRanges
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(o.Dir, "cache")
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.WALCompression == "" {
		o.WALCompression = compression.Snappy
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{
		o:       o,
		logger:  o.Logger.With("component", "span-store"),
		now:     o.Now,
		head:    newHead(),
		local:   map[ulid.ULID]*blockEntry{},
		bucket:  map[ulid.ULID]*blockEntry{},
		shipped: map[ulid.ULID]struct{}{},
	}
	s.enc.New = func() any { return &encoder{} }
	for _, d := range []string{s.blocksDir(), s.o.CacheDir, s.compactDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("span store: %w", err)
		}
	}
	// Blocks left half-merged by a crash are of no use.
	if err := removeContents(s.compactDir()); err != nil {
		return nil, fmt.Errorf("span store: %w", err)
	}

	s.metrics = newStoreMetrics(s)
	w, err := wlog.NewSize(s.logger, nil, filepath.Join(o.Dir, "wal"), walSegmentSize, o.WALCompression)
	if err != nil {
		s.metrics.unregister()
		return nil, fmt.Errorf("span store: open WAL: %w", err)
	}
	s.wal = w
	seg, _, err := w.LastSegmentAndOffset()
	if err != nil {
		s.abortOpen()
		return nil, fmt.Errorf("span store: open WAL: %w", err)
	}
	s.curSeg, s.syncedSeg = seg, seg
	if err := s.replay(); err != nil {
		s.abortOpen()
		return nil, fmt.Errorf("span store: %w", err)
	}
	// Repair may have moved the active segment.
	if seg, _, err = w.LastSegmentAndOffset(); err == nil {
		s.curSeg, s.syncedSeg = seg, seg
	}
	if err := s.openLocalBlocks(); err != nil {
		s.abortOpen()
		return nil, fmt.Errorf("span store: %w", err)
	}
	if err := s.readShippedRecord(); err != nil {
		s.logger.Warn("ignoring unreadable record of shipped blocks", "err", err)
	}
	if s.o.Bucket != nil {
		if err := s.openCache(); err != nil {
			s.abortOpen()
			return nil, fmt.Errorf("span store: %w", err)
		}
	}
	return s, nil
}

// abortOpen releases what a failed Open took.
func (s *Store) abortOpen() {
	s.wal.Close()
	s.metrics.unregister()
	for _, m := range []map[ulid.ULID]*blockEntry{s.local, s.bucket} {
		for _, e := range m {
			if e.blk != nil {
				e.blk.Close()
			}
		}
	}
}

func (s *Store) blocksDir() string  { return filepath.Join(s.o.Dir, "blocks") }
func (s *Store) compactDir() string { return filepath.Join(s.o.Dir, "compact") }

// Append stores spans: it returns nil once they are in the WAL and fsynced.
// A span whose id and kind its trace already holds is dropped (a resent
// span).
// Spans beyond MaxSpansPerTrace are refused: the others are stored, and the
// error wraps traces.ErrTraceTooLarge. So are spans that start before the
// retention (traces.ErrSpansTooOld); both may be joined in one error.
func (s *Store) Append(ctx context.Context, spans []traces.Span) error {
	if len(spans) == 0 {
		return nil
	}
	if s.closed.Load() {
		return errors.New("append spans: store closed")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	spans, tooOld := s.refuseOld(spans)
	if len(spans) == 0 {
		return tooOld
	}
	e := s.enc.Get().(*encoder)
	defer s.enc.Put(e)
	rec := e.spans(spans)

	s.walMu.Lock()
	accepted, refused, refusedTrace := s.admitLocked(spans)
	if refused > 0 {
		if len(accepted) == 0 {
			s.walMu.Unlock()
			return errors.Join(tooOld, s.tooLarge(refused, refusedTrace))
		}
		rec = e.spans(accepted)
	} else {
		accepted = spans
	}
	seq, err := s.logRecord(rec)
	if err != nil {
		s.walMu.Unlock()
		return fmt.Errorf("append %d spans: %w", len(accepted), err)
	}
	now := s.now()
	s.headMu.Lock()
	for _, sp := range accepted {
		s.insertLocked(sp, seq, s.curSeg, now)
	}
	s.head.seq = seq
	s.headMu.Unlock()
	s.walMu.Unlock()

	if err := s.commit(seq); err != nil {
		return fmt.Errorf("append %d spans: %w", len(accepted), err)
	}
	s.metrics.appended.Add(len(accepted))
	if refused > 0 {
		return errors.Join(tooOld, s.tooLarge(refused, refusedTrace))
	}
	return tooOld
}

// refuseOld returns the spans that start within the retention and, when
// some do not, a *traces.SpansTooOldError counting them: they would be
// deleted at the next retention pass, never shown.
func (s *Store) refuseOld(spans []traces.Span) ([]traces.Span, error) {
	cutoff := s.now().Add(-s.o.Retention)
	minStart := uint64(cutoff.UnixNano())
	old := 0
	for i := range spans {
		if spans[i].StartUnixNano < minStart {
			old++
		}
	}
	if old == 0 {
		return spans, nil
	}
	kept := make([]traces.Span, 0, len(spans)-old)
	for _, sp := range spans {
		if sp.StartUnixNano >= minStart {
			kept = append(kept, sp)
		}
	}
	s.metrics.tooOld.Add(old)
	return kept, &traces.SpansTooOldError{Refused: old, Cutoff: cutoff}
}

func (s *Store) tooLarge(refused int, id traces.TraceID) error {
	s.metrics.refused.Add(refused)
	return &traces.TraceTooLargeError{Refused: refused, Trace: id, Limit: s.o.MaxSpansPerTrace}
}

// admitLocked returns the spans that fit their trace's limit. When every
// span fits it returns nil, 0: the common case allocates nothing.
// The caller holds s.walMu, so no span is inserted meanwhile.
func (s *Store) admitLocked(spans []traces.Span) (accepted []traces.Span, refused int, refusedTrace traces.TraceID) {
	s.headMu.RLock()
	defer s.headMu.RUnlock()
	limit := s.o.MaxSpansPerTrace
	var added map[traces.TraceID]int
	for i := range spans {
		sp := &spans[i]
		n := 0
		if t := s.head.traces[sp.TraceID]; t != nil {
			n = len(t.spans)
		}
		if n+len(spans) <= limit && added == nil {
			continue // The whole batch fits this trace.
		}
		if added == nil {
			added = map[traces.TraceID]int{}
		}
		if n+added[sp.TraceID] >= limit {
			if t := s.head.traces[sp.TraceID]; t != nil && t.has(keyOf(sp)) {
				continue
			}
			refused++
			refusedTrace = sp.TraceID
			continue
		}
		added[sp.TraceID]++
	}
	if refused == 0 {
		return nil, 0, refusedTrace
	}
	// Second pass, now that some are refused: keep the same ones.
	accepted = make([]traces.Span, 0, len(spans)-refused)
	clear(added)
	for i := range spans {
		sp := &spans[i]
		n := 0
		t := s.head.traces[sp.TraceID]
		if t != nil {
			n = len(t.spans)
		}
		if n+added[sp.TraceID] >= limit {
			continue
		}
		added[sp.TraceID]++
		accepted = append(accepted, *sp)
	}
	return accepted, refused, refusedTrace
}

// insertLocked puts a span into the head unless its trace holds it
// already; seg is a WAL segment at or before the span's record. The caller
// holds s.headMu (or is Open).
func (s *Store) insertLocked(sp traces.Span, seq uint64, seg int, now time.Time) bool {
	t := s.head.traces[sp.TraceID]
	if t == nil {
		t = &headTrace{first: now, minSeg: seg}
		s.head.traces[sp.TraceID] = t
	} else if t.has(keyOf(&sp)) {
		return false
	}
	t.add(sp, seq)
	t.last = now
	s.head.spans++
	return true
}

// Close syncs the WAL and closes it and every block. The head is not
// written: the next Open replays it from the WAL.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.passMu.Lock()
	defer s.passMu.Unlock()
	var errs []error
	s.walMu.Lock()
	if err := s.syncWALLocked(); err != nil {
		errs = append(errs, err)
	}
	if err := s.wal.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close WAL: %w", err))
	}
	s.walMu.Unlock()
	s.blocksMu.Lock()
	for _, m := range []map[ulid.ULID]*blockEntry{s.local, s.bucket} {
		for _, e := range m {
			if e.blk != nil {
				if err := e.blk.Close(); err != nil {
					errs = append(errs, err)
				}
				e.blk = nil
			}
		}
	}
	s.blocksMu.Unlock()
	s.metrics.unregister()
	return errors.Join(errs...)
}

// runInterval is how often Run checks whether a cut is due.
const runInterval = time.Second

// bucketInterval is how often Run lists the bucket, applies the retention
// and, when it compacts, compacts.
const bucketInterval = time.Minute

// Run is the store's owner: it cuts the head when a cut is due and ships
// the new block, and every minute lists the bucket, applies the retention
// and compacts the bucket (when Options.Compact). It returns nil when ctx
// is done; failures are logged and retried at the next turn.
func (s *Store) Run(ctx context.Context) error {
	tick := time.NewTicker(runInterval)
	defer tick.Stop()
	var lastBucket time.Time
	for {
		if _, err := s.cut(ctx, false); err != nil && ctx.Err() == nil {
			s.logger.Warn("cut head", "err", err)
		}
		if time.Since(lastBucket) >= bucketInterval {
			lastBucket = time.Now()
			s.maintain(ctx)
		} else if s.o.Bucket != nil {
			if err := s.Ship(ctx); err != nil && ctx.Err() == nil {
				s.logger.Warn("ship blocks", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// maintain runs the slow passes of Run.
func (s *Store) maintain(ctx context.Context) {
	if s.o.Bucket != nil {
		if err := s.Ship(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("ship blocks", "err", err)
		}
		if err := s.SyncBucket(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("list bucket blocks", "err", err)
		}
		if s.o.Compact {
			if err := s.Compact(ctx); err != nil && ctx.Err() == nil {
				s.logger.Warn("compact bucket", "err", err)
			}
		}
	}
	if err := s.ApplyRetention(ctx); err != nil && ctx.Err() == nil {
		s.logger.Warn("apply retention", "err", err)
	}
}

// CutBlock writes every trace of the head into a block now, whether or not
// a cut is due.
func (s *Store) CutBlock(ctx context.Context) error {
	_, err := s.cut(ctx, true)
	return err
}

// cut writes the traces due into a new block; all of them when all is
// set. It reports whether it wrote a block.
func (s *Store) cut(ctx context.Context, all bool) (bool, error) {
	s.passMu.Lock()
	defer s.passMu.Unlock()
	if s.closed.Load() {
		return false, errors.New("cut head: store closed")
	}
	now := s.now()

	// Choose the traces while no span is being logged, and start a new
	// WAL segment: everything logged from here on goes there.
	s.walMu.Lock()
	s.headMu.Lock()
	var ids []traces.TraceID
	if all {
		for id := range s.head.traces {
			ids = append(ids, id)
		}
	} else {
		ids = s.dueLocked(now)
	}
	if len(ids) == 0 {
		s.headMu.Unlock()
		s.walMu.Unlock()
		return false, nil
	}
	upTo := s.head.seq
	cutting := make([]*headTrace, 0, len(ids))
	n := 0
	for _, id := range ids {
		t := s.head.traces[id]
		delete(s.head.traces, id)
		cutting = append(cutting, t)
		n += len(t.spans)
	}
	s.head.cutting = cutting
	s.head.spans -= n
	s.headMu.Unlock()
	err := s.syncWALLocked()
	if err == nil {
		var seg int
		seg, err = s.wal.NextSegmentSync()
		s.curSeg, s.syncedSeg = seg, seg
	}
	s.walMu.Unlock()
	if err != nil {
		s.uncut()
		return false, fmt.Errorf("cut head: %w", err)
	}

	spans := make([]traces.Span, 0, n)
	for _, t := range cutting {
		spans = append(spans, t.spans...)
	}
	id := ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy())
	start := time.Now()
	meta, err := spanblock.Write(s.blocksDir(), id, spans, spanblock.WriteOptions{})
	if err == nil {
		err = syncDir(filepath.Join(s.blocksDir(), id.String()))
	}
	var blk *spanblock.Block
	if err == nil {
		blk, err = spanblock.Open(filepath.Join(s.blocksDir(), id.String()))
	}
	if err != nil {
		os.RemoveAll(filepath.Join(s.blocksDir(), id.String()))
		s.uncut()
		return false, fmt.Errorf("cut head: write block %s: %w", id, err)
	}
	s.blocksMu.Lock()
	s.local[id] = &blockEntry{id: id, meta: meta, dir: blk.Dir(), blk: blk, local: true}
	s.recomputeCoverLocked()
	s.blocksMu.Unlock()
	s.headMu.Lock()
	s.head.cutting = nil
	s.headMu.Unlock()
	s.metrics.blocksCut.Inc()
	s.logger.Debug("head cut", "block", id, "traces", len(ids), "spans", n, "duration", time.Since(start))

	// Record the cut, so that replay does not bring the spans back, and
	// drop the segments that no span of the head needs.
	s.walMu.Lock()
	defer s.walMu.Unlock()
	if _, err := s.logRecord(cutRecord(upTo, ids)); err != nil {
		return true, fmt.Errorf("cut head: %w", err)
	}
	s.headMu.RLock()
	keep := s.curSeg
	for _, t := range s.head.traces {
		keep = min(keep, t.minSeg)
	}
	s.headMu.RUnlock()
	if err := s.wal.Truncate(keep); err != nil {
		return true, fmt.Errorf("cut head: truncate WAL before segment %d: %w", keep, err)
	}
	return true, nil
}

// uncut puts the traces of a failed cut back into the head.
func (s *Store) uncut() {
	s.headMu.Lock()
	defer s.headMu.Unlock()
	for _, t := range s.head.cutting {
		id := t.spans[0].TraceID
		if cur := s.head.traces[id]; cur != nil {
			// Spans arrived meanwhile: they are newer.
			for i := range cur.spans {
				if !t.has(keyOf(&cur.spans[i])) {
					t.add(cur.spans[i], cur.seqs[i])
				}
			}
			t.last = cur.last
			s.head.spans -= len(cur.spans)
		}
		s.head.traces[id] = t
		s.head.spans += len(t.spans)
	}
	s.head.cutting = nil
}

// dueLocked returns the traces a cut writes now, none when no cut is due.
func (s *Store) dueLocked(now time.Time) []traces.TraceID {
	oldest := now
	for _, t := range s.head.traces {
		if t.first.Before(oldest) {
			oldest = t.first
		}
	}
	full := s.head.spans >= s.o.MaxBlockSpans
	if !full && now.Sub(oldest) < s.o.MaxBlockDuration {
		return nil
	}
	var ids []traces.TraceID
	left := s.head.spans
	for id, t := range s.head.traces {
		if now.Sub(t.last) >= s.o.TraceIdle || now.Sub(t.first) >= s.o.MaxBlockDuration {
			ids = append(ids, id)
			left -= len(t.spans)
		}
	}
	if full && left > s.o.MaxBlockSpans/2 {
		ids = ids[:0]
		for id := range s.head.traces {
			ids = append(ids, id)
		}
	}
	return ids
}

// syncDir fsyncs every file under dir, dir itself and its parent, so that
// a block is on disk before the WAL segments holding its spans go.
func syncDir(dir string) error {
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return fsyncFile(p)
	})
	if err != nil {
		return err
	}
	return fsyncFile(filepath.Dir(dir))
}

func removeContents(dir string) error {
	es, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range es {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
