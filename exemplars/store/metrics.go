package store

import "github.com/VictoriaMetrics/metrics"

// storeMetrics are the store's meshlens_exemplar_store_* metrics.
type storeMetrics struct {
	set   *metrics.Set
	names []string

	appended, dropped               *metrics.Counter
	walCorruptions                  *metrics.Counter
	blocksCut, cutFailures          *metrics.Counter
	blocksShipped, shipFailures     *metrics.Counter
	blocksDownloaded, blocksDeleted *metrics.Counter
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
	m.appended = counter("meshlens_exemplar_store_exemplars_appended_total")
	m.dropped = counter("meshlens_exemplar_store_exemplars_expired_total")
	m.walCorruptions = counter("meshlens_exemplar_store_wal_corruptions_total")
	m.blocksCut = counter("meshlens_exemplar_store_blocks_cut_total")
	m.cutFailures = counter("meshlens_exemplar_store_cut_failures_total")
	m.blocksShipped = counter("meshlens_exemplar_store_blocks_shipped_total")
	m.shipFailures = counter("meshlens_exemplar_store_block_ship_failures_total")
	m.blocksDownloaded = counter("meshlens_exemplar_store_blocks_downloaded_total")
	m.blocksDeleted = counter("meshlens_exemplar_store_blocks_deleted_total")
	gauge("meshlens_exemplar_store_head_exemplars", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for _, p := range s.head {
			n += p.n
		}
		return float64(n)
	})
	gauge("meshlens_exemplar_store_blocks", func() float64 {
		s.blocksMu.RLock()
		defer s.blocksMu.RUnlock()
		return float64(len(s.blocks))
	})
	return m
}

// unregister removes the metrics from the set, so that a store opened
// again on the same set registers fresh ones.
func (m *storeMetrics) unregister() {
	for _, n := range m.names {
		m.set.UnregisterMetric(n)
	}
}
