// Package store keeps the exemplars that carry a trace id for as long as
// the spans they lead to: through restarts (a WAL), in blocks cut per
// period of their timestamps, shipped to the bucket next to the metric and
// trace blocks (under exemplars/<ULID>/) and deleted after the retention.
// It answers Prometheus's exemplar queries and "the highest exemplars of
// these series in this range", which the drill-down asks.
package store

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/wlog"
	"github.com/prometheus/prometheus/util/compression"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
)

// Defaults of Options.
const (
	DefaultPrefix        = "exemplars"
	DefaultRetention     = 7 * 24 * time.Hour
	DefaultBlockDuration = 2 * time.Hour
	DefaultCutDelay      = 30 * time.Minute
)

// DefaultTraceIDLabels are the exemplar labels that hold a trace id, as
// Prometheus clients and OpenTelemetry name it.
var DefaultTraceIDLabels = []string{"trace_id", "traceId", "traceID"}

// Options configure a Store. Zero values mean what their comments say.
type Options struct {
	// Dir holds Dir/wal and Dir/blocks/<ULID>. Required.
	Dir string
	// Bucket receives the blocks under Prefix/<ULID>/ and gives back those
	// the local disk lacks; nil keeps blocks only on the local disk.
	Bucket objstore.Bucket
	// Prefix is the bucket folder of exemplar blocks; "" means "exemplars".
	Prefix string
	// Retention is how long exemplars are kept by their timestamp; zero
	// means 7 days (the span store's default).
	Retention time.Duration
	// BlockDuration is the period of exemplar timestamps one block holds;
	// zero means 2h.
	BlockDuration time.Duration
	// CutDelay is how long after a period ends its exemplars are written
	// into a block; later ones go into another block. Zero means 30m.
	CutDelay time.Duration
	// TraceIDLabels are the exemplar labels whose presence makes an
	// exemplar kept; nil means DefaultTraceIDLabels.
	TraceIDLabels []string
	// DeleteFromBucket makes the retention delete blocks in the bucket as
	// well: one node per bucket prefix owns that.
	DeleteFromBucket bool
	// Logger gets debug lines and warnings; nil discards.
	Logger *slog.Logger
	// Metrics gets the meshlens_exemplar_store_* metrics; nil means a
	// private set.
	Metrics *metrics.Set
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
}

// Store is the exemplar store.
type Store struct {
	o       Options
	logger  *slog.Logger
	metrics *storeMetrics

	// mu guards the WAL, the head, seq and curSeg.
	mu  sync.Mutex
	wal *wlog.WL
	seq uint64
	// curSeg is the WAL segment records go to, or one before it when wlog
	// moved on to a new segment by itself: a head period that starts
	// there keeps at worst a segment more than it needs.
	curSeg int
	head   map[int64]*period // by period start

	// blocksMu guards blocks; passMu serialises cuts, shipping and
	// retention.
	blocksMu sync.RWMutex
	blocks   map[ulid.ULID]*blockEntry
	passMu   sync.Mutex
}

// period is the head's exemplars of one block period.
type period struct {
	series   map[uint64][]*series // by labels hash
	n        int
	firstSeg int // the first WAL segment holding one of them
}

type blockEntry struct {
	meta    *Meta
	dir     string
	r       *blockReader
	shipped bool
	walSeq  uint64 // the last WAL record it holds; 0 for a downloaded block
}

const shippedMarker = "shipped"

// Open opens the store in o.Dir, replays its WAL and opens its blocks.
func Open(o Options) (*Store, error) {
	if o.Dir == "" {
		return nil, errors.New("exemplar store: no directory")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.BlockDuration <= 0 {
		o.BlockDuration = DefaultBlockDuration
	}
	if o.CutDelay <= 0 {
		o.CutDelay = DefaultCutDelay
	}
	if o.TraceIDLabels == nil {
		o.TraceIDLabels = DefaultTraceIDLabels
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
	s := &Store{o: o, logger: o.Logger, head: map[int64]*period{}, blocks: map[ulid.ULID]*blockEntry{}}
	s.metrics = newStoreMetrics(s)
	fail := func(err error) (*Store, error) {
		if s.wal != nil {
			s.wal.Close()
		}
		s.closeBlocks()
		s.metrics.unregister()
		return nil, fmt.Errorf("exemplar store: %w", err)
	}
	if err := os.MkdirAll(s.blocksDir(), 0o755); err != nil {
		return fail(err)
	}
	if err := s.openBlocks(); err != nil {
		return fail(err)
	}
	w, err := wlog.NewSize(s.logger, nil, filepath.Join(o.Dir, "wal"), 32<<20, compression.Snappy)
	if err != nil {
		return fail(fmt.Errorf("open WAL: %w", err))
	}
	s.wal = w
	if err := s.replay(); err != nil {
		return fail(err)
	}
	if s.curSeg, _, err = w.LastSegmentAndOffset(); err != nil {
		return fail(fmt.Errorf("open WAL: %w", err))
	}
	return s, nil
}

func (s *Store) blocksDir() string { return filepath.Join(s.o.Dir, "blocks") }

// openBlocks opens the blocks in the blocks directory; leftovers of an
// interrupted write or download are removed.
func (s *Store) openBlocks() error {
	des, err := os.ReadDir(s.blocksDir())
	if err != nil {
		return err
	}
	for _, de := range des {
		dir := filepath.Join(s.blocksDir(), de.Name())
		id, err := ulid.ParseStrict(de.Name())
		if err != nil {
			if strings.HasSuffix(de.Name(), ".tmp") {
				os.RemoveAll(dir)
			}
			continue
		}
		e, err := openEntry(dir)
		if err != nil {
			// A block that does not open is moved aside, not deleted: the
			// WAL may no longer hold its exemplars.
			s.logger.Warn("exemplar block unreadable, moved aside", "block", id, "err", err)
			os.Rename(dir, dir+".corrupt")
			continue
		}
		s.blocks[id] = e
	}
	return nil
}

func openEntry(dir string) (*blockEntry, error) {
	m, err := readMeta(dir)
	if err != nil {
		return nil, err
	}
	r, err := openBlock(dir, m)
	if err != nil {
		return nil, err
	}
	e := &blockEntry{meta: m, dir: dir, r: r}
	_, err = os.Stat(filepath.Join(dir, shippedMarker))
	e.shipped = err == nil
	if b, err := os.ReadFile(filepath.Join(dir, walSeqFile)); err == nil {
		e.walSeq, _ = strconv.ParseUint(string(b), 10, 64)
	}
	return e, nil
}

func (s *Store) closeBlocks() {
	for _, e := range s.blocks {
		e.r.Close()
	}
}

// Close closes the WAL and the blocks; the WAL holds every exemplar not
// yet in a block.
func (s *Store) Close() error {
	s.passMu.Lock()
	defer s.passMu.Unlock()
	s.mu.Lock()
	err := s.wal.Close()
	s.mu.Unlock()
	s.blocksMu.Lock()
	s.closeBlocks()
	s.blocks = map[ulid.ULID]*blockEntry{}
	s.blocksMu.Unlock()
	s.metrics.unregister()
	return err
}

// traceID reports whether an exemplar's labels carry a trace id.
func (s *Store) traceID(ls labels.Labels) bool {
	for _, n := range s.o.TraceIDLabels {
		if ls.Get(n) != "" {
			return true
		}
	}
	return false
}

// Exemplar is one exemplar of a series.
type Exemplar struct {
	Series labels.Labels
	exemplar.Exemplar
}

// Append stores the exemplars that carry a trace id and are within the
// retention, and returns how many it stored; the others are left to the
// TSDB's ring. An exemplar already stored (same series, time, value and
// labels, as a retried request sends it) is not stored twice.
func (s *Store) Append(es []Exemplar) (int, error) {
	minT := s.o.Now().Add(-s.o.Retention).UnixMilli()
	keep := es[:0:0]
	for _, e := range es {
		if e.Ts >= minT && s.traceID(e.Labels) {
			keep = append(keep, e)
		}
	}
	if len(keep) == 0 {
		return 0, nil
	}
	rec := encodeRecord(keep)
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.seq + 1
	setSeq(rec, seq)
	if err := s.wal.Log(rec); err != nil {
		return 0, fmt.Errorf("exemplar store: write WAL: %w", err)
	}
	s.seq = seq
	n := 0
	for _, e := range keep {
		if s.insertLocked(e.Series, sample{t: e.Ts, v: e.Value, labels: e.Labels}, s.curSeg) {
			n++
		}
	}
	s.metrics.appended.Add(n)
	return n, nil
}

func (s *Store) periodOf(t int64) int64 {
	d := s.o.BlockDuration.Milliseconds()
	p := t - t%d
	if t < 0 && t%d != 0 {
		p -= d
	}
	return p
}

// insertLocked adds one exemplar to the head unless the series holds it
// already. The caller holds s.mu.
func (s *Store) insertLocked(lset labels.Labels, e sample, seg int) bool {
	start := s.periodOf(e.t)
	p := s.head[start]
	if p == nil {
		p = &period{series: map[uint64][]*series{}, firstSeg: seg}
		s.head[start] = p
	}
	h := lset.Hash()
	var sr *series
	for _, c := range p.series[h] {
		if labels.Equal(c.lset, lset) {
			sr = c
			break
		}
	}
	if sr == nil {
		sr = &series{lset: lset.Copy()}
		p.series[h] = append(p.series[h], sr)
	}
	// Retries resend the latest exemplars: look for a copy among them.
	for i := len(sr.ex) - 1; i >= 0 && i >= len(sr.ex)-16; i-- {
		if o := sr.ex[i]; o.t == e.t && o.v == e.v && labels.Equal(o.labels, e.labels) {
			return false
		}
	}
	e.labels = e.labels.Copy()
	sr.ex = append(sr.ex, e)
	p.n++
	return true
}

// Run cuts, ships and applies the retention every minute until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	if err := s.SyncBucket(ctx); err != nil {
		s.logger.Warn("exemplar blocks in the bucket not read", "err", err)
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.Maintain(ctx, false); err != nil && ctx.Err() == nil {
			s.logger.Warn("exemplar store maintenance", "err", err)
		}
	}
}

// Maintain cuts the periods that are due (every period with all), ships
// the blocks not shipped and deletes what the retention no longer keeps.
func (s *Store) Maintain(ctx context.Context, all bool) error {
	s.passMu.Lock()
	defer s.passMu.Unlock()
	return errors.Join(s.cut(all), s.ship(ctx), s.applyRetention(ctx))
}

// cut writes the due periods of the head into blocks and truncates the
// WAL before the oldest segment the head still needs.
func (s *Store) cut(all bool) error {
	now := s.o.Now()
	dueBefore := now.Add(-s.o.CutDelay).UnixMilli()
	s.mu.Lock()
	seq := s.seq
	type due struct {
		start int64
		p     *period
	}
	var todo []due
	for start, p := range s.head {
		if all || start+s.o.BlockDuration.Milliseconds() <= dueBefore {
			todo = append(todo, due{start, p})
			delete(s.head, start)
		}
	}
	if len(todo) > 0 {
		// Later records start a new segment, so the old ones can go.
		if seg, err := s.wal.NextSegment(); err != nil {
			s.logger.Warn("exemplar WAL: new segment", "err", err)
		} else {
			s.curSeg = seg
		}
	}
	s.mu.Unlock()

	var errs []error
	for _, d := range todo {
		var ss []*series
		for _, c := range d.p.series {
			ss = append(ss, c...)
		}
		id := ulid.MustNew(ulid.Timestamp(now), crand.Reader)
		m, err := writeBlock(s.blocksDir(), id, d.start, seq, ss)
		var e *blockEntry
		if err == nil {
			e, err = openEntry(filepath.Join(s.blocksDir(), id.String()))
		}
		if err != nil {
			// Put the exemplars back; the next cut tries again.
			s.metrics.cutFailures.Inc()
			errs = append(errs, fmt.Errorf("cut exemplar block: %w", err))
			s.mu.Lock()
			for _, sr := range ss {
				for _, ex := range sr.ex {
					s.insertLocked(sr.lset, ex, d.p.firstSeg)
				}
			}
			s.mu.Unlock()
			continue
		}
		s.metrics.blocksCut.Inc()
		s.logger.Debug("exemplar block cut", "block", id, "exemplars", m.Exemplars, "series", m.Series)
		s.blocksMu.Lock()
		s.blocks[id] = e
		s.blocksMu.Unlock()
	}
	if len(todo) > 0 {
		s.mu.Lock()
		keep := s.curSeg
		for _, p := range s.head {
			keep = min(keep, p.firstSeg)
		}
		err := s.wal.Truncate(keep)
		s.mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("truncate exemplar WAL: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (s *Store) retryOptions() block.RetryOptions {
	return block.RetryOptions{Attempts: 5, MinBackoff: time.Second, MaxBackoff: 30 * time.Second, Logger: s.logger}
}

// ship uploads the blocks not shipped yet, oldest first.
func (s *Store) ship(ctx context.Context) error {
	if s.o.Bucket == nil {
		return nil
	}
	s.blocksMu.RLock()
	var todo []*blockEntry
	for _, e := range s.blocks {
		if !e.shipped {
			todo = append(todo, e)
		}
	}
	s.blocksMu.RUnlock()
	slices.SortFunc(todo, func(a, b *blockEntry) int { return a.meta.ULID.Compare(b.meta.ULID) })
	var errs []error
	for _, e := range todo {
		metaJSON, err := os.ReadFile(filepath.Join(e.dir, block.MetaFilename))
		if err == nil {
			err = block.Upload(ctx, s.o.Bucket, e.dir, s.bucketPrefix(e.meta.ULID), []string{dataFile}, metaJSON, s.retryOptions())
		}
		if err != nil {
			s.metrics.shipFailures.Inc()
			errs = append(errs, fmt.Errorf("ship exemplar block %s: %w", e.meta.ULID, err))
			continue
		}
		if err := os.WriteFile(filepath.Join(e.dir, shippedMarker), nil, 0o644); err != nil {
			errs = append(errs, err)
		}
		s.blocksMu.Lock()
		e.shipped = true
		s.blocksMu.Unlock()
		s.metrics.blocksShipped.Inc()
	}
	return errors.Join(errs...)
}

func (s *Store) bucketPrefix(id ulid.ULID) string { return path.Join(s.o.Prefix, id.String()) }

// SyncBucket downloads the blocks in the bucket that the local disk lacks
// and the retention keeps (those another node or an earlier disk
// shipped).
func (s *Store) SyncBucket(ctx context.Context) error {
	if s.o.Bucket == nil {
		return nil
	}
	s.passMu.Lock()
	defer s.passMu.Unlock()
	ids, err := block.IDs(ctx, s.o.Bucket, s.o.Prefix)
	if err != nil {
		return fmt.Errorf("list exemplar blocks: %w", err)
	}
	minT := s.o.Now().Add(-s.o.Retention).UnixMilli()
	var errs []error
	for _, id := range ids {
		s.blocksMu.RLock()
		_, ok := s.blocks[id]
		s.blocksMu.RUnlock()
		if ok {
			continue
		}
		tmp := filepath.Join(s.blocksDir(), id.String()+".tmp")
		if err := block.DownloadDir(ctx, s.o.Bucket, s.bucketPrefix(id), tmp); err != nil {
			os.RemoveAll(tmp)
			if errors.Is(err, block.ErrNotFound) {
				continue // being uploaded or deleted
			}
			errs = append(errs, fmt.Errorf("download exemplar block %s: %w", id, err))
			continue
		}
		m, err := readMeta(tmp)
		if err == nil && m.ULID != id {
			err = fmt.Errorf("%w: names block %s", block.ErrInvalidMeta, m.ULID)
		}
		if err != nil || m.MaxTime < minT {
			os.RemoveAll(tmp)
			if err != nil {
				errs = append(errs, fmt.Errorf("exemplar block %s: %w", id, err))
			}
			continue
		}
		os.WriteFile(filepath.Join(tmp, shippedMarker), nil, 0o644)
		dir := filepath.Join(s.blocksDir(), id.String())
		if err := os.Rename(tmp, dir); err != nil {
			errs = append(errs, err)
			continue
		}
		e, err := openEntry(dir)
		if err != nil {
			os.RemoveAll(dir)
			errs = append(errs, fmt.Errorf("exemplar block %s: %w", id, err))
			continue
		}
		s.blocksMu.Lock()
		s.blocks[id] = e
		s.blocksMu.Unlock()
		s.metrics.blocksDownloaded.Inc()
	}
	return errors.Join(errs...)
}

// applyRetention deletes the blocks whose exemplars are all older than
// the retention (from the bucket too with DeleteFromBucket) and drops such
// exemplars from the head.
func (s *Store) applyRetention(ctx context.Context) error {
	minT := s.o.Now().Add(-s.o.Retention).UnixMilli()
	s.mu.Lock()
	for start, p := range s.head {
		if start+s.o.BlockDuration.Milliseconds() <= minT {
			s.metrics.dropped.Add(p.n)
			delete(s.head, start)
		}
	}
	s.mu.Unlock()
	s.blocksMu.Lock()
	var old []*blockEntry
	for id, e := range s.blocks {
		if e.meta.MaxTime < minT {
			old = append(old, e)
			delete(s.blocks, id)
		}
	}
	s.blocksMu.Unlock()
	var errs []error
	for _, e := range old {
		e.r.Close()
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, err)
		}
		s.metrics.blocksDeleted.Inc()
	}
	if s.o.Bucket != nil && s.o.DeleteFromBucket {
		// A block's ULID is the time it was cut, after its last exemplar.
		ids, err := block.IDs(ctx, s.o.Bucket, s.o.Prefix)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, id := range ids {
			if int64(id.Time()) < minT {
				if err := block.Delete(ctx, s.o.Bucket, s.bucketPrefix(id)); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}
