package sim

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

// TraceID is a 128-bit trace id.
type TraceID [16]byte

// SpanID is a 64-bit span id.
type SpanID [8]byte

// String returns the lower-case hex form.
func (t TraceID) String() string { return hex.EncodeToString(t[:]) }

// String returns the lower-case hex form.
func (s SpanID) String() string { return hex.EncodeToString(s[:]) }

// IsZero reports whether the id is unset.
func (s SpanID) IsZero() bool { return s == SpanID{} }

// Span kinds.
const (
	SpanClient = "CLIENT"
	SpanServer = "SERVER"
)

// Span is one span as an Envoy sidecar reports it.
type Span struct {
	TraceID  TraceID
	ID       SpanID
	ParentID SpanID // zero for the root
	Kind     string
	Name     string
	// Start and Duration in microseconds.
	Start    int64
	Duration int64
	// LocalService is Istio's "<canonical service>.<namespace>".
	LocalService string
	LocalIPv4    string
	RemoteIPv4   string
	RemotePort   int
	Error        bool
	// Tags are sorted by key.
	Tags []Tag
}

// Tag is a span attribute.
type Tag struct{ Key, Value string }

// generateTraces produces the sampled traces of this step. Each trace
// starts at an ingress gateway pod and follows the call graph with the
// same routing, outcomes and latencies as the metrics.
func (s *Sim) generateTraces(now time.Time) []Span {
	s.spanBuf = s.spanBuf[:0]
	if s.opts.TraceSampling < 0 {
		return s.spanBuf
	}
	secs := s.interval.Seconds()
	entries := s.topo.Out[0]
	if len(entries) == 0 {
		return s.spanBuf
	}
	for c := range s.topo.Clusters {
		rs := newStream(s.seed, uint64(s.step), uint64(c), 0x74726163)
		want := s.topo.EntryRPS * secs * diurnal(now, c) * s.opts.TraceSampling
		n := int(want)
		if rs.float() < want-float64(n) {
			n++
		}
		n = min(n, s.opts.MaxTracesPerStep)
		gws := s.pods[0][c][0]
		for range n {
			var tid TraceID
			binary.BigEndian.PutUint64(tid[:8], rs.next())
			binary.BigEndian.PutUint64(tid[8:], rs.next())
			g := &traceGen{s: s, rs: &rs, tid: tid, budget: s.opts.MaxSpansPerTrace}
			gw := gws[int(rs.next()%uint64(len(gws)))]
			// Start somewhere in the interval; shift so the trace ends
			// before the scrape.
			startUS := now.UnixMicro() - int64(rs.float()*secs*1e6)
			first := len(s.spanBuf)
			end := g.callees(gw, 0, c, 0, SpanID{}, startUS, 0)
			if over := end - now.UnixMicro(); over > 0 {
				for i := first; i < len(s.spanBuf); i++ {
					s.spanBuf[i].Start -= over
				}
				g.shiftExemplars(over)
			}
			g.commitExemplars()
		}
	}
	return s.spanBuf
}

type pendingExemplar struct {
	ref Ref
	ex  Exemplar
}

type traceGen struct {
	s      *Sim
	rs     *stream
	tid    TraceID
	budget int
	ex     []pendingExemplar
}

func (g *traceGen) spanID() SpanID {
	var id SpanID
	binary.BigEndian.PutUint64(id[:], g.rs.next()|1)
	return id
}

// callees makes the calls of one request handled by pod (of service svc,
// cluster c, version v), sequentially from cursor (µs). It returns the end
// of the last call.
func (g *traceGen) callees(pod int32, svc, c, v int, parent SpanID, cursor int64, depth int) int64 {
	s := g.s
	if svc != 0 {
		for _, ei := range s.topo.Out[svc] {
			e := &s.topo.Edges[ei]
			calls := int(e.CallsPerRequest)
			if g.rs.float() < e.CallsPerRequest-float64(calls) {
				calls++
			}
			for range calls {
				cursor = g.call(pod, ei, c, v, parent, cursor, depth)
			}
		}
	} else {
		// The gateway routes each request to one entry service, by its split.
		u := g.rs.float()
		out := s.topo.Out[0]
		ei := out[len(out)-1]
		for _, x := range out {
			u -= s.topo.Edges[x].CallsPerRequest
			if u < 0 {
				ei = x
				break
			}
		}
		cursor = g.call(pod, ei, c, v, parent, cursor, depth)
	}
	return cursor
}

// call makes one call along edge ei from pod; it returns the time the
// client span ends.
func (g *traceGen) call(pod int32, ei, c, v int, parent SpanID, start int64, depth int) int64 {
	s := g.s
	if g.budget < 2 {
		return start
	}
	fl := s.flowsFrom[[3]int32{int32(ei), int32(c), int32(v)}]
	if len(fl) == 0 {
		return start
	}
	// Route by flow rate.
	var total float64
	for _, fi := range fl {
		total += s.flows[fi].RPS
	}
	u := g.rs.float() * total
	fi := int(fl[len(fl)-1])
	for _, x := range fl {
		u -= s.flows[x].RPS
		if u < 0 {
			fi = int(x)
			break
		}
	}
	f := &s.flows[fi]
	if f.tcp {
		return start
	}
	h := s.hopParams(fi)
	srcOC := pickOutcome(&f.src, g.rs.float())
	dstPod := f.dstPods[int(g.rs.next()%uint64(len(f.dstPods)))]
	dst := &s.topo.Services[f.To]
	src := &s.topo.Services[f.From]
	clientID := g.spanID()
	g.budget--
	client := Span{TraceID: g.tid, ID: clientID, ParentID: parent, Kind: SpanClient,
		Name: dst.FQDN() + ":" + strconv.Itoa(dst.Port) + "/*", Start: start,
		LocalService: src.Name + "." + src.Namespace, LocalIPv4: s.targets[pod].ip,
		RemoteIPv4: s.targets[dstPod].ip, RemotePort: dst.Port}
	var durMS float64
	switch srcOC {
	case ocOverflow, ocNoHealthy, ocTimeout:
		med, sig := h.srcLatency(srcOC)
		durMS = g.rs.lognormal(med, sig)
	default:
		// The request reaches the destination: a server span, own work and
		// the calls it makes.
		dstOC := ocOK
		switch srcOC {
		case ocAppError:
			dstOC = ocAppError
		case ocUpstream503:
			dstOC = ocUpstream503
		}
		netUS := int64(h.netMS * 1000 / 2)
		serverStart := start + netUS
		serverID := g.spanID()
		g.budget--
		e := &s.eff[fi]
		own := g.rs.lognormal(dst.LatencyMS*e.factor()+e.latAddMS, dst.LatencySigma) * 1000
		cursor := serverStart + int64(own/2)
		if dstOC == ocOK && depth < 32 {
			cursor = g.callees(dstPod, f.To, f.DstCluster, f.DstVersion, serverID, cursor, depth+1)
		}
		serverEnd := cursor + int64(own/2)
		server := Span{TraceID: g.tid, ID: serverID, ParentID: clientID, Kind: SpanServer,
			Name: client.Name, Start: serverStart, Duration: max(1, serverEnd-serverStart),
			LocalService: dst.Name + "." + dst.Namespace, LocalIPv4: s.targets[dstPod].ip,
			RemoteIPv4: s.targets[pod].ip, Error: dstOC != ocOK}
		server.Tags = g.tags(f, dstPod, dstOC, true, fi)
		s.spanBuf = append(s.spanBuf, server)
		g.exemplar(groupKey{flow: int32(fi), pod: dstPod, oc: dstOC, dst: true, plain: e.plain}, float64(server.Duration)/1000, serverEnd, serverID)
		durMS = float64(serverEnd-start+netUS) / 1000
	}
	client.Duration = max(1, int64(durMS*1000))
	client.Error = srcOC != ocOK
	client.Tags = g.tags(f, pod, srcOC, false, fi)
	s.spanBuf = append(s.spanBuf, client)
	end := start + client.Duration
	g.exemplar(groupKey{flow: int32(fi), pod: pod, oc: srcOC, plain: s.eff[fi].plain}, durMS, end, clientID)
	return end
}

func pickOutcome(fr *[numOutcomes]float64, u float64) outcome {
	for oc := range numOutcomes {
		u -= fr[oc]
		if u < 0 {
			return oc
		}
	}
	return ocOK
}

// exemplar remembers an exemplar for the duration-histogram bucket of the
// group's series that holds value v (ms).
func (g *traceGen) exemplar(k groupKey, v float64, endUS int64, id SpanID) {
	base, ok := g.s.groups[k]
	if !ok {
		return
	}
	b := base + Ref(grpDur)
	i := sort.SearchFloat64s(DurationBuckets, v) // first bucket with le >= v
	g.ex = append(g.ex, pendingExemplar{ref: b + Ref(i), ex: Exemplar{Ref: b + Ref(i), T: endUS / 1000, V: v, TraceID: g.tid, SpanID: id}})
}

func (g *traceGen) shiftExemplars(us int64) {
	for i := range g.ex {
		g.ex[i].ex.T -= (us + 999) / 1000
	}
}

func (g *traceGen) commitExemplars() {
	for _, p := range g.ex {
		g.s.exByRef[p.ref] = p.ex
	}
}

// tags returns the span attributes Istio's Envoy sets.
func (g *traceGen) tags(f *flow, pod int32, oc outcome, server bool, fi int) []Tag {
	s := g.s
	t := &s.targets[pod]
	svc := &s.topo.Services[t.service]
	dst := &s.topo.Services[f.To]
	code, _, flags := oc.codes(f.grpc, !server)
	proto := "HTTP/1.1"
	if f.grpc {
		proto = "HTTP/2"
	}
	upstream := "outbound|" + strconv.Itoa(dst.Port) + "||" + dst.FQDN()
	if server {
		upstream = "inbound|" + strconv.Itoa(dst.Port) + "||"
	}
	rid := g.rs.next()
	tags := []Tag{
		{"component", "proxy"},
		{"downstream_cluster", "-"},
		{"guid:x-request-id", requestID(rid, g.rs.next())},
		{"http.method", "GET"},
		{"http.protocol", proto},
		{"http.status_code", code},
		{"http.url", "http://" + dst.Name + "." + dst.Namespace + ":" + strconv.Itoa(dst.Port) + "/"},
		{"istio.canonical_revision", canonicalRevision(svc, t.version)},
		{"istio.canonical_service", svc.Name},
		{"istio.cluster_id", s.topo.Clusters[t.cluster]},
		{"istio.mesh_id", topology.MeshID},
		{"istio.namespace", svc.Namespace},
		{"node_id", "sidecar~" + t.ip + "~" + t.pod + "." + svc.Namespace + "~" + svc.Namespace + ".svc." + topology.TrustDomain},
		{"peer.address", t.ip},
		{"request_size", strconv.Itoa(int(dst.RequestBytes))},
		{"response_flags", flags},
		{"response_size", strconv.Itoa(int(math.Round(dst.ResponseBytes)))},
		{"upstream_cluster", upstream},
		{"upstream_cluster.name", upstream},
		{"user_agent", "Go-http-client/1.1"},
	}
	if oc != ocOK {
		tags = append(tags, Tag{"error", "true"})
		sort.Slice(tags, func(a, b int) bool { return tags[a].Key < tags[b].Key })
	}
	_ = fi
	return tags
}

func canonicalRevision(svc *topology.Service, v int) string {
	if svc.Gateway {
		return "latest"
	}
	return svc.Versions[v].Name
}

func requestID(a, b uint64) string {
	var u [16]byte
	binary.BigEndian.PutUint64(u[:8], a)
	binary.BigEndian.PutUint64(u[8:], b)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
