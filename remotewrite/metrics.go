package remotewrite

import (
	"fmt"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// Self-metrics of the receiver, exposed on /metrics.
var (
	writeRequestsInflight = metrics.NewCounter(`meshlens_remote_write_requests_inflight`)
)

// receivedCounter counts what was written, by protocol and kind (sample,
// histogram, exemplar).
func receivedCounter(protocol, kind string) *metrics.Counter {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`meshlens_remote_write_received_total{protocol=%q,kind=%q}`, protocol, kind))
}

// bytesCounter counts request bytes by protocol, compressed as received.
func bytesCounter(protocol string) *metrics.Counter {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`meshlens_remote_write_received_bytes_total{protocol=%q}`, protocol))
}

var rejectedCounters sync.Map // reason -> *metrics.Counter

// rejectedCounter counts rejected samples, histograms and exemplars (and
// series without samples, and metadata entries) by reason.
func rejectedCounter(reason string) *metrics.Counter {
	if c, ok := rejectedCounters.Load(reason); ok {
		return c.(*metrics.Counter)
	}
	c := metrics.GetOrCreateCounter(fmt.Sprintf(`meshlens_remote_write_rejected_samples_total{reason=%q}`, reason))
	rejectedCounters.Store(reason, c)
	return c
}

// refusedCounter counts requests refused as a whole, by reason.
func refusedCounter(reason string) *metrics.Counter {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`meshlens_remote_write_refused_requests_total{reason=%q}`, reason))
}

func init() {
	// Every reason is exported from the start, so rate() has a zero to start from.
	for _, r := range reasons {
		rejectedCounter(r)
	}
	for _, r := range []string{reasonBodyTooLarge, reasonUndecodable, reasonUnsupported, reasonThrottled} {
		refusedCounter(r)
	}
}
