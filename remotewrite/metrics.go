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

// protocolCounters are the per-protocol counters of what was written and
// of the bytes received (compressed), created once rather than per request.
type protocolCounters struct {
	samples, histograms, exemplars, bytes *metrics.Counter
}

func newProtocolCounters(protocol string) *protocolCounters {
	kind := func(k string) *metrics.Counter {
		return metrics.NewCounter(fmt.Sprintf(`meshlens_remote_write_received_total{protocol=%q,kind=%q}`, protocol, k))
	}
	return &protocolCounters{
		samples:    kind("sample"),
		histograms: kind("histogram"),
		exemplars:  kind("exemplar"),
		bytes:      metrics.NewCounter(fmt.Sprintf(`meshlens_remote_write_received_bytes_total{protocol=%q}`, protocol)),
	}
}

var (
	countersV1 = newProtocolCounters("1.0")
	countersV2 = newProtocolCounters("2.0")
)

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
