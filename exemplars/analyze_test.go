package exemplars

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/meshlens/meshlens/traces"
)

// sp is a span of trace 1 with times in ms.
func sp(id, parent byte, svc string, kind traces.Kind, a, b uint64) traces.Span {
	s := traces.Span{TraceID: traces.TraceID{15: 1}, Service: svc, Name: fmt.Sprintf("op%d", id), Kind: kind,
		StartUnixNano: 1e18 + a*ms, EndUnixNano: 1e18 + b*ms}
	s.SpanID[7] = id
	s.ParentSpanID[7] = parent
	return s
}

func edgesOf(a analysis) string {
	var out []string
	for e, ns := range a.selfNS {
		out = append(out, fmt.Sprintf("%s>%s=%g", e.Caller, e.Callee, nsToMS(ns)))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestAnalyze(t *testing.T) {
	server, client, internal := traces.KindServer, traces.KindClient, traces.KindInternal
	for _, tc := range []struct {
		name    string
		spans   []traces.Span
		hop     string // service/operation=self ms
		edges   string
		summary string // root service, services
	}{
		{
			name: "parallel children overlap",
			spans: []traces.Span{
				sp(1, 0, "web", server, 0, 100),
				sp(2, 1, "web", client, 10, 60),
				sp(3, 1, "web", client, 40, 80), // overlaps 2: covered 10-80
				sp(4, 2, "cart", server, 12, 58),
				sp(5, 3, "stock", server, 41, 79),
			},
			hop:     "cart/op4=46",
			edges:   ">web=30 web>cart=50 web>stock=40",
			summary: "web [web cart stock]",
		},
		{
			// Zipkin's shared spans: the server half keeps the client's id;
			// the callee's own calls name that id as parent.
			name: "shared span ids",
			spans: []traces.Span{
				sp(1, 0, "web", server, 0, 100),
				sp(2, 1, "web", client, 0, 100),
				sp(2, 1, "cart", server, 5, 95),
				sp(3, 2, "cart", client, 10, 20),
				sp(3, 2, "db", server, 11, 19),
			},
			hop:     "cart/op2=80",
			edges:   "cart>db=10 web>cart=90",
			summary: "web [web cart db]",
		},
		{
			name: "children outside the parent are clipped; internal spans count to their service's caller",
			spans: []traces.Span{
				sp(1, 0, "web", server, 0, 50),
				sp(2, 1, "web", client, 40, 90),
				sp(3, 2, "cart", server, 45, 85),
				sp(4, 3, "cart", internal, 50, 60),
			},
			hop:     "web/op1=40",
			edges:   ">web=40 web>cart=50",
			summary: "web [web cart]",
		},
		{
			name: "a client without a traced server calls its peer.service",
			spans: func() []traces.Span {
				s := []traces.Span{sp(1, 0, "web", server, 0, 10), sp(2, 1, "web", client, 1, 9), sp(3, 1, "web", client, 9, 10)}
				s[1].Attrs = []traces.Attr{traces.String("peer.service", "redis")}
				return s
			}(),
			hop:     "web/op2=8",
			edges:   ">web=1 web>=1 web>redis=8",
			summary: "web [web]",
		},
		{
			name: "a cycle of parent ids and a missing root",
			spans: []traces.Span{
				sp(1, 2, "a", server, 0, 10),
				sp(2, 1, "b", server, 2, 8),
				sp(3, 9, "c", server, 20, 30),
			},
			hop:     "c/op3=10",
			edges:   ">a=4 >c=10 a>b=6",
			summary: "a [a b c]",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := analyze(tc.spans)
			h := a.summary.CriticalHop
			if got := fmt.Sprintf("%s/%s=%g", h.Service, h.Operation, h.SelfMS); got != tc.hop {
				t.Errorf("hop %s, want %s", got, tc.hop)
			}
			if got := edgesOf(a); got != tc.edges {
				t.Errorf("edges %s, want %s", got, tc.edges)
			}
			if got := fmt.Sprintf("%s %v", a.summary.RootService, a.summary.Services); got != tc.summary {
				t.Errorf("summary %s, want %s", got, tc.summary)
			}
		})
	}
	if a := analyze(nil); a.summary.CriticalHop != nil || len(a.selfNS) != 0 {
		t.Errorf("no spans: %+v", a)
	}
}
