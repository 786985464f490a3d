package store

import (
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Merge returns an ExemplarQueryable answering with the exemplars of every
// one of qs, per series, each exemplar once: the TSDB's ring (recent
// exemplars, with or without a trace id) and the store (those with a
// trace id, for the retention).
func Merge(qs ...storage.ExemplarQueryable) storage.ExemplarQueryable {
	return merged(qs)
}

type merged []storage.ExemplarQueryable

func (m merged) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	var qs mergedQuerier
	for _, q := range m {
		eq, err := q.ExemplarQuerier(ctx)
		if err != nil {
			return nil, err
		}
		qs = append(qs, eq)
	}
	return qs, nil
}

type mergedQuerier []storage.ExemplarQuerier

func (m mergedQuerier) Select(start, end int64, sets ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	by := map[uint64]int{}
	var out []exemplar.QueryResult
	for _, q := range m {
		rs, err := q.Select(start, end, sets...)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			h := r.SeriesLabels.Hash()
			i, ok := by[h]
			if !ok {
				by[h] = len(out)
				out = append(out, r)
				continue
			}
			out[i].Exemplars = append(out[i].Exemplars, r.Exemplars...)
		}
	}
	for i := range out {
		es := out[i].Exemplars
		slices.SortFunc(es, exemplar.Compare)
		out[i].Exemplars = slices.CompactFunc(es, func(a, b exemplar.Exemplar) bool { return a.Equals(b) })
	}
	slices.SortFunc(out, func(a, b exemplar.QueryResult) int { return labels.Compare(a.SeriesLabels, b.SeriesLabels) })
	return out, nil
}
