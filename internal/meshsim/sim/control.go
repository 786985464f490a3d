package sim

import (
	"math"
	"time"
)

// Healthy certificate lifetimes.
const (
	rootCertLifetime = 10 * 365 * 24 * time.Hour
)

// updateControlPlane updates istiod's series and the sidecars'
// certificate gauges.
func (s *Sim) updateControlPlane(now time.Time, off time.Duration) {
	st := &s.state
	secs := s.interval.Seconds()
	// Sidecar certificates: rotated at two thirds of their life.
	for ti := range s.targets {
		t := &s.targets[ti]
		if t.kind != tkSidecar {
			continue
		}
		days := st.certDays[ti]
		if days < 0 {
			life := float64(s.topo.Services[t.service].CertLifetimeHours) / 24
			rot := life * 2 / 3
			age := math.Mod(off.Hours()/24+t.certPhase*rot, rot)
			days = life - age
		}
		if s.linkerd {
			// identity_cert_expiration_timestamp_seconds
			s.vals[t.base] = math.Floor(float64(now.Unix()) + days*86400)
		} else {
			s.vals[t.base] = math.Floor(days)
		}
	}
	proxies := make([]float64, len(s.topo.Clusters))
	for ti := range s.targets {
		if t := &s.targets[ti]; t.kind == tkSidecar && !st.down[ti] {
			proxies[t.cluster]++
		}
	}
	for c, id := range s.istiod {
		t := &s.targets[id]
		if st.down[id] {
			continue
		}
		if t.wasDown {
			// istiod came back: a new process, counters start over.
			s.resetTarget(id)
		}
		b := t.base
		rs := newStream(s.seed, uint64(s.step), uint64(c), 0x6973746f)
		pushes := proxies[c] * secs / 60 * (0.8 + 0.4*rs.float())
		s.addCount(b+idPushCDS, pushes)
		s.addCount(b+idPushEDS, 3*pushes)
		s.addCount(b+idPushLDS, pushes)
		s.addCount(b+idPushRDS, pushes)
		s.vals[b+idXDS] = proxies[c]
		rej := st.xdsRejects[c] * secs / 60
		s.addCount(b+idRejectCDS, rej/2)
		s.addCount(b+idRejectLDS, rej/2)
		perr := st.pushErrors[c] * secs / 60
		s.addCount(b+idInternalErrors, perr)
		s.addCount(b+idPushContextErrors, perr)
		s.vals[b+idConflictInbound] = st.conflicts[c]
		s.vals[b+idConflictTCPOverHTTP] = st.conflicts[c]
		s.vals[b+idEDSNoInstances] = st.edsNoInstance[c]
		s.addCount(b+idInjectionSuccess, secs/600)
		root := s.opts.Start.Add(rootCertLifetime)
		if d := st.rootCertDays[c]; d >= 0 {
			root = now.Add(time.Duration(d * 24 * float64(time.Hour)))
		}
		s.vals[b+idRootCertExpiry] = float64(root.Unix())
		s.vals[b+idCertChainExpiry] = float64(root.Unix())
		s.addCount(b+idCSRCount, proxies[c]*secs/(60*24*3600))
		s.vals[b+idBuild] = 1
		conv := 0.02
		if rej > 0 || perr > 0 {
			conv = 2
		}
		n := math.Floor(4 * pushes)
		s.observe(b+idConvergence, ConvergenceBuckets, n, conv, 1, &rs)
	}
}
