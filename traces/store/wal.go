package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/prometheus/prometheus/tsdb/wlog"

	"github.com/meshlens/meshlens/internal/walreplay"
	"github.com/meshlens/meshlens/traces"
)

// walSegmentSize is the size of a WAL segment. A cut starts a new segment,
// so segments are rarely full; the size bounds what one segment holds at
// high rates, and with it what a truncation can free.
const walSegmentSize = 64 << 20

// logRecord writes rec to the WAL, numbering it, and lets insert put its
// spans into the head while s.walMu is held, so that the head holds every
// record up to head.seq. It returns the record's sequence number.
// The caller holds s.walMu.
func (s *Store) logRecord(rec []byte) (uint64, error) {
	seq := s.seq + 1
	setSeq(rec, seq)
	if err := s.wal.Log(rec); err != nil {
		return 0, fmt.Errorf("write WAL record: %w", err)
	}
	s.seq = seq
	return seq, nil
}

// commit returns once the WAL record seq is on disk. Concurrent callers
// share one fsync: whoever holds syncMu syncs every record logged so far.
func (s *Store) commit(seq uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.synced.Load() >= seq {
		return nil
	}
	s.walMu.Lock()
	defer s.walMu.Unlock()
	return s.syncWALLocked()
}

// syncWALLocked fsyncs the WAL up to the last logged record. wlog fsyncs a
// segment it leaves for the next one in the background, so the segments
// left since the last sync are fsynced here too. The caller holds s.walMu.
func (s *Store) syncWALLocked() error {
	last := s.seq
	start := time.Now()
	seg, _, err := s.wal.LastSegmentAndOffset()
	if err != nil {
		return fmt.Errorf("sync WAL: %w", err)
	}
	for i := s.syncedSeg; i < seg; i++ {
		if err := fsyncFile(wlog.SegmentName(s.wal.Dir(), i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sync WAL segment %d: %w", i, err)
		}
	}
	if err := s.wal.Sync(); err != nil {
		return fmt.Errorf("sync WAL: %w", err)
	}
	s.metrics.walFsync.UpdateDuration(start)
	s.syncedSeg, s.curSeg = seg, max(s.curSeg, seg)
	s.synced.Store(last)
	return nil
}

func fsyncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// replay rebuilds the head from the WAL. A record that cannot be read or
// decoded ends the replay; the WAL is then repaired by dropping it and
// everything after it, so the spans of every record before it are kept.
func (s *Store) replay() error {
	now := s.now()
	records, spans := 0, 0
	corruption, err := walreplay.Replay(s.wal, func(b []byte, segment int) error {
		rec, err := decodeRecord(b)
		if err != nil {
			return err
		}
		records++
		s.seq = max(s.seq, rec.seq)
		switch rec.typ {
		case recSpans:
			for _, sp := range rec.spans {
				if s.insertLocked(sp, rec.seq, segment, now) {
					spans++
				}
			}
		case recCut:
			s.replayCut(rec)
		}
		return nil
	})
	if corruption != nil {
		s.metrics.walCorruptions.Inc()
		s.logger.Warn("WAL corrupted, repaired", "err", corruption)
	}
	if err != nil {
		return err
	}
	s.head.seq = s.seq
	s.synced.Store(s.seq)
	s.logger.Debug("WAL replayed", "records", records, "spans", spans, "traces", len(s.head.traces))
	return nil
}

// replayCut drops from the head the spans that a cut wrote into a block.
func (s *Store) replayCut(rec record) {
	for _, id := range rec.traces {
		t, ok := s.head.traces[id]
		if !ok {
			continue
		}
		s.head.spans -= len(t.spans)
		n := t.keep(func(_ *traces.Span, seq uint64) bool { return seq > rec.seq })
		if n == nil {
			delete(s.head.traces, id)
			continue
		}
		s.head.traces[id] = n
		s.head.spans += len(n.spans)
	}
}
