// Package walreplay replays a Prometheus write-ahead log (tsdb/wlog) record
// by record, for the stores that keep their own WAL (spans, exemplars), and
// repairs a corrupted tail as the TSDB does.
package walreplay

import (
	"fmt"

	"github.com/prometheus/prometheus/tsdb/wlog"
)

// Replay calls fn with every record of w, in order, and the segment that
// holds it. A record that cannot be read, or that fn refuses with an
// error, ends the replay: w is then repaired by dropping that record and
// everything after it, and Replay returns the corruption (so that the
// caller can count and log it) with a nil error. Other errors (a segment
// that does not open, a failed repair) are returned as err.
func Replay(w *wlog.WL, fn func(rec []byte, segment int) error) (corruption, err error) {
	first, last, err := wlog.Segments(w.Dir())
	if err != nil {
		return nil, fmt.Errorf("list WAL segments: %w", err)
	}
	for i := first; i >= 0 && i <= last; i++ {
		seg, err := wlog.OpenReadSegment(wlog.SegmentName(w.Dir(), i))
		if err != nil {
			return nil, fmt.Errorf("open WAL segment %d: %w", i, err)
		}
		sr := wlog.NewSegmentBufReader(seg)
		r := wlog.NewReader(sr)
		var cerr error
		for r.Next() {
			if err := fn(r.Record(), i); err != nil {
				cerr = &wlog.CorruptionErr{Err: err, Dir: w.Dir(), Segment: r.Segment(), Offset: r.Offset()}
				break
			}
		}
		if cerr == nil {
			cerr = r.Err()
		}
		sr.Close()
		if cerr != nil {
			if err := w.Repair(cerr); err != nil {
				return cerr, fmt.Errorf("repair WAL: %w", err)
			}
			return cerr, nil
		}
	}
	return nil, nil
}
