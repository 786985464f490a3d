package remotewrite

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"
)

// writeMetrics are the write handler's self-metrics, created once in its
// set rather than per request.
type writeMetrics struct {
	v1, v2 protocolCounters
	// rejected counts rejected samples, histograms and exemplars (and
	// series without samples, and metadata entries) by reason.
	rejected map[string]*metrics.Counter
	// refused counts requests refused as a whole, by reason.
	refused map[string]*metrics.Counter
}

// protocolCounters are the per-protocol counters of what was written and
// of the bytes received (compressed).
type protocolCounters struct {
	samples, histograms, exemplars, bytes *metrics.Counter
}

// newWriteMetrics creates the handler's metrics in set. inflight reports
// the requests being decoded and appended. Every reason is exported from
// the start, so rate() has a zero to start from.
func newWriteMetrics(set *metrics.Set, inflight func() float64) *writeMetrics {
	set.NewGauge(`meshlens_remote_write_requests_inflight`, inflight)
	protocol := func(p string) protocolCounters {
		kind := func(k string) *metrics.Counter {
			return set.NewCounter(fmt.Sprintf(`meshlens_remote_write_received_total{protocol=%q,kind=%q}`, p, k))
		}
		return protocolCounters{
			samples:    kind("sample"),
			histograms: kind("histogram"),
			exemplars:  kind("exemplar"),
			bytes:      set.NewCounter(fmt.Sprintf(`meshlens_remote_write_received_bytes_total{protocol=%q}`, p)),
		}
	}
	m := &writeMetrics{
		v1:       protocol("1.0"),
		v2:       protocol("2.0"),
		rejected: map[string]*metrics.Counter{},
		refused:  map[string]*metrics.Counter{},
	}
	for _, r := range reasons {
		m.rejected[r] = set.NewCounter(fmt.Sprintf(`meshlens_remote_write_rejected_samples_total{reason=%q}`, r))
	}
	for _, r := range []string{reasonBodyTooLarge, reasonUndecodable, reasonUnsupported, reasonThrottled} {
		m.refused[r] = set.NewCounter(fmt.Sprintf(`meshlens_remote_write_refused_requests_total{reason=%q}`, r))
	}
	return m
}

// count adds one request's outcome to the self-metrics.
func (m *writeMetrics) count(c *protocolCounters, s *Stats) {
	c.samples.Add(s.Samples)
	c.histograms.Add(s.Histograms)
	c.exemplars.Add(s.Exemplars)
	for reason, n := range s.Rejected {
		m.rejected[reason].Add(n)
	}
}
