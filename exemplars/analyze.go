package exemplars

import (
	"cmp"
	"slices"

	"github.com/meshlens/meshlens/traces"
)

// TraceSummary describes one trace for the drill-down.
type TraceSummary struct {
	RootService   string   `json:"root_service"`
	RootOperation string   `json:"root_operation"`
	StartTime     float64  `json:"start_time"` // Unix seconds
	DurationMS    float64  `json:"duration_ms"`
	SpanCount     int      `json:"span_count"`
	ErrorSpans    int      `json:"error_spans"`
	Services      []string `json:"services"` // distinct, in order of first span start
	// CriticalHop is the span with the most self time; nil for a trace
	// without spans.
	CriticalHop *Hop `json:"critical_hop,omitempty"`
}

// Hop is one span with its self time: its duration minus the union of its
// children's intervals (clipped to the span).
type Hop struct {
	Service   string  `json:"service"`
	Operation string  `json:"operation"`
	Kind      string  `json:"kind"`
	SpanID    string  `json:"span_id"`
	SelfMS    float64 `json:"self_ms"`
	// Share is SelfMS over the trace's duration.
	Share float64 `json:"share"`
}

// Edge is a caller → callee pair of services. Caller is "" for the self
// time of a trace's entry service, which no traced span called; Callee is
// "" for a client span whose server side is not in the trace and that
// names no peer.service.
type Edge struct {
	Caller string `json:"caller"`
	Callee string `json:"callee"`
}

// analysis is what the drill-down computes from the spans of one trace.
type analysis struct {
	summary TraceSummary
	// selfNS is the self time of each edge, in nanoseconds.
	selfNS map[Edge]uint64
}

// maxDepth bounds the walk up a span's ancestors (a malformed trace may
// hold a cycle of parent ids).
const maxDepth = 256

// analyze summarizes the spans of one trace: root, duration, services,
// errors, the span with the most self time and the self time by edge.
//
// A span's parent is the span whose id is its parent id; when a client and
// a server span share that id (Zipkin's shared spans), the server half. A
// server span that shares its own id with a client span is that client
// span's child.
//
// Self time goes to edges: a client span's to the call it makes (its
// service → the service of its server child, or its peer.service); a span
// without a parent to ("" → its service); any other span's to the call
// that entered its service: (parent's service → its service) when the
// parent is in another service, otherwise its parent's edge.
func analyze(spans []traces.Span) analysis {
	a := analysis{selfNS: map[Edge]uint64{}}
	if len(spans) == 0 {
		return a
	}
	sum := traces.Summarize(spans)
	a.summary = TraceSummary{
		RootService:   sum.RootService,
		RootOperation: sum.RootName,
		StartTime:     float64(sum.StartUnixNano) / 1e9,
		DurationMS:    nsToMS(sum.EndUnixNano - sum.StartUnixNano),
		SpanCount:     len(spans),
	}

	order := make([]int, len(spans))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int { return cmp.Compare(spans[x].StartUnixNano, spans[y].StartUnixNano) })
	seen := map[string]bool{}
	for _, i := range order {
		s := &spans[i]
		if s.StatusCode == traces.StatusError {
			a.summary.ErrorSpans++
		}
		if s.Service != "" && !seen[s.Service] {
			seen[s.Service] = true
			a.summary.Services = append(a.summary.Services, s.Service)
		}
	}

	parent := parents(spans)
	children := make([][]int, len(spans))
	for i, p := range parent {
		if p >= 0 {
			children[p] = append(children[p], i)
		}
	}

	self := make([]uint64, len(spans))
	best := -1
	for i := range spans {
		self[i] = selfTime(spans, i, children[i])
		if best < 0 || self[i] > self[best] || self[i] == self[best] && spans[i].StartUnixNano < spans[best].StartUnixNano {
			best = i
		}
	}
	b := &spans[best]
	hop := &Hop{Service: b.Service, Operation: b.Name, Kind: b.Kind.String(), SpanID: b.SpanID.String(), SelfMS: nsToMS(self[best])}
	if d := sum.EndUnixNano - sum.StartUnixNano; d > 0 {
		hop.Share = float64(self[best]) / float64(d)
	}
	a.summary.CriticalHop = hop

	edges := make([]Edge, len(spans))
	done := make([]bool, len(spans))
	var edgeOf func(i, depth int) Edge
	edgeOf = func(i, depth int) Edge {
		if done[i] {
			return edges[i]
		}
		s := &spans[i]
		var e Edge
		p := parent[i]
		switch {
		case s.Kind == traces.KindClient:
			e = Edge{Caller: s.Service, Callee: callee(spans, s, children[i])}
		case p < 0:
			e = Edge{Callee: s.Service}
		case spans[p].Service != s.Service:
			e = Edge{Caller: spans[p].Service, Callee: s.Service}
		case depth >= maxDepth:
			e = Edge{Caller: s.Service, Callee: s.Service}
		default:
			e = edgeOf(p, depth+1)
		}
		edges[i], done[i] = e, true
		return e
	}
	for i := range spans {
		if self[i] > 0 {
			a.selfNS[edgeOf(i, 0)] += self[i]
		}
	}
	return a
}

// parents returns the index of each span's parent in spans, -1 for none.
func parents(spans []traces.Span) []int {
	// byID holds, per span id, the index of a non-client span if there is
	// one, else of the client span.
	byID := make(map[traces.SpanID]int, len(spans))
	clients := map[traces.SpanID]int{}
	for i := range spans {
		s := &spans[i]
		if s.Kind == traces.KindClient {
			clients[s.SpanID] = i
			if _, ok := byID[s.SpanID]; ok {
				continue
			}
		}
		if j, ok := byID[s.SpanID]; ok && spans[j].Kind != traces.KindClient {
			continue
		}
		byID[s.SpanID] = i
	}
	parent := make([]int, len(spans))
	for i := range spans {
		s := &spans[i]
		parent[i] = -1
		if s.Kind == traces.KindServer {
			if c, ok := clients[s.SpanID]; ok && c != i {
				parent[i] = c // the server half of a shared span
				continue
			}
		}
		if s.ParentSpanID.IsZero() {
			continue
		}
		if p, ok := byID[s.ParentSpanID]; ok && p != i {
			parent[i] = p
		}
	}
	// Break cycles of parent ids: a span that reaches itself going up
	// loses its parent.
	for i := range parent {
		p, n := parent[i], 0
		for p >= 0 && p != i && n < maxDepth {
			p, n = parent[p], n+1
		}
		if p == i || n == maxDepth {
			parent[i] = -1
		}
	}
	return parent
}

// callee is the service a client span calls: its server child's, else its
// peer.service attribute.
func callee(spans []traces.Span, s *traces.Span, children []int) string {
	for _, c := range children {
		if spans[c].Kind == traces.KindServer {
			return spans[c].Service
		}
	}
	for _, c := range children {
		if spans[c].Service != s.Service {
			return spans[c].Service
		}
	}
	if a, ok := s.Attr("peer.service"); ok {
		return a.Text()
	}
	return ""
}

// selfTime is the span's duration minus the union of its children's
// intervals clipped to the span.
func selfTime(spans []traces.Span, i int, children []int) uint64 {
	s := &spans[i]
	d := s.DurationNanos()
	if d == 0 || len(children) == 0 {
		return d
	}
	type iv struct{ a, b uint64 }
	ivs := make([]iv, 0, len(children))
	for _, c := range children {
		a, b := max(spans[c].StartUnixNano, s.StartUnixNano), min(spans[c].EndUnixNano, s.EndUnixNano)
		if a < b {
			ivs = append(ivs, iv{a, b})
		}
	}
	slices.SortFunc(ivs, func(x, y iv) int { return cmp.Compare(x.a, y.a) })
	var covered, curA, curB uint64
	open := false
	for _, v := range ivs {
		if open && v.a <= curB {
			curB = max(curB, v.b)
			continue
		}
		if open {
			covered += curB - curA
		}
		curA, curB, open = v.a, v.b, true
	}
	if open {
		covered += curB - curA
	}
	return d - min(d, covered)
}

func nsToMS(ns uint64) float64 { return float64(ns) / 1e6 }
