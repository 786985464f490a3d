package jaeger

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/query/internal/memreader"
)

var now = time.Unix(1_700_000_000, 0)

func ns(msAgo int64) uint64 {
	return uint64(now.Add(-time.Duration(msAgo) * time.Millisecond).UnixNano())
}

func mustID(t testing.TB, s string) traces.TraceID {
	id, err := traces.ParseTraceID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fixture: trace A, frontend (client) -> backend (server, error) with an
// event and a link; trace B with a 64-bit id.
func fixture(t testing.TB) []traces.Span {
	a := mustID(t, "0af7651916cd43dd8448eb211c80319c")
	b := mustID(t, "463ac35c9f6413ad")
	fe := []traces.Attr{traces.String("service.name", "frontend"), traces.String("host.name", "fe-1"), traces.Int("ip", 0x0a000001)}
	be := []traces.Attr{traces.String("service.name", "backend"), traces.String("k8s.pod.name", "be-0")}
	return []traces.Span{
		{TraceID: a, SpanID: traces.SpanID{0xa1}, Name: "GET /cart", Kind: traces.KindServer, StartUnixNano: ns(1000), EndUnixNano: ns(700),
			Service: "frontend", Resource: fe, ScopeName: "io.opentelemetry.http", ScopeVersion: "1.2",
			Attrs: []traces.Attr{traces.String("http.method", "GET"), traces.Int("http.status_code", 200), traces.String("telemetry.sdk.language", "go")}},
		{TraceID: a, SpanID: traces.SpanID{0xa2}, ParentSpanID: traces.SpanID{0xa1}, Name: "backend.call", Kind: traces.KindClient, StartUnixNano: ns(990), EndUnixNano: ns(720),
			Service: "frontend", Resource: fe, StatusCode: traces.StatusOK},
		{TraceID: a, SpanID: traces.SpanID{0xa3}, ParentSpanID: traces.SpanID{0xa2}, Name: "POST /pay", Kind: traces.KindServer, StartUnixNano: ns(980), EndUnixNano: ns(730),
			Service: "backend", Resource: be, StatusCode: traces.StatusError, StatusMessage: "boom", TraceState: "k=v",
			Attrs:  []traces.Attr{traces.Int("big", 1<<60), traces.Float("load", 0.5), traces.Bool("retry", true), {Key: "raw", Type: traces.TypeBytes, Str: "AQI="}},
			Events: []traces.Event{{TimeUnixNano: ns(900), Name: "exception", Attrs: []traces.Attr{traces.String("z", "1"), traces.String("a", "2")}}},
			Links:  []traces.Link{{TraceID: b, SpanID: traces.SpanID{0xb1}}}},
		{TraceID: b, SpanID: traces.SpanID{0xb1}, Name: "GET /health", Kind: traces.KindServer, StartUnixNano: ns(500), EndUnixNano: ns(499),
			Service: "frontend", Resource: fe},
		// A span of an unknown parent that does not start within it.
		{TraceID: b, SpanID: traces.SpanID{0xb2}, ParentSpanID: traces.SpanID{0xff}, Name: "orphan", StartUnixNano: ns(400), EndUnixNano: ns(399),
			Service: "backend", Resource: be},
	}
}

func newServer(t testing.TB, r traces.Reader) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("/jaeger/", http.StripPrefix("/jaeger", NewHandler(r, Options{Now: func() time.Time { return now }})))
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func get(t testing.TB, s *httptest.Server, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(s.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

type envelope struct {
	Data   json.RawMessage `json:"data"`
	Total  int             `json:"total"`
	Limit  int             `json:"limit"`
	Offset int             `json:"offset"`
	Errors []struct {
		Code    int    `json:"code"`
		Msg     string `json:"msg"`
		TraceID string `json:"traceID"`
	} `json:"errors"`
}

func getData(t testing.TB, s *httptest.Server, path string, data any) envelope {
	t.Helper()
	code, body := get(t, s, path)
	if code != 200 {
		t.Fatalf("GET %s = %d %s", path, code, body)
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, k := range []string{`"data":`, `"total":`, `"limit":`, `"offset":`, `"errors":`} {
		if !strings.Contains(string(body), k) {
			t.Errorf("envelope %s lacks %s", body, k)
		}
	}
	if data != nil {
		if err := json.Unmarshal(env.Data, data); err != nil {
			t.Fatalf("%v: %s", err, env.Data)
		}
	}
	return env
}

func TestServicesAndOperations(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	var svcs []string
	if env := getData(t, s, "/jaeger/api/services", &svcs); !slices.Equal(svcs, []string{"backend", "frontend"}) || env.Total != 2 {
		t.Errorf("services = %v total %d", svcs, env.Total)
	}
	var names []string
	getData(t, s, "/jaeger/api/services/frontend/operations", &names)
	if want := []string{"GET /cart", "GET /health", "backend.call"}; !slices.Equal(names, want) {
		t.Errorf("operations = %v, want %v", names, want)
	}
	var ops []operation
	getData(t, s, "/jaeger/api/operations?service=backend", &ops)
	if want := []operation{{"POST /pay", "server"}, {"orphan", ""}}; !slices.Equal(ops, want) {
		t.Errorf("operations = %v, want %v", ops, want)
	}
	getData(t, s, "/jaeger/api/operations?service=frontend&spanKind=client", &ops)
	if want := []operation{{"backend.call", "client"}}; !slices.Equal(ops, want) {
		t.Errorf("client operations = %v, want %v", ops, want)
	}
	if code, body := get(t, s, "/jaeger/api/operations"); code != 400 || !strings.Contains(string(body), "parameter 'service' is required") {
		t.Errorf("without service: %d %s", code, body)
	}
}

func TestTraceByID(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	var trs []uiTrace
	getData(t, s, "/jaeger/api/traces/0af7651916cd43dd8448eb211c80319c", &trs)
	if len(trs) != 1 || len(trs[0].Spans) != 3 {
		t.Fatalf("traces = %+v", trs)
	}
	tr := trs[0]
	if tr.TraceID != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("traceID = %s", tr.TraceID)
	}
	root, client, server := tr.Spans[0], tr.Spans[1], tr.Spans[2]
	if root.SpanID != "a100000000000000" || root.OperationName != "GET /cart" || root.StartTime != uint64(now.UnixMicro())-1_000_000 || root.Duration != 300_000 {
		t.Errorf("root = %+v", root)
	}
	if len(root.References) != 0 || root.References == nil {
		t.Errorf("root references = %#v, want []", root.References)
	}
	tagsJSON := func(kvs []keyValue) string { b, _ := json.Marshal(kvs); return string(b) }
	// Sorted by key; telemetry.sdk.language moved to the process.
	if got, want := tagsJSON(root.Tags), `[{"key":"http.method","type":"string","value":"GET"},{"key":"http.status_code","type":"int64","value":200},{"key":"otel.scope.name","type":"string","value":"io.opentelemetry.http"},{"key":"otel.scope.version","type":"string","value":"1.2"},{"key":"span.kind","type":"string","value":"server"}]`; got != want {
		t.Errorf("root tags =\n%s\nwant\n%s", got, want)
	}
	if got, want := tagsJSON(client.Tags), `[{"key":"otel.status_code","type":"string","value":"OK"},{"key":"span.kind","type":"string","value":"client"}]`; got != want {
		t.Errorf("client tags = %s, want %s", got, want)
	}
	if got, want := tagsJSON(server.Tags), `[{"key":"big","type":"int64","value":"1152921504606846976"},{"key":"error","type":"bool","value":true},{"key":"load","type":"float64","value":0.5},{"key":"otel.status_code","type":"string","value":"ERROR"},{"key":"otel.status_description","type":"string","value":"boom"},{"key":"raw","type":"binary","value":"AQI="},{"key":"retry","type":"bool","value":true},{"key":"span.kind","type":"string","value":"server"},{"key":"w3c.tracestate","type":"string","value":"k=v"}]`; got != want {
		t.Errorf("server tags =\n%s\nwant\n%s", got, want)
	}
	if want := []uiReference{{"CHILD_OF", "0af7651916cd43dd8448eb211c80319c", "a200000000000000"}, {"FOLLOWS_FROM", "463ac35c9f6413ad", "b100000000000000"}}; !slices.Equal(server.References, want) {
		t.Errorf("server references = %v, want %v", server.References, want)
	}
	if len(server.Logs) != 1 || server.Logs[0].Timestamp != uint64(now.UnixMicro())-900_000 ||
		tagsJSON(server.Logs[0].Fields) != `[{"key":"event","type":"string","value":"exception"},{"key":"a","type":"string","value":"2"},{"key":"z","type":"string","value":"1"}]` {
		t.Errorf("server logs = %+v", server.Logs)
	}
	// Jaeger moves telemetry.sdk.* span tags to the span's own copy of its
	// process, so the root's process differs from its client span's.
	if root.ProcessID != "p1" || client.ProcessID != "p2" || server.ProcessID != "p3" || len(tr.Processes) != 3 {
		t.Errorf("process ids %s %s %s, processes %v", root.ProcessID, client.ProcessID, server.ProcessID, tr.Processes)
	}
	if p1 := tr.Processes["p1"]; p1.ServiceName != "frontend" || tagsJSON(p1.Tags) != `[{"key":"host.name","type":"string","value":"fe-1"},{"key":"ip","type":"string","value":"10.0.0.1"},{"key":"telemetry.sdk.language","type":"string","value":"go"}]` {
		t.Errorf("p1 = %+v", p1)
	}
	if p2 := tr.Processes["p2"]; p2.ServiceName != "frontend" || tagsJSON(p2.Tags) != `[{"key":"host.name","type":"string","value":"fe-1"},{"key":"ip","type":"string","value":"10.0.0.1"}]` {
		t.Errorf("p2 = %+v", p2)
	}
	if p3 := tr.Processes["p3"]; p3.ServiceName != "backend" || tagsJSON(p3.Tags) != `[{"key":"k8s.pod.name","type":"string","value":"be-0"}]` {
		t.Errorf("p3 = %+v", p3)
	}
	t.Run("64-bit id prints as 16 digits", func(t *testing.T) {
		for _, path := range []string{"/jaeger/api/traces/463ac35c9f6413ad", "/jaeger/api/traces/0000000000000000463ac35c9f6413ad"} {
			var trs []uiTrace
			getData(t, s, path, &trs)
			if len(trs) != 1 || trs[0].TraceID != "463ac35c9f6413ad" || trs[0].Spans[0].TraceID != "463ac35c9f6413ad" {
				t.Fatalf("%s: %+v", path, trs)
			}
			orphan := trs[0].Spans[1]
			if want := []string{"invalid parent span IDs=ff00000000000000; skipping clock skew adjustment"}; !slices.Equal(orphan.Warnings, want) {
				t.Errorf("orphan warnings = %q, want %q", orphan.Warnings, want)
			}
		}
	})
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/jaeger/api/traces/nothex", 400},
		{"/jaeger/api/traces/" + strings.Repeat("1", 33), 400},
		{"/jaeger/api/traces/123", 404},
		{"/jaeger/api/traces/463ac35c9f6413ad?start=x", 400},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body := get(t, s, tc.path)
			var env envelope
			if code != tc.code || json.Unmarshal(body, &env) != nil || len(env.Errors) != 1 || env.Errors[0].Code != tc.code {
				t.Fatalf("= %d %s, want %d with an error in the envelope", code, body, tc.code)
			}
		})
	}
}

func TestClockSkewWarning(t *testing.T) {
	spans := fixture(t)[:3]
	// The backend's server span starts before its client span.
	spans[2].StartUnixNano, spans[2].EndUnixNano = ns(995), ns(985)
	s := newServer(t, memreader.New(spans...))
	var trs []uiTrace
	getData(t, s, "/jaeger/api/traces/0af7651916cd43dd8448eb211c80319c", &trs)
	// parent 990..720 ms ago (270ms), child 995..985 (10ms): delta = 990-995 + (270-10)/2 ms.
	if want := []string{"clock skew adjustment disabled; not applying calculated delta of 135ms"}; !slices.Equal(trs[0].Spans[2].Warnings, want) {
		t.Fatalf("warnings = %q, want %q", trs[0].Spans[2].Warnings, want)
	}
	if trs[0].Spans[0].Warnings != nil {
		t.Fatalf("root warnings = %q", trs[0].Spans[0].Warnings)
	}
}

func TestFindTraces(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	start := fmtInt(now.Add(-time.Hour).UnixMicro())
	for _, tc := range []struct {
		name   string
		params url.Values
		want   []string
	}{
		{"service", url.Values{"service": {"frontend"}}, []string{"463ac35c9f6413ad", "0af7651916cd43dd8448eb211c80319c"}},
		{"operation", url.Values{"service": {"frontend"}, "operation": {"backend.call"}}, []string{"0af7651916cd43dd8448eb211c80319c"}},
		{"limit", url.Values{"service": {"frontend"}, "limit": {"1"}}, []string{"463ac35c9f6413ad"}},
		{"tags json", url.Values{"service": {"backend"}, "tags": {`{"load":"0.5","k8s.pod.name":"be-0"}`}}, []string{"0af7651916cd43dd8448eb211c80319c"}},
		{"error tag", url.Values{"service": {"backend"}, "tags": {`{"error":"true"}`}}, []string{"0af7651916cd43dd8448eb211c80319c"}},
		{"derived tag", url.Values{"service": {"frontend"}, "tags": {`{"span.kind":"client"}`}}, []string{"0af7651916cd43dd8448eb211c80319c"}},
		{"event tag", url.Values{"service": {"backend"}, "tag": {"a:2"}}, []string{"0af7651916cd43dd8448eb211c80319c"}},
		{"tag mismatch", url.Values{"service": {"backend"}, "tags": {`{"load":"0.6"}`}}, nil},
		{"minDuration", url.Values{"service": {"frontend"}, "minDuration": {"100ms"}}, []string{"0af7651916cd43dd8448eb211c80319c"}},
		{"maxDuration", url.Values{"service": {"frontend"}, "maxDuration": {"2ms"}}, []string{"463ac35c9f6413ad"}},
		{"time window", url.Values{"service": {"frontend"}, "start": {start}, "end": {fmtInt(now.Add(-800 * time.Millisecond).UnixMicro())}}, []string{"0af7651916cd43dd8448eb211c80319c"}},
		{"by trace ids", url.Values{"traceID": {"463ac35c9f6413ad", "0af7651916cd43dd8448eb211c80319c"}}, []string{"463ac35c9f6413ad", "0af7651916cd43dd8448eb211c80319c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var trs []uiTrace
			getData(t, s, "/jaeger/api/traces?"+tc.params.Encode(), &trs)
			var got []string
			for _, tr := range trs {
				got = append(got, tr.TraceID)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("traces = %v, want %v", got, tc.want)
			}
		})
	}
	for _, params := range []url.Values{
		{},
		{"service": {"frontend"}, "limit": {"x"}},
		{"service": {"frontend"}, "start": {"yesterday"}},
		{"service": {"frontend"}, "minDuration": {"1 fortnight"}},
		{"service": {"frontend"}, "minDuration": {"2s"}, "maxDuration": {"1s"}},
		{"service": {"frontend"}, "tags": {"{not json"}},
		{"service": {"frontend"}, "tag": {"nocolon"}},
	} {
		t.Run("bad "+params.Encode(), func(t *testing.T) {
			if code, body := get(t, s, "/jaeger/api/traces?"+params.Encode()); code != 400 {
				t.Fatalf("= %d %s, want 400", code, body)
			}
		})
	}
}

func fmtInt(n int64) string { return strconv.FormatInt(n, 10) }

func TestDependencies(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	var links []dependencyLink
	getData(t, s, "/jaeger/api/dependencies?endTs="+fmtInt(now.UnixMilli())+"&lookback=3600000", &links)
	if want := []dependencyLink{{"frontend", "backend", 1}}; !slices.Equal(links, want) {
		t.Fatalf("dependencies = %v, want %v", links, want)
	}
	getData(t, s, "/jaeger/api/dependencies?endTs="+fmtInt(now.Add(-time.Hour).UnixMilli())+"&lookback=60000", &links)
	if len(links) != 0 {
		t.Fatalf("dependencies outside the window = %v", links)
	}
	if code, _ := get(t, s, "/jaeger/api/dependencies?endTs=x"); code != 400 {
		t.Fatalf("bad endTs: %d", code)
	}
}

func TestV3(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	t.Run("services", func(t *testing.T) {
		code, body := get(t, s, "/jaeger/api/v3/services")
		if code != 200 || strings.TrimSpace(string(body)) != `{"services":["backend","frontend"]}` {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("operations", func(t *testing.T) {
		code, body := get(t, s, "/jaeger/api/v3/operations?service=backend")
		if code != 200 || strings.TrimSpace(string(body)) != `{"operations":[{"name":"POST /pay","spanKind":"server"},{"name":"orphan"}]}` {
			t.Fatalf("%d %s", code, body)
		}
		code, body = get(t, s, "/jaeger/api/v3/operations?service=frontend&span_kind=client")
		if code != 200 || strings.TrimSpace(string(body)) != `{"operations":[{"name":"backend.call","spanKind":"client"}]}` {
			t.Fatalf("%d %s", code, body)
		}
	})
	result := func(t *testing.T, path string) ptrace.Traces {
		code, body := get(t, s, path)
		if code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		var env struct {
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatal(err)
		}
		td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(env.Result)
		if err != nil {
			t.Fatalf("%v: %s", err, env.Result)
		}
		return td
	}
	t.Run("trace", func(t *testing.T) {
		td := result(t, "/jaeger/api/v3/traces/0af7651916cd43dd8448eb211c80319c")
		if td.SpanCount() != 3 {
			t.Fatalf("spans = %d", td.SpanCount())
		}
		res := td.ResourceSpans().At(0)
		if v, ok := res.Resource().Attributes().Get("telemetry.sdk.language"); !ok || v.Str() != "go" {
			t.Errorf("telemetry.sdk.language not moved to the resource: %v", res.Resource().Attributes().AsRaw())
		}
		var keys []string
		for k := range res.Resource().Attributes().All() {
			keys = append(keys, k)
		}
		if !slices.IsSorted(keys) {
			t.Errorf("resource attributes not sorted: %v", keys)
		}
		if _, ok := res.ScopeSpans().At(0).Spans().At(0).Attributes().Get("telemetry.sdk.language"); ok {
			t.Errorf("telemetry.sdk.language still on the span")
		}
	})
	t.Run("64-bit trace", func(t *testing.T) {
		td := result(t, "/jaeger/api/v3/traces/463ac35c9f6413ad")
		if got := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID().String(); got != "0000000000000000463ac35c9f6413ad" {
			t.Fatalf("trace id = %s", got)
		}
	})
	t.Run("find", func(t *testing.T) {
		q := url.Values{
			"query.service_name":   {"frontend"},
			"query.start_time_min": {now.Add(-time.Hour).Format(time.RFC3339Nano)},
			"query.start_time_max": {now.Format(time.RFC3339Nano)},
		}
		if td := result(t, "/jaeger/api/v3/traces?"+q.Encode()); td.SpanCount() != 5 {
			t.Fatalf("spans = %d, want both traces' 5", td.SpanCount())
		}
		q.Set("query.operation_name", "POST /pay")
		q.Set("query.service_name", "backend")
		q.Set("query.duration_min", "100ms")
		q.Set("query.attributes", `{"retry":"true"}`)
		if td := result(t, "/jaeger/api/v3/traces?"+q.Encode()); td.SpanCount() != 3 {
			t.Fatalf("spans = %d, want trace A's 3", td.SpanCount())
		}
		q.Set("query.num_traces", "x")
		if code, _ := get(t, s, "/jaeger/api/v3/traces?"+q.Encode()); code != 400 {
			t.Fatalf("bad num_traces: %d", code)
		}
	})
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/jaeger/api/v3/traces/zz", 400},
		{"/jaeger/api/v3/traces/123", 404},
		{"/jaeger/api/v3/traces/123?start_time=yesterday", 400},
		{"/jaeger/api/v3/traces?query.service_name=frontend", 400},
		{"/jaeger/api/v3/traces?" + url.Values{"query.service_name": {"nope"}, "query.start_time_min": {"2023-01-01T00:00:00Z"}, "query.start_time_max": {"2024-01-01T00:00:00Z"}}.Encode(), 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body := get(t, s, tc.path)
			var e gatewayError
			if code != tc.code || json.Unmarshal(body, &e) != nil || e.Error.HTTPCode != tc.code || e.Error.Message == "" {
				t.Fatalf("= %d %s, want %d with a gateway error", code, body, tc.code)
			}
		})
	}
}
