package store

import (
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
)

// storeMetrics are the store's meshlens_traces_* metrics.
type storeMetrics struct {
	set   *metrics.Set
	names []string

	appended, refused, tooOld              *metrics.Counter
	walFsync                               *metrics.Histogram
	walCorruptions                         *metrics.Counter
	blocksCut, blocksShipped, shipFailures *metrics.Counter
	blocksCompacted, blocksDeleted         *metrics.Counter
	blocksDownloaded, cacheEvictions       *metrics.Counter
	cacheBytes, bucketBlocks               atomic.Int64
}

func newStoreMetrics(s *Store) *storeMetrics {
	m := &storeMetrics{set: s.o.Metrics}
	counter := func(name string) *metrics.Counter {
		m.names = append(m.names, name)
		return m.set.GetOrCreateCounter(name)
	}
	gauge := func(name string, f func() float64) {
		m.names = append(m.names, name)
		m.set.GetOrCreateGauge(name, f)
	}
	m.appended = counter("meshlens_traces_spans_appended_total")
	m.refused = counter(`meshlens_traces_spans_refused_total{reason="too_many_spans_per_trace"}`)
	m.tooOld = counter(`meshlens_traces_spans_refused_total{reason="older_than_retention"}`)
	m.walCorruptions = counter("meshlens_traces_wal_corruptions_total")
	m.blocksCut = counter("meshlens_traces_blocks_cut_total")
	m.blocksShipped = counter("meshlens_traces_blocks_shipped_total")
	m.shipFailures = counter("meshlens_traces_block_ship_failures_total")
	m.blocksCompacted = counter("meshlens_traces_blocks_compacted_total")
	m.blocksDeleted = counter("meshlens_traces_blocks_deleted_total")
	m.blocksDownloaded = counter("meshlens_traces_bucket_blocks_downloaded_total")
	m.cacheEvictions = counter("meshlens_traces_bucket_cache_evictions_total")
	m.names = append(m.names, "meshlens_traces_wal_fsync_duration_seconds")
	m.walFsync = m.set.GetOrCreateHistogram("meshlens_traces_wal_fsync_duration_seconds")
	gauge("meshlens_traces_head_traces", func() float64 {
		s.headMu.RLock()
		defer s.headMu.RUnlock()
		return float64(len(s.head.traces))
	})
	gauge("meshlens_traces_head_spans", func() float64 {
		s.headMu.RLock()
		defer s.headMu.RUnlock()
		return float64(s.head.spans)
	})
	gauge("meshlens_traces_local_blocks", func() float64 {
		s.blocksMu.Lock()
		defer s.blocksMu.Unlock()
		return float64(len(s.local))
	})
	gauge("meshlens_traces_bucket_blocks", func() float64 { return float64(m.bucketBlocks.Load()) })
	gauge("meshlens_traces_bucket_cache_bytes", func() float64 { return float64(m.cacheBytes.Load()) })
	return m
}

// unregister removes the metrics from the set, so that a store opened
// again on the same set registers fresh ones.
func (m *storeMetrics) unregister() {
	for _, n := range m.names {
		m.set.UnregisterMetric(n)
	}
}
