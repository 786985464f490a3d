// Package scenario reads the YAML files that schedule faults in the
// simulated mesh and list the alerts a correct mesh rule pack fires for them.
//
// A scenario:
//
//	name: circuit-breaker
//	description: ...
//	topology: {seed: 1, services: 30, clusters: 2}
//	interval: 15s        # scrape interval
//	duration: 30m        # simulated time
//	faults:
//	  - kind: circuit_breaker
//	    service: auth
//	    start: 10m
//	    duration: 15m
//	    rate: 0.2
//	expect:
//	  alerts:
//	    - alertname: IstioCircuitBreakerOpen
//	      labels: {destination_service_name: auth}
//	      after: 10m
package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid scenario")

// Kind names a fault.
type Kind string

// Fault kinds.
const (
	Latency          Kind = "latency"           // slower responses from a service or on one edge
	ErrorRate        Kind = "error_rate"        // 500s (gRPC status 2) from a service
	CircuitBreaker   Kind = "circuit_breaker"   // pending-request overflow: 503 UO, circuit breaker open
	RetryStorm       Kind = "retry_storm"       // 503s that callers retry aggressively
	Timeout          Kind = "timeout"           // requests hitting the route timeout: 504 UT
	OutlierEjection  Kind = "outlier_ejection"  // hosts ejected by outlier detection
	CertExpiry       Kind = "cert_expiry"       // a workload certificate expiring in N days
	RootCertExpiry   Kind = "root_cert_expiry"  // the mesh root certificate expiring in N days
	XDSRejects       Kind = "xds_rejects"       // proxies rejecting configuration pushed by istiod
	PushErrors       Kind = "push_errors"       // istiod failing to build or push configuration
	ListenerConflict Kind = "listener_conflict" // conflicting listeners reported by istiod
	EDSNoInstances   Kind = "eds_no_instances"  // a service without endpoints: 503 UH
	SidecarCrashLoop Kind = "sidecar_crashloop" // the istio-proxy container of a service restarting
	IstiodDown       Kind = "istiod_down"       // the control plane of a cluster down
	MTLSPlaintext    Kind = "mtls_plaintext"    // plaintext traffic to a STRICT service
	ClusterSilent    Kind = "cluster_silent"    // a cluster's Prometheus stops sending
)

// kindSpec says which fields a kind needs (r), allows (o) or forbids (absent).
type kindSpec struct {
	service, from, cluster, factor, addMS, rate, days, count, retries byte
}

var kinds = map[Kind]kindSpec{
	Latency:          {service: 'r', from: 'o', cluster: 'o', factor: 'o', addMS: 'o'},
	ErrorRate:        {service: 'r', from: 'o', cluster: 'o', rate: 'r'},
	CircuitBreaker:   {service: 'r', from: 'o', cluster: 'o', rate: 'r'},
	RetryStorm:       {service: 'r', cluster: 'o', rate: 'r', retries: 'o'},
	Timeout:          {service: 'r', from: 'o', cluster: 'o', rate: 'r'},
	OutlierEjection:  {service: 'r', cluster: 'o', rate: 'o', count: 'o'},
	CertExpiry:       {service: 'r', cluster: 'o', days: 'r'},
	RootCertExpiry:   {cluster: 'o', days: 'r'},
	XDSRejects:       {cluster: 'o', count: 'r'},
	PushErrors:       {cluster: 'o', count: 'r'},
	ListenerConflict: {cluster: 'o', count: 'r'},
	EDSNoInstances:   {service: 'r', cluster: 'o', count: 'o'},
	SidecarCrashLoop: {service: 'r', cluster: 'o'},
	IstiodDown:       {cluster: 'o'},
	MTLSPlaintext:    {service: 'r', from: 'o', cluster: 'o'},
	ClusterSilent:    {cluster: 'r'},
}

// Kinds returns every fault kind, sorted.
func Kinds() []Kind {
	out := make([]Kind, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out
}

// Duration is a time.Duration written as "90s", "10m", "1h30m".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string such as \"10m\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration %q is negative", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Scenario is one scenario file.
type Scenario struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Topology    struct {
		Seed     int64 `yaml:"seed"`
		Services int   `yaml:"services"`
		Clusters int   `yaml:"clusters"`
	} `yaml:"topology"`
	// Interval is the scrape interval; zero means 15s.
	Interval Duration `yaml:"interval"`
	// Duration is the simulated time; zero means 30m.
	Duration Duration `yaml:"duration"`
	Faults   []Fault  `yaml:"faults"`
	Expect   Expect   `yaml:"expect"`
}

// Fault is one scheduled fault. Which fields apply depends on Kind.
type Fault struct {
	Kind Kind `yaml:"kind"`
	// Service is the affected (destination) service.
	Service string `yaml:"service"`
	// From limits the fault to calls from this service (one edge).
	From string `yaml:"from"`
	// Cluster limits the fault to one cluster; empty means all.
	Cluster string `yaml:"cluster"`
	// Start is the offset from the beginning of the scenario.
	Start Duration `yaml:"start"`
	// Duration is how long the fault lasts; zero means to the end.
	Duration Duration `yaml:"duration"`
	// Factor multiplies latency (latency).
	Factor float64 `yaml:"factor"`
	// AddMS adds to latency (latency).
	AddMS float64 `yaml:"add_ms"`
	// Rate is the fraction of requests affected, in (0, 1].
	Rate float64 `yaml:"rate"`
	// Days is the remaining certificate lifetime (cert_expiry, root_cert_expiry).
	Days *float64 `yaml:"days"`
	// Count is a number of events per minute (xds_rejects, push_errors) or
	// a gauge value (listener_conflict, eds_no_instances, outlier_ejection).
	Count int `yaml:"count"`
	// RetryAttempts overrides the callers' retry attempts (retry_storm).
	RetryAttempts int `yaml:"retry_attempts"`
}

// Active reports whether the fault is in force at offset off from the
// start of the scenario.
func (f *Fault) Active(off time.Duration) bool {
	if off < f.Start.D() {
		return false
	}
	return f.Duration == 0 || off < f.Start.D()+f.Duration.D()
}

// Expect lists the alerts a correct rule pack fires.
type Expect struct {
	// Alerts that must fire. Empty together with NoAlerts means none may.
	Alerts []Alert `yaml:"alerts"`
	// NoAlerts is set on the healthy baseline: no alert may fire.
	NoAlerts bool `yaml:"no_alerts"`
}

// Alert is an expected alert: its name and the labels that identify it.
type Alert struct {
	Alertname string            `yaml:"alertname"`
	Labels    map[string]string `yaml:"labels"`
	// After is the earliest offset from the scenario start at which the
	// alert may fire (its fault's start).
	After Duration `yaml:"after"`
}

// Load reads and validates a scenario file.
func Load(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Parse decodes and validates a scenario. Unknown fields are errors.
func Parse(b []byte) (*Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty file", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrInvalid)
	}
	if s.Interval == 0 {
		s.Interval = Duration(15 * time.Second)
	}
	if s.Duration == 0 {
		s.Duration = Duration(30 * time.Minute)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks the scenario on its own (Bind checks it against a topology).
func (s *Scenario) Validate() error {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if s.Name == "" {
		bad("name is required")
	}
	if s.Topology.Services < 0 || s.Topology.Services > topology.MaxServices {
		bad("topology.services %d out of range [0, %d]", s.Topology.Services, topology.MaxServices)
	}
	if s.Topology.Clusters < 0 || s.Topology.Clusters > topology.MaxClusters {
		bad("topology.clusters %d out of range [0, %d]", s.Topology.Clusters, topology.MaxClusters)
	}
	if s.Interval.D() < time.Second {
		bad("interval %s below 1s", s.Interval.D())
	}
	if s.Duration.D() < s.Interval.D() {
		bad("duration %s shorter than interval %s", s.Duration.D(), s.Interval.D())
	}
	for i := range s.Faults {
		f := &s.Faults[i]
		where := fmt.Sprintf("faults[%d] (%s)", i, f.Kind)
		spec, ok := kinds[f.Kind]
		if !ok {
			names := make([]string, 0, len(kinds))
			for _, k := range Kinds() {
				names = append(names, string(k))
			}
			bad("faults[%d]: unknown kind %q (want one of %s)", i, f.Kind, strings.Join(names, ", "))
			continue
		}
		check := func(field string, rule byte, set bool) {
			switch {
			case rule == 'r' && !set:
				bad("%s: %s is required", where, field)
			case rule == 0 && set:
				bad("%s: %s does not apply to this kind", where, field)
			}
		}
		check("service", spec.service, f.Service != "")
		check("from", spec.from, f.From != "")
		check("cluster", spec.cluster, f.Cluster != "")
		check("factor", spec.factor, f.Factor != 0)
		check("add_ms", spec.addMS, f.AddMS != 0)
		check("rate", spec.rate, f.Rate != 0)
		check("days", spec.days, f.Days != nil)
		check("count", spec.count, f.Count != 0)
		check("retry_attempts", spec.retries, f.RetryAttempts != 0)
		if f.Kind == Latency && f.Factor == 0 && f.AddMS == 0 {
			bad("%s: factor or add_ms is required", where)
		}
		if f.Factor != 0 && (f.Factor < 1 || f.Factor > 1000) {
			bad("%s: factor %v out of range [1, 1000]", where, f.Factor)
		}
		if f.AddMS < 0 {
			bad("%s: add_ms %v is negative", where, f.AddMS)
		}
		if f.Rate < 0 || f.Rate > 1 {
			bad("%s: rate %v out of range (0, 1]", where, f.Rate)
		}
		if f.Days != nil && *f.Days < 0 {
			bad("%s: days %v is negative", where, *f.Days)
		}
		if f.Count < 0 {
			bad("%s: count %d is negative", where, f.Count)
		}
		if f.RetryAttempts < 0 || f.RetryAttempts > 20 {
			bad("%s: retry_attempts %d out of range [0, 20]", where, f.RetryAttempts)
		}
		if f.Start.D() >= s.Duration.D() {
			bad("%s: start %s is not before the end of the scenario (%s)", where, f.Start.D(), s.Duration.D())
		}
	}
	for i, a := range s.Expect.Alerts {
		if a.Alertname == "" {
			bad("expect.alerts[%d]: alertname is required", i)
		}
		if a.After.D() > s.Duration.D() {
			bad("expect.alerts[%d] (%s): after %s is past the end of the scenario", i, a.Alertname, a.After.D())
		}
	}
	if s.Expect.NoAlerts && len(s.Expect.Alerts) > 0 {
		bad("expect: no_alerts and alerts are exclusive")
	}
	if !s.Expect.NoAlerts && len(s.Expect.Alerts) == 0 {
		bad("expect: list the alerts that must fire, or set no_alerts: true")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w %q: %s", ErrInvalid, s.Name, strings.Join(errs, "; "))
	}
	return nil
}

// TopologyOptions returns the options of the scenario's mesh.
func (s *Scenario) TopologyOptions() topology.Options {
	return topology.Options{Seed: s.Topology.Seed, Services: s.Topology.Services, Clusters: s.Topology.Clusters}
}

// Bind checks that the services and clusters the scenario names exist in t.
func (s *Scenario) Bind(t *topology.Topology) error {
	var errs []string
	for i := range s.Faults {
		f := &s.Faults[i]
		where := fmt.Sprintf("faults[%d] (%s)", i, f.Kind)
		svc := -1
		if f.Service != "" {
			if svc = t.ServiceIndex(f.Service); svc < 0 {
				errs = append(errs, fmt.Sprintf("%s: service %q not in the topology (seed %d, %d services)", where, f.Service, t.Seed, len(t.Services)-1))
			}
		}
		if f.From != "" {
			from := t.ServiceIndex(f.From)
			switch {
			case from < 0:
				errs = append(errs, fmt.Sprintf("%s: from service %q not in the topology", where, f.From))
			case svc >= 0 && t.EdgeIndex(from, svc) < 0:
				errs = append(errs, fmt.Sprintf("%s: %s does not call %s", where, f.From, f.Service))
			}
		}
		if f.Cluster != "" && t.ClusterIndex(f.Cluster) < 0 {
			errs = append(errs, fmt.Sprintf("%s: cluster %q not in the topology (clusters: %s)", where, f.Cluster, strings.Join(t.Clusters, ", ")))
		}
		if f.Kind == MTLSPlaintext && svc >= 0 && t.Services[svc].MTLS != topology.MTLSStrict {
			errs = append(errs, fmt.Sprintf("%s: service %q is %s, not STRICT", where, f.Service, t.Services[svc].MTLS))
		}
		if svc >= 0 && t.Services[svc].Protocol == topology.ProtoTCP && f.Kind != SidecarCrashLoop && f.Kind != CertExpiry {
			errs = append(errs, fmt.Sprintf("%s: service %q is a TCP service without request metrics", where, f.Service))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w %q: %s", ErrInvalid, s.Name, strings.Join(errs, "; "))
	}
	return nil
}
