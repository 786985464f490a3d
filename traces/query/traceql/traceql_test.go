package traceql

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/meshlens/meshlens/traces"
)

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want string // a substring of the error
	}{
		{`{ .a = 1 } | count() > 2`, "pipelines (|) are not supported"},
		{`{ .a = 1 } | select(.b)`, "pipelines"},
		{`{ .a = 1 } >> { .b = 2 }`, "structural operator >>"},
		{`{ .a = 1 } > { .b = 2 }`, "structural operator >"},
		{`{ .a = 1 } < { .b = 2 }`, "structural operator <"},
		{`{ .a = 1 } ~ { .b = 2 }`, "structural operator ~"},
		{`{ .a = 1 } !~ { .b = 2 }`, "structural operator !~"},
		{`{ .a = 1 } &>> { .b = 2 }`, "structural operator &>>"},
		{`count()`, "count() is not supported"},
		{`{ .a + 1 > 2 }`, "arithmetic (+) is not supported"},
		{`{ .a > 1 * 2 }`, "arithmetic (*) is not supported"},
		{`{ event.name = "x" }`, "event-scoped attributes"},
		{`{ link.x = "x" }`, "link-scoped attributes"},
		{`{ instrumentation.name = "x" }`, "instrumentation-scoped"},
		{`{ parent.x = "x" }`, "parent-scoped"},
		{`{ event:name = "x" }`, "intrinsic event:name is not supported"},
		{`{ span:id = "x" }`, "intrinsic span:id is not supported"},
		{`{ childCount > 2 }`, "intrinsic childCount is not supported"},
		{`{ !(.a = 1) }`, "negation (!) is not supported"},
		{`{ .a = 1 `, "expected } to close the spanset"},
		{`{ .a = 1 }}`, `unexpected "}"`},
		{`{ .a }`, "expected a comparison operator"},
		{`{ .a = }`, "expected a value or an attribute"},
		{`{ foo = 1 }`, "unknown identifier foo"},
		{`{ .a =~ 1 }`, "needs a string regular expression"},
		{`{ .a =~ "(" }`, "invalid regular expression"},
		{`{ status > error }`, "cannot compare status values"},
		{`{ status = server }`, "cannot compare status with kind"},
		{`{ duration > 100 }`, "cannot compare duration with int"},
		{`{ name = 1 }`, "cannot compare string with int"},
		{`{ .a = "unterminated }`, "unterminated string"},
		{`{ .a = 5min }`, "invalid duration"},
		{`{ .a = 1 } && `, "expected a spanset"},
		{`.a = 1`, "expected a spanset"},
		{`{ .a = [1, 2] }`, "arrays are not supported"},
		{`{ . = 1 }`, "has no name"},
	} {
		t.Run(tc.q, func(t *testing.T) {
			_, err := Parse(tc.q)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want error containing %q", tc.q, tc.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, want it to contain %q", tc.q, err, tc.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	for _, q := range []string{
		``, `{}`, `{ }`, `{ true }`, `{ false }`, `({ .a = 1 })`,
		`{ span.http.status_code >= 500 }`,
		`{ resource.service.name = "x" }`,
		`{ .http.url =~ "/api/.*" && .x !~ "a|b" }`,
		`{ span."attr with space" = "x" }`,
		"{ .a = `raw\\string` }",
		`{ duration > 100ms && duration < 1.5s }`,
		`{ traceDuration > 1h30m }`,
		`{ status = error || status != ok }`,
		`{ kind = server } && { kind = client } || { name = "x" }`,
		`{ span:name = "a" && span:status = error && span:kind = client && span:duration > 1ms }`,
		`{ trace:rootService = "a" && trace:rootName = "b" && trace:duration > 1s }`,
		`{ rootServiceName = "a" && rootName = "b" }`,
		`{ .a = -1 && .b = -1.5 && .c = 1e3 && .d = true && .e = nil && .f != nil }`,
		`{ 500 <= span.http.status_code }`,
		`{ (.a = 1 || .b = 2) && .c = 3 }`,
		`{ .k8s.pod-name = "x" && .url/path = "y" }`,
		`{ statusMessage =~ "timeout.*" }`,
		`{ .a = "é\n\"" }`,
	} {
		t.Run(q, func(t *testing.T) {
			if _, err := Parse(q); err != nil {
				t.Fatalf("Parse(%q): %v", q, err)
			}
		})
	}
}

// testTrace: a root server span of "frontend", a client span under it, and
// the backend's server span answering it with an error.
func testTrace() []traces.Span {
	tid := traces.TraceID{1}
	frontend := []traces.Attr{traces.String("service.name", "frontend"), traces.String("k8s.namespace", "shop")}
	backend := []traces.Attr{traces.String("service.name", "backend")}
	return []traces.Span{
		{
			TraceID: tid, SpanID: traces.SpanID{1}, Name: "GET /", Kind: traces.KindServer,
			StartUnixNano: 1_000_000_000, EndUnixNano: 1_300_000_000,
			Service: "frontend", Resource: frontend,
			Attrs: []traces.Attr{traces.String("http.method", "GET"), traces.Int("http.status_code", 200)},
		},
		{
			TraceID: tid, SpanID: traces.SpanID{2}, ParentSpanID: traces.SpanID{1}, Name: "call backend", Kind: traces.KindClient,
			StartUnixNano: 1_010_000_000, EndUnixNano: 1_250_000_000, StatusCode: traces.StatusError,
			Service: "frontend", Resource: frontend,
			Attrs: []traces.Attr{traces.String("http.status_code", "503"), traces.Float("ratio", 0.5), traces.Bool("retry", true)},
		},
		{
			TraceID: tid, SpanID: traces.SpanID{3}, ParentSpanID: traces.SpanID{2}, Name: "POST /pay", Kind: traces.KindServer,
			StartUnixNano: 1_020_000_000, EndUnixNano: 1_240_000_000, StatusCode: traces.StatusError, StatusMessage: "upstream timeout",
			Service: "backend", Resource: backend,
			Attrs: []traces.Attr{traces.Int("http.status_code", 503), traces.String("k8s.namespace", "pay")},
		},
	}
}

func TestEval(t *testing.T) {
	spans := testTrace()
	for _, tc := range []struct {
		q    string
		want []int
	}{
		{`{}`, []int{0, 1, 2}},
		{``, []int{0, 1, 2}},
		{`{ true }`, []int{0, 1, 2}},
		{`{ false }`, nil},
		{`{ span.http.status_code >= 500 }`, []int{1, 2}}, // "503" (string) compares as a number
		{`{ span.http.status_code = 200 }`, []int{0}},
		{`{ span.http.status_code = "503" }`, []int{1}},
		{`{ span.http.status_code != 200 }`, []int{1, 2}},
		{`{ resource.service.name = "backend" }`, []int{2}},
		{`{ span.service.name = "backend" }`, nil},
		{`{ .service.name = "frontend" }`, []int{0, 1}},
		{`{ .k8s.namespace = "shop" }`, []int{0, 1}}, // resource, where the span has none
		{`{ .k8s.namespace = "pay" }`, []int{2}},     // span before resource
		{`{ resource.k8s.namespace = "pay" }`, nil},  // backend's resource has none
		{`{ .missing != "x" }`, nil},                 // a missing attribute never matches
		{`{ .missing = nil }`, []int{0, 1, 2}},
		{`{ .ratio != nil }`, []int{1}},
		{`{ .ratio > 0.4 && .ratio < 1 }`, []int{1}},
		{`{ .ratio = 0.5 }`, []int{1}},
		{`{ .retry = true }`, []int{1}},
		{`{ .retry != false }`, []int{1}},
		{`{ .retry = "true" }`, nil}, // types differ
		{`{ name = "GET /" }`, []int{0}},
		{`{ name =~ "POST.*" }`, []int{2}},
		{`{ name =~ "POST" }`, nil}, // regexes match the whole value
		{`{ name !~ ".*/.*" }`, []int{1}},
		{`{ name < "H" }`, []int{0}}, // byte order: "call backend" > "H"
		{`{ status = error }`, []int{1, 2}},
		{`{ status = unset }`, []int{0}},
		{`{ status != error }`, []int{0}},
		{`{ span:status = error && span:kind = server }`, []int{2}},
		{`{ kind = client }`, []int{1}},
		{`{ statusMessage = "upstream timeout" }`, []int{2}},
		{`{ duration > 250ms }`, []int{0}},
		{`{ duration >= 240ms }`, []int{0, 1}},
		{`{ span:duration < 0.23s }`, []int{2}},
		{`{ traceDuration = 300ms }`, []int{0, 1, 2}},
		{`{ trace:duration > 1s }`, nil},
		{`{ rootServiceName = "frontend" && kind = server }`, []int{0, 2}},
		{`{ trace:rootService = "backend" }`, nil},
		{`{ rootName = "GET /" && name = "POST /pay" }`, []int{2}},
		{`{ trace:rootName = "GET /" }`, []int{0, 1, 2}},
		{`{ (name = "GET /" || status = error) && kind = server }`, []int{0, 2}},
		{`{ 500 <= span.http.status_code }`, []int{1, 2}},
		{`{ resource.service.name = "frontend" } && { resource.service.name = "backend" }`, []int{0, 1, 2}},
		{`{ resource.service.name = "frontend" } && { resource.service.name = "nope" }`, nil},
		{`{ resource.service.name = "nope" } || { kind = client }`, []int{1}},
		{`({ kind = client } || { name = "nope" }) && { status = error }`, []int{1, 2}},
		{`{ kind = server && status = error } && { kind = server && status = unset }`, []int{0, 2}},
	} {
		t.Run(tc.q, func(t *testing.T) {
			q, err := Parse(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := q.Eval(spans); !slices.Equal(got, tc.want) {
				t.Fatalf("Eval(%s) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestAttributes(t *testing.T) {
	q, err := Parse(`{ span.a = 1 && .b = 2 && status = error } && { span.a > 3 && resource.c = "x" }`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Attribute{
		{Scope: ScopeSpan, Name: "a"},
		{Scope: ScopeNone, Name: "b"},
		{Scope: ScopeIntrinsic, Name: "status", Intrinsic: IntrinsicStatus},
		{Scope: ScopeResource, Name: "c"},
	}
	if got := q.Attributes(); !slices.Equal(got, want) {
		t.Fatalf("Attributes() = %v, want %v", got, want)
	}
}

func TestParseAttribute(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Attribute
	}{
		{"span.http.method", Attribute{Scope: ScopeSpan, Name: "http.method"}},
		{"resource.service.name", Attribute{Scope: ScopeResource, Name: "service.name"}},
		{".http.method", Attribute{Scope: ScopeNone, Name: "http.method"}},
		{"http.method", Attribute{Scope: ScopeNone, Name: "http.method"}},
		{"name", Attribute{Scope: ScopeIntrinsic, Name: "name", Intrinsic: IntrinsicName}},
		{"span:status", Attribute{Scope: ScopeIntrinsic, Name: "status", Intrinsic: IntrinsicStatus}},
		{"trace:rootService", Attribute{Scope: ScopeIntrinsic, Name: "rootServiceName", Intrinsic: IntrinsicRootServiceName}},
	} {
		got, err := ParseAttribute(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseAttribute(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "span.", "resource.", "."} {
		if _, err := ParseAttribute(bad); err == nil {
			t.Errorf("ParseAttribute(%q) succeeded", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{}`, `{ span.http.status_code >= 500 }`, `{ .a =~ "x.*" } && { resource.service.name = "y" }`,
		`{ duration > 1.5s || status = error }`, `{ .a = 1 } | count() > 1`, `{ (.a = 1 || .b != nil) }`,
		"{ .a = `x` }", `{ span:name = "x" && trace:duration < 10ms }`, `{ .a = -1e-3 }`,
	} {
		f.Add(s)
	}
	spans := testTrace()
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) returned %T, not *ParseError", s, err)
			}
			return
		}
		got := q.Eval(spans)
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("Eval(%q) = %v, not ascending", s, got)
			}
		}
	})
}
