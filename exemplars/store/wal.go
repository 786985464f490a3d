package store

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/meshlens/meshlens/internal/walreplay"
)

// A WAL record is
//
//	byte 1, 8 bytes sequence number, uvarint count, then per exemplar:
//	series labels, varint timestamp, 8 bytes float64 value, labels
//
// little-endian, labels as in blocks.
const recExemplars = 1

func encodeRecord(es []Exemplar) []byte {
	b := make([]byte, 9, 16+len(es)*128)
	b[0] = recExemplars
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = appendLabels(b, e.Series)
		b = binary.AppendVarint(b, e.Ts)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Value))
		b = appendLabels(b, e.Labels)
	}
	return b
}

func setSeq(rec []byte, seq uint64) { binary.LittleEndian.PutUint64(rec[1:], seq) }

// decodeRecord decodes a WAL record.
func decodeRecord(b []byte) (seq uint64, es []Exemplar, err error) {
	if len(b) < 9 || b[0] != recExemplars {
		return 0, nil, fmt.Errorf("%w: not an exemplar record", errCorrupt)
	}
	seq = binary.LittleEndian.Uint64(b[1:])
	d := decoder{b: b[9:]}
	n := d.count(11)
	es = make([]Exemplar, 0, n)
	for range n {
		var e Exemplar
		e.Series = d.labels()
		e.Ts = d.varint()
		e.Value = d.float()
		e.Labels = d.labels()
		e.HasTs = true
		if d.err != nil {
			return 0, nil, d.err
		}
		es = append(es, e)
	}
	if len(d.b) > 0 {
		return 0, nil, fmt.Errorf("%w: %d bytes after the record", errCorrupt, len(d.b))
	}
	return seq, es, nil
}

// replay rebuilds the head from the WAL, leaving out what the blocks cut
// here hold. A record that does not read ends the replay; the WAL is
// repaired by dropping it and what follows.
func (s *Store) replay() error {
	cutSeq := map[int64]uint64{}
	for _, e := range s.blocks {
		cutSeq[e.meta.Period] = max(cutSeq[e.meta.Period], e.walSeq)
	}
	minT := s.o.Now().Add(-s.o.Retention).UnixMilli()
	records, kept := 0, 0
	corruption, err := walreplay.Replay(s.wal, func(b []byte, segment int) error {
		seq, es, err := decodeRecord(b)
		if err != nil {
			return err
		}
		records++
		s.seq = max(s.seq, seq)
		for _, e := range es {
			if e.Ts < minT || cutSeq[s.periodOf(e.Ts)] >= seq {
				continue
			}
			if s.insertLocked(e.Series, sample{t: e.Ts, v: e.Value, labels: e.Labels}, segment) {
				kept++
			}
		}
		return nil
	})
	if corruption != nil {
		s.metrics.walCorruptions.Inc()
		s.logger.Warn("exemplar WAL corrupted, repaired", "err", corruption)
	}
	if err != nil {
		return err
	}
	// The sequence continues after the blocks' too: a WAL lost with its
	// disk must not make new records look cut.
	for _, q := range cutSeq {
		s.seq = max(s.seq, q)
	}
	s.logger.Debug("exemplar WAL replayed", "records", records, "exemplars", kept)
	return nil
}
