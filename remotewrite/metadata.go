package remotewrite

import (
	"sync"

	"github.com/prometheus/prometheus/model/metadata"
)

// MetadataStore keeps the latest metadata of every metric family received by
// remote write, for /api/v1/metadata. It is in memory only: senders repeat
// metadata (1.0 every minute, 2.0 with every series).
type MetadataStore struct {
	mu       sync.RWMutex
	families map[string]metadata.Metadata
}

// NewMetadataStore returns an empty store.
func NewMetadataStore() *MetadataStore {
	return &MetadataStore{families: map[string]metadata.Metadata{}}
}

// SetMetadata records m as the metadata of family.
func (s *MetadataStore) SetMetadata(family string, m metadata.Metadata) {
	s.mu.RLock()
	old, ok := s.families[family]
	s.mu.RUnlock()
	if ok && old == m {
		return
	}
	s.mu.Lock()
	s.families[family] = m
	s.mu.Unlock()
}

// Metadata returns the metadata of metric (every family when metric is
// empty), at most limit families when limit > 0.
func (s *MetadataStore) Metadata(metric string, limit int) map[string][]metadata.Metadata {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string][]metadata.Metadata{}
	if metric != "" {
		if m, ok := s.families[metric]; ok {
			out[metric] = []metadata.Metadata{m}
		}
		return out
	}
	for f, m := range s.families {
		if limit > 0 && len(out) >= limit {
			break
		}
		out[f] = []metadata.Metadata{m}
	}
	return out
}
