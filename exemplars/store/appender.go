package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Appendable puts the store in front of next, as a stage of the ingest
// chain: everything goes on to next, and once next commits, the
// exemplars that carry a trace id are stored too. A commit the store
// fails to log returns its error, so the sender retries (next rejects the
// samples it holds as duplicates; the store does the same with
// exemplars).
func (s *Store) Appendable(next storage.AppendableV2) storage.AppendableV2 {
	return appendable{s: s, next: next}
}

type appendable struct {
	s    *Store
	next storage.AppendableV2
}

func (a appendable) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return &appender{s: a.s, next: a.next.AppenderV2(ctx)}
}

type appender struct {
	s       *Store
	next    storage.AppenderV2
	pending []Exemplar
}

var _ storage.ExemplarAppenderV2 = (*appender)(nil)

func (a *appender) keep(ls labels.Labels, es []exemplar.Exemplar) {
	for _, e := range es {
		if a.s.traceID(e.Labels) {
			a.pending = append(a.pending, Exemplar{Series: ls, Exemplar: e})
		}
	}
}

func (a *appender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	ref, err := a.next.Append(ref, ls, st, t, v, h, fh, opts)
	var pe *storage.AppendPartialError
	if err == nil || errors.As(err, &pe) {
		a.keep(ls, opts.Exemplars)
	}
	return ref, err
}

// AppendExemplars passes the exemplars to next and keeps those with a
// trace id whatever the TSDB's ring says of them: the ring refuses an
// exemplar older than the series' latest, or of a series it does not
// hold yet, which the store keeps.
func (a *appender) AppendExemplars(ref storage.SeriesRef, ls labels.Labels, es []exemplar.Exemplar) (storage.SeriesRef, error) {
	ea, ok := a.next.(storage.ExemplarAppenderV2)
	if !ok {
		return 0, fmt.Errorf("appender %T takes no exemplars", a.next)
	}
	ref, err := ea.AppendExemplars(ref, ls, es)
	a.keep(ls, es)
	return ref, err
}

func (a *appender) Commit() error {
	if err := a.next.Commit(); err != nil {
		a.pending = nil
		return err
	}
	if len(a.pending) == 0 {
		return nil
	}
	_, err := a.s.Append(a.pending)
	a.pending = nil
	return err
}

func (a *appender) Rollback() error {
	a.pending = nil
	return a.next.Rollback()
}
