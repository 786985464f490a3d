package sim

import (
	"math"
	"time"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

// Network latency added on the source side of a hop, in milliseconds.
const (
	localNetMS  = 0.4
	remoteNetMS = 18
)

// diurnal is the daily traffic cycle: ±25%, shifted per cluster.
func diurnal(now time.Time, cluster int) float64 {
	h := float64(now.Unix()%86400) / 86400
	return 1 + 0.25*math.Sin(2*math.Pi*h+float64(cluster))
}

// hop holds the latency parameters of one flow in the current step.
type hop struct {
	medianMS float64 // destination-side median latency, incl. downstream calls
	sigma    float64
	netMS    float64
	attempts int
	timeout  float64
}

func (s *Sim) hopParams(fi int) hop {
	f := &s.flows[fi]
	e := &s.eff[fi]
	dst := &s.topo.Services[f.To]
	h := hop{
		medianMS: s.traffic.LatencyMS[f.To]*e.factor() + e.latAddMS,
		sigma:    dst.LatencySigma,
		netMS:    localNetMS,
		attempts: dst.RetryAttempts,
		timeout:  dst.TimeoutMS,
	}
	if f.SrcCluster != f.DstCluster {
		h.netMS = remoteNetMS
	}
	if e.retryAttempts > 0 {
		h.attempts = e.retryAttempts
	}
	if s.linkerd {
		h.attempts = 0 // Linkerd retries only where a route says so
	}
	if h.timeout == 0 {
		h.timeout = 10000
	}
	return h
}

// srcLatency returns the median and sigma of the latency the source proxy
// sees for an outcome.
func (h *hop) srcLatency(oc outcome) (float64, float64) {
	switch oc {
	case ocOverflow:
		return 0.25, 0.3
	case ocNoHealthy:
		return 0.15, 0.3
	case ocTimeout:
		return h.timeout, 0.01
	case ocUpstream503:
		return float64(h.attempts+1)*0.3*h.medianMS + h.netMS, h.sigma
	}
	return h.medianMS + h.netMS, h.sigma
}

// dstLatency returns the median and sigma of the latency the destination
// proxy sees for an outcome.
func (h *hop) dstLatency(oc outcome) (float64, float64) {
	if oc == ocUpstream503 {
		return 0.3 * h.medianMS, h.sigma
	}
	return h.medianMS, h.sigma
}

func responseBytes(dst *topology.Service, oc outcome) (float64, float64) {
	if oc == ocOK {
		return dst.ResponseBytes, 0.8
	}
	return 95, 0.2
}

// applyRestarts resets the counters of sidecars that restart in this step.
func (s *Sim) applyRestarts() {
	for ti, r := range s.state.restart {
		if !r {
			continue
		}
		s.resetTarget(int32(ti))
		s.vals[s.targets[ti].restarts]++
	}
}

func (s *Sim) updateTraffic(now time.Time) {
	s.applyRestarts()
	secs := s.interval.Seconds()
	// Upstream gauges are set from this step's faults.
	for _, base := range s.upstreams {
		for _, g := range []int{upCBRqOpen, upCBPendingOpen, upCBCxOpen, upCBRetryOpen, upEjections} {
			s.vals[base+Ref(g)] = 0
		}
	}
	for fi := range s.flows {
		f := &s.flows[fi]
		e := &s.eff[fi]
		dst := &s.topo.Services[f.To]
		rs := newStream(s.seed, uint64(s.step), uint64(fi), 0x74726166)
		n := f.RPS * secs * diurnal(now, f.SrcCluster) * (1 + 0.1*(2*rs.float()-1))
		if f.tcp {
			if s.linkerd {
				s.linkerdTCP(fi, n)
			} else {
				s.updateTCP(fi, n)
			}
			continue
		}
		h := s.hopParams(fi)
		p := min(e.upstream503, 1)
		attempts, pk := 1.0, 1.0
		for range h.attempts {
			pk *= p
			attempts += pk
		}
		src := &f.src
		src[ocOverflow] = min(e.overflow, 1)
		src[ocNoHealthy] = min(e.noHealthy, 1-src[ocOverflow])
		reach := max(0, 1-src[ocOverflow]-src[ocNoHealthy])
		src[ocTimeout] = reach * min(e.timeout, 1)
		rem := reach - src[ocTimeout]
		src[ocUpstream503] = rem * pk * p
		rem -= src[ocUpstream503]
		app := min(dst.ErrorRate+e.appErr, 1)
		src[ocAppError] = rem * app
		src[ocOK] = max(0, rem-src[ocAppError])
		d := &f.dst
		d[ocUpstream503] = p
		d[ocAppError] = (1 - p) * app
		d[ocOK] = max(0, 1-d[ocUpstream503]-d[ocAppError])
		if s.linkerd {
			s.linkerdHTTP(fi, n, &h, reach, &rs)
			continue
		}

		// Source proxies.
		share := 1 / float64(len(f.srcPods))
		for _, pod := range f.srcPods {
			for oc := range numOutcomes {
				if src[oc] > 0 {
					med, sig := h.srcLatency(oc)
					s.count(groupKey{flow: int32(fi), pod: pod, oc: oc, plain: e.plain}, n*share*src[oc], med, sig, dst, &rs)
				}
			}
			up := s.upstream(pod, f.To)
			ns := n * share
			sent := ns * reach * attempts
			retries := ns * reach * (attempts - 1)
			s.addCount(up+upRqTotal, sent)
			fiveXX := ns * (src[ocOverflow] + src[ocNoHealthy] + src[ocTimeout] + reach*attempts*p)
			if !f.grpc {
				fiveXX += ns * src[ocAppError]
			}
			s.addCount(up+upRq5xx, fiveXX)
			s.addCount(up+upRq2xx, max(0, sent-fiveXX))
			s.addCount(up+upRetry, retries)
			s.addCount(up+upRetryOverflow, retries*e.retryOverflow)
			s.addCount(up+upTimeout, ns*src[ocTimeout])
			s.addCount(up+upPendingOverflow, ns*src[ocOverflow])
			s.addCount(up+upCxNoneHealthy, ns*src[ocNoHealthy])
			if e.overflow > 0 {
				s.vals[up+upCBPendingOpen] = 1
				s.vals[up+upCBRqOpen] = 1
			}
			if e.retryOverflow > 0 {
				s.vals[up+upCBRetryOpen] = 1
			}
			s.vals[up+upEjections] = max(s.vals[up+upEjections], e.ejected)
			s.observeCount(up+upRqTime, sent, h.medianMS+h.netMS/2, h.sigma, &rs)
		}
		// Destination proxies (retries arrive as extra requests).
		nDst := n * reach * attempts
		share = 1 / float64(len(f.dstPods))
		for _, pod := range f.dstPods {
			for _, oc := range []outcome{ocOK, ocAppError, ocUpstream503} {
				if d[oc] > 0 {
					med, sig := h.dstLatency(oc)
					s.count(groupKey{flow: int32(fi), pod: pod, oc: oc, dst: true, plain: e.plain}, nDst*share*d[oc], med, sig, dst, &rs)
				}
			}
		}
	}
}

// observeCount observes a fractional number of requests into a histogram,
// keeping the fraction in the _count series.
func (s *Sim) observeCount(base Ref, x, median, sigma float64, rs *stream) {
	cnt := base + Ref(len(DurationBuckets)) + 2
	v := s.frac[cnt] + x
	n := math.Floor(v)
	s.frac[cnt] = v - n
	s.observe(base, DurationBuckets, n, median, sigma, rs)
}

// count adds x requests to an Istio request group, creating its series
// when the first whole request is counted.
func (s *Sim) count(k groupKey, x, median, sigma float64, dst *topology.Service, rs *stream) {
	base, ok := s.groups[k]
	if !ok {
		v := s.pending[k] + x
		if v < 1 {
			s.pending[k] = v
			return
		}
		delete(s.pending, k)
		base = s.group(k)
		s.frac[base+Ref(grpReqTotal)] = v - x
	}
	n := s.addCount(base+Ref(grpReqTotal), x)
	if n == 0 {
		return
	}
	if !s.meta[base].live {
		s.setLive(base, grpLen)
	}
	s.observe(base+Ref(grpDur), DurationBuckets, n, median, sigma, rs)
	s.observe(base+Ref(grpReqBytes), DurationBuckets, n, dst.RequestBytes, 0.5, rs)
	rb, rsig := responseBytes(dst, k.oc)
	s.observe(base+Ref(grpRespBytes), DurationBuckets, n, rb, rsig, rs)
}

func (s *Sim) updateTCP(fi int, n float64) {
	f := &s.flows[fi]
	e := &s.eff[fi]
	dst := &s.topo.Services[f.To]
	for side, pods := range [][]int32{f.srcPods, f.dstPods} {
		share := 1 / float64(len(pods))
		for _, pod := range pods {
			k := groupKey{flow: int32(fi), pod: pod, oc: ocOK, dst: side == 1, plain: e.plain}
			base, ok := s.groups[k]
			if !ok {
				base = s.group(k)
				s.setLive(base, 4)
			}
			x := n * share
			s.addCount(base, x*dst.ResponseBytes)  // istio_tcp_sent_bytes_total
			s.addCount(base+1, x*dst.RequestBytes) // istio_tcp_received_bytes_total
			s.addCount(base+2, x*0.05)             // connections opened
			s.addCount(base+3, x*0.05*0.98)        // connections closed
		}
	}
}
