package tempo

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/query/internal/memreader"
)

var now = time.Unix(1_700_000_000, 0)

// ns is a time n milliseconds before now, in Unix nanoseconds.
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

// fixture: trace A (frontend -> backend with an error), trace B (one span,
// a 64-bit id), trace C (older, checkout).
func fixture(t testing.TB) []traces.Span {
	a := mustID(t, "0af7651916cd43dd8448eb211c80319c")
	b := mustID(t, "463ac35c9f6413ad")
	c := mustID(t, "c0ffee")
	fe := []traces.Attr{traces.String("service.name", "frontend"), traces.String("k8s.namespace.name", "shop")}
	be := []traces.Attr{traces.String("service.name", "backend")}
	co := []traces.Attr{traces.String("service.name", "checkout")}
	return []traces.Span{
		{TraceID: a, SpanID: traces.SpanID{0xa1}, Name: "GET /cart", Kind: traces.KindServer, StartUnixNano: ns(1000), EndUnixNano: ns(700),
			Service: "frontend", Resource: fe, ScopeName: "envoy", Attrs: []traces.Attr{traces.String("http.method", "GET"), traces.Int("http.status_code", 200)}},
		{TraceID: a, SpanID: traces.SpanID{0xa2}, ParentSpanID: traces.SpanID{0xa1}, Name: "backend.call", Kind: traces.KindClient, StartUnixNano: ns(990), EndUnixNano: ns(720),
			Service: "frontend", Resource: fe, ScopeName: "envoy", StatusCode: traces.StatusError, Attrs: []traces.Attr{traces.String("http.status_code", "503")}},
		{TraceID: a, SpanID: traces.SpanID{0xa3}, ParentSpanID: traces.SpanID{0xa2}, Name: "POST /pay", Kind: traces.KindServer, StartUnixNano: ns(980), EndUnixNano: ns(730),
			Service: "backend", Resource: be, StatusCode: traces.StatusError, Attrs: []traces.Attr{traces.Int("http.status_code", 503), traces.Float("load", 0.75)}},
		{TraceID: b, SpanID: traces.SpanID{0xb1}, Name: "GET /health", Kind: traces.KindServer, StartUnixNano: ns(500), EndUnixNano: ns(499),
			Service: "frontend", Resource: fe, Attrs: []traces.Attr{traces.String("http.method", "GET"), traces.Bool("probe", true)}},
		{TraceID: c, SpanID: traces.SpanID{0xc1}, Name: "checkout", Kind: traces.KindServer, StartUnixNano: ns(7_200_000), EndUnixNano: ns(7_199_000),
			Service: "checkout", Resource: co},
	}
}

func newServer(t testing.TB, r traces.Reader) *httptest.Server {
	s := httptest.NewServer(NewHandler(r, Options{Now: func() time.Time { return now }}))
	t.Cleanup(s.Close)
	return s
}

func get(t testing.TB, s *httptest.Server, path string, accept string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func TestEcho(t *testing.T) {
	s := newServer(t, memreader.New())
	code, _, body := get(t, s, "/api/echo", "")
	if code != 200 || string(body) != "echo" {
		t.Fatalf("GET /api/echo = %d %q, want 200 echo", code, body)
	}
}

func spanIDs(td ptrace.Traces) []string {
	var ids []string
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				ids = append(ids, sp.SpanID().String())
			}
		}
	}
	slices.Sort(ids)
	return ids
}

func TestTraceByID(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	wantA := []string{"a100000000000000", "a200000000000000", "a300000000000000"}
	decodeV1Proto := func(b []byte) (ptrace.Traces, error) { return (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b) }
	decodeV1JSON := func(b []byte) (ptrace.Traces, error) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return ptrace.Traces{}, err
		}
		if _, ok := m["resourceSpans"]; ok {
			t.Errorf("v1 JSON has resourceSpans, want Tempo's batches")
		}
		return (&ptrace.JSONUnmarshaler{}).UnmarshalTraces([]byte(`{"resourceSpans":` + string(m["batches"]) + `}`))
	}
	decodeV2Proto := func(b []byte) (ptrace.Traces, error) {
		// TraceByIDResponse: field 1 is the Trace; status (3) absent means COMPLETE.
		var trace []byte
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				t.Fatalf("bad tag")
			}
			b = b[n:]
			n = protowire.ConsumeFieldValue(num, typ, b)
			if num == 1 && typ == protowire.BytesType {
				trace, _ = protowire.ConsumeBytes(b)
			} else if num == 3 {
				t.Errorf("status field present: want COMPLETE (absent)")
			}
			b = b[n:]
		}
		return (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(trace)
	}
	decodeV2JSON := func(b []byte) (ptrace.Traces, error) {
		var m struct {
			Trace  json.RawMessage `json:"trace"`
			Status string          `json:"status"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return ptrace.Traces{}, err
		}
		if m.Status != "COMPLETE" {
			t.Errorf("status = %q, want COMPLETE", m.Status)
		}
		return (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(m.Trace)
	}
	for _, tc := range []struct {
		name, path, accept, contentType string
		decode                          func([]byte) (ptrace.Traces, error)
		want                            []string
	}{
		{"v1 protobuf", "/api/traces/0af7651916cd43dd8448eb211c80319c", "application/protobuf", "application/protobuf", decodeV1Proto, wantA},
		{"v1 json", "/api/traces/0af7651916cd43dd8448eb211c80319c", "", "application/json", decodeV1JSON, wantA},
		{"v2 protobuf", "/api/v2/traces/0af7651916cd43dd8448eb211c80319c", "application/protobuf", "application/protobuf", decodeV2Proto, wantA},
		{"v2 json", "/api/v2/traces/0af7651916cd43dd8448eb211c80319c", "application/json", "application/json", decodeV2JSON, wantA},
		{"upper case id", "/api/traces/0AF7651916CD43DD8448EB211C80319C", "application/protobuf", "application/protobuf", decodeV1Proto, wantA},
		{"64-bit id", "/api/v2/traces/463ac35c9f6413ad", "application/protobuf", "application/protobuf", decodeV2Proto, []string{"b100000000000000"}},
		{"64-bit id padded", "/api/traces/0000000000000000463ac35c9f6413ad", "application/protobuf", "application/protobuf", decodeV1Proto, []string{"b100000000000000"}},
		{"short id", "/api/traces/c0ffee", "", "application/json", decodeV1JSON, []string{"c100000000000000"}},
		{"time range", "/api/traces/0af7651916cd43dd8448eb211c80319c?start=1699999990&end=1700000000", "application/protobuf", "application/protobuf", decodeV1Proto, wantA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ct, body := get(t, s, tc.path, tc.accept)
			if code != 200 {
				t.Fatalf("GET %s = %d %s", tc.path, code, body)
			}
			if ct != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", ct, tc.contentType)
			}
			td, err := tc.decode(body)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got := spanIDs(td); !slices.Equal(got, tc.want) {
				t.Fatalf("span ids = %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("trace id round trip", func(t *testing.T) {
		_, _, body := get(t, s, "/api/traces/463ac35c9f6413ad", "application/protobuf")
		td, _ := decodeV1Proto(body)
		if got := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID().String(); got != "0000000000000000463ac35c9f6413ad" {
			t.Fatalf("trace id = %s", got)
		}
	})
	for _, tc := range []struct {
		name, path string
		code       int
	}{
		{"not hex", "/api/traces/xyz", 400},
		{"too long", "/api/v2/traces/" + strings.Repeat("a", 33), 400},
		{"bad start", "/api/traces/c0ffee?start=yesterday", 400},
		{"start after end", "/api/traces/c0ffee?start=20&end=10", 400},
		{"unknown", "/api/traces/123", 404},
		{"unknown v2", "/api/v2/traces/123", 404},
		{"outside range", "/api/traces/0af7651916cd43dd8448eb211c80319c?start=1600000000&end=1600000100", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, body := get(t, s, tc.path, "application/protobuf"); code != tc.code {
				t.Fatalf("GET %s = %d %s, want %d", tc.path, code, body, tc.code)
			}
		})
	}
}

func search(t *testing.T, s *httptest.Server, params url.Values) searchResponse {
	t.Helper()
	code, _, body := get(t, s, "/api/search?"+params.Encode(), "")
	if code != 200 {
		t.Fatalf("search %v = %d %s", params, code, body)
	}
	var resp searchResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func traceIDs(resp searchResponse) []string {
	var ids []string
	for _, tr := range resp.Traces {
		ids = append(ids, tr.TraceID)
	}
	return ids
}

const (
	idA = "0af7651916cd43dd8448eb211c80319c"
	idB = "0000000000000000463ac35c9f6413ad"
	idC = "00000000000000000000000000c0ffee"
)

func TestSearch(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	for _, tc := range []struct {
		name   string
		params url.Values
		want   []string
	}{
		{"all in last hour, newest first", url.Values{"q": {"{}"}}, []string{idB, idA}},
		{"no query", url.Values{}, []string{idB, idA}},
		{"wider window", url.Values{"q": {"{}"}, "start": {"1699990000"}, "end": {"1700000000"}}, []string{idB, idA, idC}},
		{"limit", url.Values{"q": {"{}"}, "limit": {"1"}}, []string{idB}},
		{"status", url.Values{"q": {"{ status = error }"}}, []string{idA}},
		{"span attribute", url.Values{"q": {"{ span.http.status_code >= 500 }"}}, []string{idA}},
		{"resource attribute", url.Values{"q": {`{ resource.service.name = "backend" }`}}, []string{idA}},
		{"unscoped", url.Values{"q": {`{ .k8s.namespace.name = "shop" && name = "GET /health" }`}}, []string{idB}},
		{"regex", url.Values{"q": {`{ name =~ "GET.*" }`}}, []string{idB, idA}},
		{"spansets and", url.Values{"q": {`{ resource.service.name = "frontend" } && { resource.service.name = "backend" }`}}, []string{idA}},
		{"spansets or", url.Values{"q": {`{ name = "checkout" } || { .probe = true }`}, "start": {"1699990000"}}, []string{idB, idC}},
		{"duration", url.Values{"q": {"{ duration > 100ms }"}}, []string{idA}},
		{"root", url.Values{"q": {`{ rootName = "GET /cart" && trace:duration > 200ms }`}}, []string{idA}},
		{"legacy tags", url.Values{"tags": {"service.name=frontend http.method=GET"}}, []string{idB, idA}},
		{"legacy quoted", url.Values{"tags": {`name="GET /health"`}}, []string{idB}},
		{"legacy error", url.Values{"tags": {"error=true"}}, []string{idA}},
		{"legacy int as text", url.Values{"tags": {"http.status_code=503"}}, []string{idA}},
		{"minDuration", url.Values{"minDuration": {"100ms"}}, []string{idA}},
		{"maxDuration", url.Values{"maxDuration": {"10ms"}}, []string{idB}},
		{"no match", url.Values{"q": {`{ name = "nope" }`}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := search(t, s, tc.params)
			if got := traceIDs(resp); !slices.Equal(got, tc.want) {
				t.Fatalf("traces = %v, want %v", got, tc.want)
			}
			if resp.Traces == nil {
				t.Fatalf("traces is null, want a list")
			}
		})
	}
}

func TestSearchResult(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	code, _, body := get(t, s, "/api/search?"+url.Values{"q": {"{ span.http.status_code >= 500 && status = error }"}, "spss": {"1"}}.Encode(), "")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	// Decode generically so that field names and JSON types are checked.
	var resp struct {
		Traces []struct {
			TraceID           string `json:"traceID"`
			RootServiceName   string `json:"rootServiceName"`
			RootTraceName     string `json:"rootTraceName"`
			StartTimeUnixNano string `json:"startTimeUnixNano"`
			DurationMs        int    `json:"durationMs"`
			SpanSets          []struct {
				Spans []struct {
					SpanID            string                       `json:"spanID"`
					Name              string                       `json:"name"`
					StartTimeUnixNano string                       `json:"startTimeUnixNano"`
					DurationNanos     string                       `json:"durationNanos"`
					Attributes        []map[string]json.RawMessage `json:"attributes"`
				} `json:"spans"`
				Matched int `json:"matched"`
			} `json:"spanSets"`
			SpanSet json.RawMessage `json:"spanSet"`
		} `json:"traces"`
		Metrics map[string]any `json:"metrics"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(resp.Traces) != 1 {
		t.Fatalf("traces: %s", body)
	}
	tr := resp.Traces[0]
	if tr.TraceID != idA || tr.RootServiceName != "frontend" || tr.RootTraceName != "GET /cart" ||
		tr.StartTimeUnixNano != "1699999999000000000" || tr.DurationMs != 300 {
		t.Errorf("trace = %+v", tr)
	}
	if len(tr.SpanSets) != 1 || tr.SpanSets[0].Matched != 2 || len(tr.SpanSets[0].Spans) != 1 {
		t.Fatalf("spanSets = %s", body)
	}
	sp := tr.SpanSets[0].Spans[0]
	if sp.SpanID != "a200000000000000" || sp.Name != "backend.call" || sp.StartTimeUnixNano != "1699999999010000000" || sp.DurationNanos != "270000000" {
		t.Errorf("span = %+v", sp)
	}
	attrs, _ := json.Marshal(sp.Attributes)
	for _, want := range []string{
		`{"key":"http.status_code","value":{"stringValue":"503"}}`,
		`{"key":"status","value":{"stringValue":"error"}}`,
		`{"key":"service.name","value":{"stringValue":"frontend"}}`,
	} {
		if !strings.Contains(string(attrs), want) {
			t.Errorf("attributes %s lack %s", attrs, want)
		}
	}
	if len(tr.SpanSet) == 0 {
		t.Errorf("spanSet missing")
	}
	if resp.Metrics["inspectedTraces"] != float64(2) {
		t.Errorf("metrics = %v", resp.Metrics)
	}
}

func TestSearchRootNotReceived(t *testing.T) {
	spans := fixture(t)[1:3] // trace A without its root span
	s := newServer(t, memreader.New(spans...))
	resp := search(t, s, url.Values{"q": {"{}"}})
	if len(resp.Traces) != 1 || resp.Traces[0].RootServiceName != rootNotReceived || resp.Traces[0].RootTraceName != "" {
		t.Fatalf("traces = %+v", resp.Traces)
	}
}

// A trace whose spans are in two blocks is one result, evaluated over all
// its spans.
func TestSearchSplitTrace(t *testing.T) {
	spans := fixture(t)
	r := &memreader.Reader{Blocks: [][]traces.Span{{spans[2], spans[3]}, {spans[0], spans[1]}}}
	s := newServer(t, r)
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{`{}`, []string{idB, idA}},
		{`{ resource.service.name = "frontend" } && { resource.service.name = "backend" }`, []string{idA}},
		{`{ rootServiceName = "frontend" && resource.service.name = "backend" }`, []string{idA}},
	} {
		t.Run(tc.q, func(t *testing.T) {
			resp := search(t, s, url.Values{"q": {tc.q}})
			if got := traceIDs(resp); !slices.Equal(got, tc.want) {
				t.Fatalf("traces = %v, want %v", got, tc.want)
			}
			for _, tr := range resp.Traces {
				if tr.TraceID == idA && (tr.RootServiceName != "frontend" || tr.DurationMs != 300) {
					t.Fatalf("merged trace summary = %+v", tr)
				}
			}
		})
	}
}

func TestSearchBadRequest(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	for _, tc := range []struct {
		params url.Values
		want   string
	}{
		{url.Values{"q": {"{ .a = 1 } | count() > 1"}}, "pipelines"},
		{url.Values{"q": {"{ .a = 1 } >> { .b = 1 }"}}, "structural operator >>"},
		{url.Values{"q": {"{ .a = "}}, "invalid TraceQL"},
		{url.Values{"q": {"{ event.name = \"x\" }"}}, "event-scoped"},
		{url.Values{"limit": {"0"}}, "limit"},
		{url.Values{"limit": {"x"}}, "limit"},
		{url.Values{"spss": {"-1"}}, "spss"},
		{url.Values{"start": {"abc"}}, "start"},
		{url.Values{"start": {"1700000000"}, "end": {"1600000000"}}, "time range"},
		{url.Values{"minDuration": {"5 parsecs"}}, "minDuration"},
		{url.Values{"minDuration": {"2s"}, "maxDuration": {"1s"}}, "maxDuration"},
		{url.Values{"tags": {"novalue"}}, "tags"},
		{url.Values{"tags": {`a="unterminated`}}, "tags"},
	} {
		t.Run(tc.params.Encode(), func(t *testing.T) {
			code, _, body := get(t, s, "/api/search?"+tc.params.Encode(), "")
			if code != 400 || !strings.Contains(string(body), tc.want) {
				t.Fatalf("= %d %s, want 400 mentioning %q", code, body, tc.want)
			}
		})
	}
}

func TestTags(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	t.Run("v1", func(t *testing.T) {
		code, _, body := get(t, s, "/api/search/tags", "")
		var resp tagNamesV1
		if code != 200 || json.Unmarshal(body, &resp) != nil {
			t.Fatalf("%d %s", code, body)
		}
		want := []string{"http.method", "http.status_code", "k8s.namespace.name", "load", "probe", "service.name"}
		if !slices.Equal(resp.TagNames, want) {
			t.Fatalf("tagNames = %v, want %v", resp.TagNames, want)
		}
	})
	v2 := func(t *testing.T, query string) map[string][]string {
		code, _, body := get(t, s, "/api/v2/search/tags"+query, "")
		var resp struct {
			Scopes []struct {
				Name string   `json:"name"`
				Tags []string `json:"tags"`
			} `json:"scopes"`
		}
		if code != 200 || json.Unmarshal(body, &resp) != nil {
			t.Fatalf("%d %s", code, body)
		}
		m := map[string][]string{}
		for _, sc := range resp.Scopes {
			m[sc.Name] = sc.Tags
		}
		return m
	}
	t.Run("v2", func(t *testing.T) {
		m := v2(t, "")
		if want := []string{"http.method", "http.status_code", "load", "probe"}; !slices.Equal(m["span"], want) {
			t.Errorf("span tags = %v, want %v", m["span"], want)
		}
		if want := []string{"k8s.namespace.name", "service.name"}; !slices.Equal(m["resource"], want) {
			t.Errorf("resource tags = %v, want %v", m["resource"], want)
		}
		for _, in := range []string{"name", "status", "kind", "duration", "rootServiceName", "rootName", "traceDuration"} {
			if !slices.Contains(m["intrinsic"], in) {
				t.Errorf("intrinsic tags %v lack %s", m["intrinsic"], in)
			}
		}
	})
	t.Run("v2 scope", func(t *testing.T) {
		m := v2(t, "?scope=resource")
		if len(m) != 1 || len(m["resource"]) != 2 {
			t.Fatalf("scopes = %v", m)
		}
	})
	t.Run("v2 filtered by q", func(t *testing.T) {
		m := v2(t, "?"+url.Values{"q": {`{ resource.service.name = "backend" }`}}.Encode())
		if want := []string{"http.status_code", "load"}; !slices.Equal(m["span"], want) {
			t.Fatalf("span tags = %v, want %v", m["span"], want)
		}
	})
	t.Run("v2 bad q", func(t *testing.T) {
		if code, _, _ := get(t, s, "/api/v2/search/tags?q=%7B+.a+%7D", ""); code != 400 {
			t.Fatalf("code = %d, want 400", code)
		}
	})
}

func TestTagValues(t *testing.T) {
	s := newServer(t, memreader.New(fixture(t)...))
	t.Run("v1", func(t *testing.T) {
		code, _, body := get(t, s, "/api/search/tag/service.name/values", "")
		var resp tagValuesV1
		if code != 200 || json.Unmarshal(body, &resp) != nil {
			t.Fatalf("%d %s", code, body)
		}
		if want := []string{"backend", "frontend"}; !slices.Equal(resp.TagValues, want) {
			t.Fatalf("tagValues = %v, want %v", resp.TagValues, want)
		}
	})
	for _, tc := range []struct {
		path string
		want []tagValue
	}{
		{"/api/v2/search/tag/resource.service.name/values", []tagValue{{"string", "backend"}, {"string", "frontend"}}},
		{"/api/v2/search/tag/resource.service.name/values?start=1699990000", []tagValue{{"string", "backend"}, {"string", "checkout"}, {"string", "frontend"}}},
		{"/api/v2/search/tag/span.http.status_code/values", []tagValue{{"int", "200"}, {"int", "503"}, {"string", "503"}}},
		{"/api/v2/search/tag/.load/values", []tagValue{{"float", "0.75"}}},
		{"/api/v2/search/tag/span.probe/values", []tagValue{{"bool", "true"}}},
		{"/api/v2/search/tag/span.service.name/values", []tagValue{}},
		// Grafana encodes the name twice: "span.http.method" arrives as span%252Ehttp%252Emethod.
		{"/api/v2/search/tag/span%252Ehttp%252Emethod/values", []tagValue{{"string", "GET"}}},
		{"/api/v2/search/tag/name/values", []tagValue{{"string", "GET /cart"}, {"string", "GET /health"}, {"string", "POST /pay"}, {"string", "backend.call"}}},
		{"/api/v2/search/tag/status/values", statusValues},
		{"/api/v2/search/tag/kind/values", kindValues},
		{"/api/v2/search/tag/rootServiceName/values", []tagValue{{"string", "backend"}, {"string", "frontend"}}},
		{"/api/v2/search/tag/duration/values", []tagValue{}},
		{"/api/v2/search/tag/name/values?" + url.Values{"q": {`{ resource.service.name = "backend" }`}}.Encode(), []tagValue{{"string", "POST /pay"}}},
		{"/api/v2/search/tag/status/values?" + url.Values{"q": {`{ resource.service.name = "backend" }`}}.Encode(), []tagValue{{"keyword", "error"}}},
		{"/api/v2/search/tag/resource.service.name/values?" + url.Values{"q": {`{ status = error }`}}.Encode(), []tagValue{{"string", "backend"}, {"string", "frontend"}}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, _, body := get(t, s, tc.path, "")
			if code != 200 {
				t.Fatalf("%d %s", code, body)
			}
			var resp struct {
				TagValues []tagValue `json:"tagValues"`
			}
			if err := json.Unmarshal(body, &resp); err != nil || resp.TagValues == nil {
				t.Fatalf("%v: %s", err, body)
			}
			if !slices.Equal(resp.TagValues, tc.want) {
				t.Fatalf("tagValues = %v, want %v", resp.TagValues, tc.want)
			}
		})
	}
	for _, path := range []string{
		"/api/v2/search/tag/span./values",
		"/api/v2/search/tag/name/values?q=%7B",
		"/api/search/tag/service.name/values?end=x",
	} {
		t.Run(path, func(t *testing.T) {
			if code, _, body := get(t, s, path, ""); code != 400 {
				t.Fatalf("= %d %s, want 400", code, body)
			}
		})
	}
}
