package spanblock

import (
	"fmt"
	"math/rand/v2"

	"github.com/meshlens/meshlens/traces"
)

// istioSpans returns ntraces traces of about 5 spans each, shaped as Istio's
// Envoy sidecars report them through Zipkin: an ingress gateway span, then
// client and server spans per hop, each with Envoy's tags. Traces start
// evenly over [start, start+spreadNanos).
func istioSpans(rng *rand.Rand, ntraces int, start, spreadNanos uint64) []traces.Span {
	const namespaces, services = 8, 60
	var spans []traces.Span
	for t := range ntraces {
		var tid traces.TraceID
		for i := range tid {
			tid[i] = byte(rng.Uint32())
		}
		t0 := start + uint64(t)*spreadNanos/uint64(max(ntraces, 1))
		reqID := fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint64()&0xffffffffffff)
		hops := 2 + rng.IntN(3) // 1 gateway span + 2 spans per further hop: 3, 5 or 7 spans
		svc := make([]int, hops+1)
		for i := range svc {
			svc[i] = rng.IntN(services)
		}
		var parent traces.SpanID
		at := t0
		dur := uint64(5_000_000 + rng.IntN(50_000_000))
		add := func(s int, kind traces.Kind, name string, code int64, cluster string) traces.SpanID {
			var sid traces.SpanID
			for i := range sid {
				sid[i] = byte(rng.Uint32())
			}
			ns := fmt.Sprintf("ns-%d", s%namespaces)
			service := fmt.Sprintf("svc-%d.%s", s, ns)
			path := fmt.Sprintf("/api/v1/items/%d", rng.IntN(5000))
			sp := traces.Span{
				TraceID: tid, SpanID: sid, ParentSpanID: parent, Name: name, Kind: kind,
				StartUnixNano: at, EndUnixNano: at + dur,
				Service:  service,
				Resource: []traces.Attr{traces.String(traces.ServiceNameKey, service)},
				Attrs: []traces.Attr{
					traces.String("node_id", fmt.Sprintf("sidecar~10.%d.%d.%d~svc-%d-%x.%s~%s.svc.cluster.local", s%4, s, rng.IntN(8), s, rng.IntN(8)<<16|0xbeef, ns, ns)),
					traces.String("zone", fmt.Sprintf("europe-west1-%c", 'a'+rune(s%3))),
					traces.String("guid:x-request-id", reqID),
					traces.String("http.url", "http://"+service+":8080"+path),
					traces.String("http.method", []string{"GET", "GET", "GET", "POST"}[rng.IntN(4)]),
					traces.String("downstream_cluster", "-"),
					traces.String("user_agent", "Go-http-client/1.1"),
					traces.String("http.protocol", "HTTP/1.1"),
					traces.Int("request_size", int64(rng.IntN(2000))),
					traces.String("upstream_cluster", cluster),
					traces.String("upstream_cluster.name", cluster),
					traces.Int("http.status_code", code),
					traces.Int("response_size", int64(rng.IntN(20000))),
					traces.String("response_flags", "-"),
					traces.String("istio.canonical_revision", "v1"),
					traces.String("istio.canonical_service", fmt.Sprintf("svc-%d", s)),
					traces.String("istio.mesh_id", "cluster.local"),
					traces.String("istio.namespace", ns),
					traces.String("component", "proxy"),
				},
			}
			if code >= 500 {
				sp.StatusCode = traces.StatusError
			}
			spans = append(spans, sp)
			at += uint64(rng.IntN(1_000_000))
			dur = dur * 9 / 10
			return sid
		}
		code := int64(200)
		if rng.IntN(50) == 0 {
			code = 503
		}
		parent = add(svc[0], traces.KindServer, "ingress", code, "outbound|8080||"+fmt.Sprintf("svc-%d", svc[1]))
		for h := 1; h < hops; h++ {
			host := fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:8080/*", svc[h], svc[h]%namespaces)
			parent = add(svc[h-1], traces.KindClient, host, code, fmt.Sprintf("outbound|8080||svc-%d.ns-%d.svc.cluster.local", svc[h], svc[h]%namespaces))
			parent = add(svc[h], traces.KindServer, host, code, "inbound|8080||")
		}
	}
	return spans
}
