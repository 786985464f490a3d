// Package topology generates the simulated service mesh: clusters,
// namespaces, services with their versions and pods, and the call graph
// between them. The same seed and size always give the same mesh.
package topology

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Limits of the generator.
const (
	MaxServices = 10000
	MaxClusters = 16
	// DefaultMaxDepth is the deepest level of the call graph below the
	// ingress gateway.
	DefaultMaxDepth = 8
)

// Mesh-wide constants that appear in the labels and spans.
const (
	IstioVersion   = "1.24.2"
	TrustDomain    = "cluster.local"
	MeshID         = "mesh1"
	GatewayName    = "istio-ingressgateway"
	IstioNamespace = "istio-system"
)

// Protocols of a service.
const (
	ProtoHTTP = "http"
	ProtoGRPC = "grpc"
	ProtoTCP  = "tcp"
)

// mTLS modes of a service's PeerAuthentication.
const (
	MTLSStrict     = "STRICT"
	MTLSPermissive = "PERMISSIVE"
	MTLSDisable    = "DISABLE"
)

// ErrBadOptions is wrapped by every error Generate returns for options out
// of range.
var ErrBadOptions = errors.New("bad topology options")

// Options select the mesh to generate.
type Options struct {
	// Seed makes the mesh reproducible; every seed gives a different mesh.
	Seed int64
	// Services is the number of application services; zero means 30.
	Services int
	// Clusters is the number of Kubernetes clusters; zero means 2.
	Clusters int
	// Namespaces is the number of application namespaces; zero means one
	// per ten services (at least one, at most 500).
	Namespaces int
	// MaxDepth is the deepest level of the call graph; zero means 8.
	MaxDepth int
	// EntryRPS is the request rate entering the mesh through the ingress
	// gateway of each cluster, in requests per second; zero means
	// 3 per service (at least 50).
	EntryRPS float64
}

// Topology is a generated mesh. Service 0 is the ingress gateway, deployed
// in every cluster; services 1..n are the application services.
type Topology struct {
	Seed       int64     `json:"seed"`
	Clusters   []string  `json:"clusters"`
	Namespaces []string  `json:"namespaces"`
	Services   []Service `json:"services"`
	Edges      []Edge    `json:"edges"`
	// EntryRPS is the rate entering each cluster's gateway.
	EntryRPS float64 `json:"entry_rps"`

	// Out lists, per service, the indexes into Edges of its outgoing edges.
	Out [][]int `json:"-"`
	// In lists, per service, the indexes into Edges of its incoming edges.
	In [][]int `json:"-"`
	// byName maps service name to index.
	byName map[string]int
}

// Service is one Kubernetes service and its workloads.
type Service struct {
	ID        int    `json:"id"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Gateway is true for the ingress gateway (service 0).
	Gateway  bool   `json:"gateway,omitempty"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	// Depth is the level in the call graph: 0 for the gateway, 1 for
	// services called by the gateway.
	Depth int `json:"depth"`
	// Clusters holds the indexes of the clusters running the service.
	Clusters []int     `json:"clusters"`
	Versions []Version `json:"versions"`
	// LatencyMS is the median time the service itself spends on a request,
	// not counting its calls to other services.
	LatencyMS float64 `json:"latency_ms"`
	// LatencySigma is the spread of the log-normal latency distribution.
	LatencySigma float64 `json:"latency_sigma"`
	// ErrorRate is the fraction of requests that fail with 500 (or gRPC
	// status 2) when healthy.
	ErrorRate float64 `json:"error_rate"`
	// RequestBytes and ResponseBytes are median message sizes.
	RequestBytes  float64 `json:"request_bytes"`
	ResponseBytes float64 `json:"response_bytes"`
	// RetryAttempts is the number of retries callers make on 503 (Istio's
	// default is 2).
	RetryAttempts int `json:"retry_attempts"`
	// TimeoutMS is the route timeout; zero means none.
	TimeoutMS float64 `json:"timeout_ms"`
	// MaxPendingRequests and MaxConnections are the DestinationRule
	// connection-pool limits (circuit breaker thresholds).
	MaxPendingRequests int `json:"max_pending_requests"`
	MaxConnections     int `json:"max_connections"`
	// Consecutive5xx is the outlier-detection threshold.
	Consecutive5xx int `json:"consecutive_5xx"`
	// MTLS is the PeerAuthentication mode.
	MTLS string `json:"mtls"`
	// CertLifetimeHours is the workload certificate lifetime.
	CertLifetimeHours int `json:"cert_lifetime_hours"`
	// ServiceAccount names the workload identity.
	ServiceAccount string `json:"service_account"`
}

// Version is one workload (Deployment) of a service.
type Version struct {
	Name string `json:"name"`
	// Weight is the share of the service's traffic the version receives.
	Weight float64 `json:"weight"`
	// Replicas is the number of pods per cluster.
	Replicas int `json:"replicas"`
}

// Edge is a call from one service to another.
type Edge struct {
	From int `json:"from"`
	To   int `json:"to"`
	// CallsPerRequest is how many calls one request to From makes to To on
	// average (below one: only some requests call To).
	CallsPerRequest float64 `json:"calls_per_request"`
	// Remote is the share of calls sent to another cluster even though To
	// runs locally (locality failover, spill-over). Calls from a cluster
	// where To does not run always go to another cluster.
	Remote float64 `json:"remote"`
}

// FQDN returns the Kubernetes service host name.
func (s *Service) FQDN() string {
	return s.Name + "." + s.Namespace + ".svc." + TrustDomain
}

// Workload returns the Deployment name of version v.
func (s *Service) Workload(v int) string {
	if s.Gateway {
		return s.Name
	}
	return s.Name + "-" + s.Versions[v].Name
}

// Principal returns the SPIFFE identity of the service's workloads.
func (s *Service) Principal() string {
	return "spiffe://" + TrustDomain + "/ns/" + s.Namespace + "/sa/" + s.ServiceAccount
}

// InCluster reports whether the service runs in cluster c.
func (s *Service) InCluster(c int) bool {
	for _, x := range s.Clusters {
		if x == c {
			return true
		}
	}
	return false
}

// ServiceIndex returns the index of the named service, or -1.
func (t *Topology) ServiceIndex(name string) int {
	if i, ok := t.byName[name]; ok {
		return i
	}
	return -1
}

// ClusterIndex returns the index of the named cluster, or -1.
func (t *Topology) ClusterIndex(name string) int {
	for i, c := range t.Clusters {
		if c == name {
			return i
		}
	}
	return -1
}

// EdgeIndex returns the index of the edge from→to, or -1.
func (t *Topology) EdgeIndex(from, to int) int {
	if from < 0 || from >= len(t.Out) {
		return -1
	}
	for _, e := range t.Out[from] {
		if t.Edges[e].To == to {
			return e
		}
	}
	return -1
}

// MaxDepth returns the deepest level that has a service.
func (t *Topology) MaxDepth() int {
	d := 0
	for i := range t.Services {
		d = max(d, t.Services[i].Depth)
	}
	return d
}

// LongestPath returns the number of edges on the longest call chain from
// the gateway.
func (t *Topology) LongestPath() int {
	// Edges always go to a deeper level, so depth order is a topological order.
	order := make([]int, len(t.Services))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return t.Services[order[a]].Depth < t.Services[order[b]].Depth })
	longest := make([]int, len(t.Services))
	best := 0
	for _, s := range order {
		for _, e := range t.Out[s] {
			to := t.Edges[e].To
			if longest[s]+1 > longest[to] {
				longest[to] = longest[s] + 1
				best = max(best, longest[to])
			}
		}
	}
	return best
}

var (
	clusterNames = []string{"east", "west", "central", "north", "south", "eu-west", "eu-central", "ap-south"}
	nsWords      = []string{"shop", "payments", "identity", "search", "media", "platform", "data", "growth", "ops", "support", "catalog", "social", "logistics", "finance", "messaging", "ml", "ads", "travel", "content", "security"}
	svcNouns     = []string{"frontend", "cart", "checkout", "payment", "catalog", "product", "reviews", "ratings", "details", "inventory", "shipping", "user", "auth", "session", "search", "recommend", "ads", "currency", "email", "notification", "order", "invoice", "pricing", "promo", "account", "profile", "config", "feature", "audit", "ledger", "billing", "fraud", "risk", "geo", "media", "image", "video", "chat", "feed", "comment", "like", "follow", "wishlist", "loyalty", "tax", "quote", "booking", "ticket", "report", "export", "import", "policy", "token", "identity", "storage", "cache", "index", "query", "router", "scheduler"}
	svcSuffixes  = []string{"", "-api", "-svc", "-worker", "-backend", "-store", "-proxy", "-manager", "-engine", "-service"}
	tcpNouns     = []string{"redis", "mysql", "postgres", "mongo", "kafka", "memcached", "cassandra", "elastic", "rabbitmq", "etcd"}
)

// Generate builds the mesh for opts.
func Generate(opts Options) (*Topology, error) {
	n := opts.Services
	if n == 0 {
		n = 30
	}
	if n < 1 || n > MaxServices {
		return nil, fmt.Errorf("%w: services %d out of range [1, %d] (--services)", ErrBadOptions, n, MaxServices)
	}
	nc := opts.Clusters
	if nc == 0 {
		nc = 2
	}
	if nc < 1 || nc > MaxClusters {
		return nil, fmt.Errorf("%w: clusters %d out of range [1, %d] (--clusters)", ErrBadOptions, nc, MaxClusters)
	}
	nns := opts.Namespaces
	if nns == 0 {
		nns = min(max(1, n/10), 500)
	}
	if nns < 1 || nns > n {
		return nil, fmt.Errorf("%w: namespaces %d out of range [1, services=%d] (--namespaces)", ErrBadOptions, nns, n)
	}
	maxDepth := opts.MaxDepth
	if maxDepth == 0 {
		maxDepth = DefaultMaxDepth
	}
	if maxDepth < 1 || maxDepth > 32 {
		return nil, fmt.Errorf("%w: max depth %d out of range [1, 32] (--max-depth)", ErrBadOptions, maxDepth)
	}
	entry := opts.EntryRPS
	if entry == 0 {
		entry = max(50, 3*float64(n))
	}
	if entry < 0 || math.IsNaN(entry) || math.IsInf(entry, 0) {
		return nil, fmt.Errorf("%w: entry rate %v must be positive (--entry-rps)", ErrBadOptions, entry)
	}

	rng := rand.New(rand.NewPCG(uint64(opts.Seed), 0x6d657368))
	t := &Topology{Seed: opts.Seed, EntryRPS: entry}
	for i := range nc {
		if i < len(clusterNames) {
			t.Clusters = append(t.Clusters, clusterNames[i])
		} else {
			t.Clusters = append(t.Clusters, fmt.Sprintf("cluster-%d", i+1))
		}
	}
	nsOrder := rng.Perm(len(nsWords))
	for i := range nns {
		if i < len(nsWords) {
			t.Namespaces = append(t.Namespaces, nsWords[nsOrder[i]])
		} else {
			t.Namespaces = append(t.Namespaces, fmt.Sprintf("team-%d", i+1))
		}
	}

	allClusters := make([]int, nc)
	for i := range allClusters {
		allClusters[i] = i
	}
	gw := Service{
		ID: 0, Name: GatewayName, Namespace: IstioNamespace, Gateway: true, Protocol: ProtoHTTP, Port: 80,
		Clusters: allClusters, Versions: []Version{{Name: "v1", Weight: 1, Replicas: 2}},
		LatencyMS: 0.5, LatencySigma: 0.3, RequestBytes: 600, ResponseBytes: 4000, RetryAttempts: 2,
		MaxPendingRequests: 1024, MaxConnections: 1024, Consecutive5xx: 5, MTLS: MTLSStrict,
		CertLifetimeHours: 2160, ServiceAccount: "istio-ingressgateway-service-account",
	}
	t.Services = append(t.Services, gw)

	names := serviceNames(rng, n)
	// Depth: about one service in twelve is an entry service; the rest
	// spread over the deeper levels, with fewer at the bottom.
	nEntry := max(1, min(n, n/12))
	for i := range n {
		s := Service{ID: i + 1, Name: names[i]}
		s.Namespace = t.Namespaces[zipfIndex(rng, nns, 0.6)]
		if i < nEntry {
			s.Depth = 1
		} else if maxDepth > 1 {
			// Levels 2..maxDepth, later levels slightly less populated.
			s.Depth = 2 + int(float64(maxDepth-1)*math.Pow(rng.Float64(), 1.3))
			if s.Depth > maxDepth {
				s.Depth = maxDepth
			}
		} else {
			s.Depth = 1
		}
		s.Protocol = ProtoHTTP
		s.Port = 8080
		if rng.Float64() < 0.25 {
			s.Protocol = ProtoGRPC
			s.Port = 9090
		}
		if nc == 1 || rng.Float64() < 0.75 {
			s.Clusters = allClusters
		} else {
			s.Clusters = []int{rng.IntN(nc)}
		}
		nv := 1
		switch r := rng.Float64(); {
		case r < 0.05:
			nv = 3
		case r < 0.30:
			nv = 2
		}
		weights := [][]float64{{1}, {0.9, 0.1}, {0.6, 0.3, 0.1}}[nv-1]
		for v := range nv {
			rep := 1
			switch r := rng.Float64(); {
			case r < 0.2:
				rep = 3
			case r < 0.6:
				rep = 2
			}
			s.Versions = append(s.Versions, Version{Name: fmt.Sprintf("v%d", v+1), Weight: weights[v], Replicas: rep})
		}
		s.LatencyMS = round2(math.Exp(math.Log(1) + rng.Float64()*math.Log(40))) // 1..40 ms
		s.LatencySigma = round2(0.3 + 0.5*rng.Float64())
		s.ErrorRate = round4(0.0002 + 0.003*rng.Float64()*rng.Float64())
		s.RequestBytes = math.Round(100 + 1900*rng.Float64())
		s.ResponseBytes = math.Round(500 + 20000*rng.Float64()*rng.Float64())
		s.RetryAttempts = 2
		if rng.Float64() < 0.5 {
			s.TimeoutMS = float64(1000 * (1 + rng.IntN(15)))
		}
		s.MaxPendingRequests = 1024
		s.MaxConnections = 1024
		if rng.Float64() < 0.3 {
			s.MaxPendingRequests = 100
			s.MaxConnections = 100
		}
		s.Consecutive5xx = 5
		// Plaintext (DISABLE) never occurs in a healthy mesh; scenarios add it.
		s.MTLS = MTLSStrict
		if rng.Float64() < 0.25 {
			s.MTLS = MTLSPermissive
		}
		// Workload certificates from the mesh CA, rotated at two thirds of
		// their life.
		s.CertLifetimeHours = 2160
		s.ServiceAccount = s.Name
		t.Services = append(t.Services, s)
	}

	t.buildEdges(rng, maxDepth)
	t.makeTCPLeaves(rng)
	t.index()
	return t, nil
}

// buildEdges draws the call graph: every service gets a caller from a
// shallower level (so every service is reachable from the gateway), then
// extra calls are added toward popular services, which become hubs.
func (t *Topology) buildEdges(rng *rand.Rand, maxDepth int) {
	n := len(t.Services)
	// Popularity: Zipf over a random permutation, so a few services are hubs.
	pop := make([]float64, n)
	perm := rng.Perm(n - 1)
	for i, p := range perm {
		pop[p+1] = 1 / math.Pow(float64(i+1), 1.1)
	}
	// byDepth[d] lists services at depth d.
	byDepth := make([][]int, maxDepth+1)
	for i := 1; i < n; i++ {
		d := t.Services[i].Depth
		byDepth[d] = append(byDepth[d], i)
	}
	// Services sorted by depth; cum holds cumulative popularity, and
	// startOf[d] is the first position with depth >= d.
	order := make([]int, 0, n-1)
	for d := 1; d <= maxDepth; d++ {
		order = append(order, byDepth[d]...)
	}
	cum := make([]float64, len(order)+1)
	for i, s := range order {
		cum[i+1] = cum[i] + pop[s]
	}
	startOf := make([]int, maxDepth+2)
	pos := 0
	for d := 0; d <= maxDepth+1; d++ {
		startOf[d] = pos
		if d >= 1 && d <= maxDepth {
			pos += len(byDepth[d])
		}
	}
	// pick draws a service deeper than depth d, weighted by popularity.
	pick := func(d int) int {
		lo := startOf[min(d+1, maxDepth+1)]
		if lo >= len(order) {
			return -1
		}
		u := cum[lo] + rng.Float64()*(cum[len(order)]-cum[lo])
		i := sort.SearchFloat64s(cum[lo+1:], u) + lo
		if i >= len(order) {
			i = len(order) - 1
		}
		return order[i]
	}
	seen := make(map[[2]int]bool)
	add := func(from, to int, calls float64) {
		if from == to || seen[[2]int{from, to}] {
			return
		}
		seen[[2]int{from, to}] = true
		e := Edge{From: from, To: to, CallsPerRequest: round2(calls)}
		t.Edges = append(t.Edges, e)
	}
	// Gateway to every entry service.
	for _, s := range byDepth[1] {
		add(0, s, 1)
	}
	// A caller for every deeper service, preferably from the level above.
	for d := 2; d <= maxDepth; d++ {
		for _, s := range byDepth[d] {
			pd := d - 1
			for pd > 1 && len(byDepth[pd]) == 0 {
				pd--
			}
			if len(byDepth[pd]) == 0 {
				add(0, s, 1)
				continue
			}
			caller := byDepth[pd][rng.IntN(len(byDepth[pd]))]
			add(caller, s, 0.5+rng.Float64())
		}
	}
	// Extra calls: entry services fan out widely, others call a few
	// services, mostly popular ones.
	for d := 1; d < maxDepth; d++ {
		for _, s := range byDepth[d] {
			extra := geometric(rng, 0.45)
			if d == 1 {
				extra += 2
			}
			for range extra {
				to := pick(d)
				if to < 0 {
					break
				}
				add(s, to, 0.2+0.8*rng.Float64())
			}
		}
	}
	// The gateway splits traffic across entry services by popularity.
	var entrySum float64
	for _, s := range byDepth[1] {
		entrySum += pop[s] + 0.05
	}
	for i := range t.Edges {
		e := &t.Edges[i]
		if e.From == 0 {
			e.CallsPerRequest = round4((pop[e.To] + 0.05) / entrySum)
		}
		// Cross-cluster spill-over on some edges.
		if len(t.Clusters) > 1 && rng.Float64() < 0.1 {
			e.Remote = round2(0.05 + 0.25*rng.Float64())
		}
	}
	sort.Slice(t.Edges, func(a, b int) bool {
		if t.Edges[a].From != t.Edges[b].From {
			return t.Edges[a].From < t.Edges[b].From
		}
		return t.Edges[a].To < t.Edges[b].To
	})
}

// makeTCPLeaves turns some leaf services into TCP backends (databases,
// caches, brokers) that callers reach over plain TCP.
func (t *Topology) makeTCPLeaves(rng *rand.Rand) {
	hasOut := make([]bool, len(t.Services))
	for _, e := range t.Edges {
		hasOut[e.From] = true
	}
	used := make(map[string]bool, len(t.Services))
	for i := range t.Services {
		used[t.Services[i].Name] = true
	}
	for i := 1; i < len(t.Services); i++ {
		s := &t.Services[i]
		if hasOut[i] || s.Depth == 1 || rng.Float64() >= 0.25 {
			continue
		}
		base := tcpNouns[rng.IntN(len(tcpNouns))]
		name := base
		for k := 2; used[name]; k++ {
			name = fmt.Sprintf("%s-%d", base, k)
		}
		used[name] = true
		s.Name = name
		s.ServiceAccount = name
		s.Protocol = ProtoTCP
		s.Port = 6379
		s.TimeoutMS = 0
		s.ErrorRate = 0
	}
}

func (t *Topology) index() {
	t.byName = make(map[string]int, len(t.Services))
	for i := range t.Services {
		t.byName[t.Services[i].Name] = i
	}
	t.Out = make([][]int, len(t.Services))
	t.In = make([][]int, len(t.Services))
	for i, e := range t.Edges {
		t.Out[e.From] = append(t.Out[e.From], i)
		t.In[e.To] = append(t.In[e.To], i)
	}
}

func serviceNames(rng *rand.Rand, n int) []string {
	combos := make([]string, 0, len(svcNouns)*len(svcSuffixes))
	for _, s := range svcSuffixes {
		for _, w := range svcNouns {
			combos = append(combos, w+s)
		}
	}
	// Plain nouns first (shuffled), suffixed names after.
	plain := combos[:len(svcNouns)]
	rest := combos[len(svcNouns):]
	rng.Shuffle(len(plain), func(i, j int) { plain[i], plain[j] = plain[j], plain[i] })
	rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	names := make([]string, n)
	for i := range n {
		c := combos[i%len(combos)]
		if k := i / len(combos); k > 0 {
			c = fmt.Sprintf("%s-%d", c, k+1)
		}
		names[i] = c
	}
	return names
}

func zipfIndex(rng *rand.Rand, n int, s float64) int {
	// Inverse-CDF of a continuous power law, good enough for skewed picks.
	u := rng.Float64()
	i := int(float64(n) * math.Pow(u, 1/(1-s+1e-9)*0.5+0.5))
	return min(max(i, 0), n-1)
}

func geometric(rng *rand.Rand, p float64) int {
	k := 0
	for rng.Float64() < p && k < 20 {
		k++
	}
	return k
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }
func round4(x float64) float64 { return math.Round(x*10000) / 10000 }
