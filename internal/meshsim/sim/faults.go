package sim

import (
	"time"

	"github.com/meshlens/meshlens/internal/scenario"
)

// effect is what the active faults do to one flow in one step.
type effect struct {
	latFactor     float64 // 0 means 1
	latAddMS      float64
	appErr        float64
	upstream503   float64
	overflow      float64
	timeout       float64
	noHealthy     float64
	retryAttempts int // 0 means the service's setting
	retryOverflow float64
	ejected       float64
	plain         bool
}

func (e *effect) factor() float64 {
	if e.latFactor == 0 {
		return 1
	}
	return e.latFactor
}

// stepState is the state of the faults in the current step.
type stepState struct {
	silent []bool // per cluster
	down   []bool // per target
	// restart marks sidecars restarting in this step (crash loop).
	restart []bool
	// certDays overrides envoy_server_days_until_first_cert_expiring per target; <0 means none.
	certDays []float64
	// per cluster (istiod)
	rootCertDays  []float64 // <0 means healthy
	xdsRejects    []float64 // per minute
	pushErrors    []float64 // per minute
	conflicts     []float64
	edsNoInstance []float64
}

// crashLoopPeriod is how often a crash-looping container restarts
// (Kubernetes caps the back-off at five minutes).
const crashLoopPeriod = 5 * time.Minute

func (s *Sim) computeState(off time.Duration) {
	nc := len(s.topo.Clusters)
	st := &s.state
	if st.silent == nil {
		st.silent = make([]bool, nc)
		st.down = make([]bool, len(s.targets))
		st.restart = make([]bool, len(s.targets))
		st.certDays = make([]float64, len(s.targets))
		st.rootCertDays = make([]float64, nc)
		st.xdsRejects = make([]float64, nc)
		st.pushErrors = make([]float64, nc)
		st.conflicts = make([]float64, nc)
		st.edsNoInstance = make([]float64, nc)
	}
	clear(st.silent)
	clear(st.down)
	clear(st.restart)
	for i := range st.certDays {
		st.certDays[i] = -1
	}
	for c := range nc {
		st.rootCertDays[c] = -1
		st.xdsRejects[c], st.pushErrors[c], st.conflicts[c], st.edsNoInstance[c] = 0, 0, 0, 0
	}
	for i := range s.eff {
		s.eff[i] = effect{}
	}
	if s.opts.Scenario == nil {
		return
	}
	for fi := range s.opts.Scenario.Faults {
		f := &s.opts.Scenario.Faults[fi]
		if !f.Active(off) {
			continue
		}
		s.applyFault(f, off)
	}
}

// clusters returns the cluster indexes a fault applies to.
func (s *Sim) faultClusters(f *scenario.Fault) []int {
	if f.Cluster != "" {
		return []int{s.topo.ClusterIndex(f.Cluster)}
	}
	out := make([]int, len(s.topo.Clusters))
	for i := range out {
		out[i] = i
	}
	return out
}

// eachFlow calls fn for the flows the fault applies to: calls to the
// fault's service (from one caller if From is set), served in the fault's
// cluster if Cluster is set.
func (s *Sim) eachFlow(f *scenario.Fault, fn func(*effect)) {
	to := s.topo.ServiceIndex(f.Service)
	from, cl := -1, -1
	if f.From != "" {
		from = s.topo.ServiceIndex(f.From)
	}
	if f.Cluster != "" {
		cl = s.topo.ClusterIndex(f.Cluster)
	}
	for _, fi := range s.flowsTo[to] {
		fl := &s.flows[fi]
		if (from >= 0 && fl.From != from) || (cl >= 0 && fl.DstCluster != cl) {
			continue
		}
		fn(&s.eff[fi])
	}
}

// eachPod calls fn for the sidecar targets of the fault's service.
func (s *Sim) eachPod(f *scenario.Fault, fn func(int32)) {
	si := s.topo.ServiceIndex(f.Service)
	for _, c := range s.faultClusters(f) {
		if c >= len(s.pods[si]) {
			continue
		}
		for _, pods := range s.pods[si][c] {
			for _, p := range pods {
				fn(p)
			}
		}
	}
}

func (s *Sim) applyFault(f *scenario.Fault, off time.Duration) {
	st := &s.state
	since := off - f.Start.D()
	switch f.Kind {
	case scenario.Latency:
		s.eachFlow(f, func(e *effect) {
			if f.Factor != 0 {
				e.latFactor = e.factor() * f.Factor
			}
			e.latAddMS += f.AddMS
		})
	case scenario.ErrorRate:
		s.eachFlow(f, func(e *effect) { e.appErr += f.Rate })
	case scenario.CircuitBreaker:
		s.eachFlow(f, func(e *effect) { e.overflow += f.Rate })
	case scenario.RetryStorm:
		attempts := f.RetryAttempts
		if attempts == 0 {
			attempts = 5
		}
		s.eachFlow(f, func(e *effect) {
			e.upstream503 += f.Rate
			e.retryAttempts = attempts
			e.retryOverflow = 0.3
		})
	case scenario.Timeout:
		s.eachFlow(f, func(e *effect) { e.timeout += f.Rate })
	case scenario.OutlierEjection:
		rate, n := f.Rate, f.Count
		if rate == 0 {
			rate = 0.05
		}
		if n == 0 {
			n = 1
		}
		s.eachFlow(f, func(e *effect) {
			e.upstream503 += rate
			e.ejected = float64(n)
		})
	case scenario.CertExpiry:
		days := *f.Days - since.Hours()/24
		s.eachPod(f, func(p int32) { st.certDays[p] = max(days, 0) })
	case scenario.RootCertExpiry:
		for _, c := range s.faultClusters(f) {
			st.rootCertDays[c] = *f.Days - since.Hours()/24
		}
	case scenario.XDSRejects:
		for _, c := range s.faultClusters(f) {
			st.xdsRejects[c] += float64(f.Count)
		}
	case scenario.PushErrors:
		for _, c := range s.faultClusters(f) {
			st.pushErrors[c] += float64(f.Count)
		}
	case scenario.ListenerConflict:
		for _, c := range s.faultClusters(f) {
			st.conflicts[c] += float64(f.Count)
		}
	case scenario.EDSNoInstances:
		n := f.Count
		if n == 0 {
			n = 1
		}
		for _, c := range s.faultClusters(f) {
			st.edsNoInstance[c] += float64(n)
		}
		s.eachFlow(f, func(e *effect) { e.noHealthy = 1 })
	case scenario.SidecarCrashLoop:
		// Restart at the start and every crashLoopPeriod after; the pod's
		// scrape fails in the step of the restart.
		if since%crashLoopPeriod < s.interval {
			s.eachPod(f, func(p int32) {
				st.restart[p] = true
				st.down[p] = true
			})
		}
	case scenario.IstiodDown:
		if s.istiod == nil {
			break // Linkerd: no istiod
		}
		for _, c := range s.faultClusters(f) {
			st.down[s.istiod[c]] = true
		}
	case scenario.MTLSPlaintext:
		s.eachFlow(f, func(e *effect) { e.plain = true })
	case scenario.ClusterSilent:
		for _, c := range s.faultClusters(f) {
			st.silent[c] = true
		}
	}
}
