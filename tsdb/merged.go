package tsdb

import (
	"math"

	"github.com/prometheus/prometheus/storage"
)

// Merged reads the local TSDB and, for the time it no longer holds, the
// blocks in the bucket. The local TSDB covers a contiguous range up to now
// (the head and the blocks before it); bucket blocks are read only before
// that range, so recent queries never download what is on local disk. A
// failing bucket fails the queries that need it rather than answering them
// with a silent gap.
type Merged struct {
	*DB
	Bucket storage.SampleAndChunkQueryable
}

// localStart is the start of the contiguous time range the local TSDB holds
// up to the head.
func (m Merged) localStart() int64 {
	start := m.Head().MinTime()
	blocks := m.Blocks()
	for i := len(blocks) - 1; i >= 0; i-- { // sorted by MinTime
		meta := blocks[i].Meta()
		if start != math.MaxInt64 && meta.MaxTime < start {
			break // a gap: earlier local blocks do not make the range contiguous
		}
		start = min(start, meta.MinTime)
	}
	return start
}

// Querier implements storage.Queryable.
func (m Merged) Querier(mint, maxt int64) (storage.Querier, error) {
	local, err := m.DB.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	start := m.localStart()
	if mint >= start {
		return local, nil
	}
	bucket, err := m.Bucket.Querier(mint, min(maxt, start-1))
	if err != nil {
		local.Close()
		return nil, err
	}
	return storage.NewMergeQuerier([]storage.Querier{local, bucket}, nil, storage.ChainedSeriesMerge), nil
}

// ChunkQuerier implements storage.ChunkQueryable.
func (m Merged) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	local, err := m.DB.ChunkQuerier(mint, maxt)
	if err != nil {
		return nil, err
	}
	start := m.localStart()
	if mint >= start {
		return local, nil
	}
	bucket, err := m.Bucket.ChunkQuerier(mint, min(maxt, start-1))
	if err != nil {
		local.Close()
		return nil, err
	}
	return storage.NewMergeChunkQuerier([]storage.ChunkQuerier{local, bucket}, nil, storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge)), nil
}
