package ingest

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/meshlens/meshlens/traces"
)

// recorder is a traces.Appender that keeps what it is given, or fails
// with err.
type recorder struct {
	mu    sync.Mutex
	spans []traces.Span
	calls int
	err   error
}

func (r *recorder) Append(_ context.Context, spans []traces.Span) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil && !onlyRefusals(r.err) {
		return r.err
	}
	// A store refusing spans (of a trace at its limit, older than the
	// retention) keeps the others.
	r.spans = append(r.spans, spans...)
	return r.err
}

func (r *recorder) get() []traces.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]traces.Span(nil), r.spans...)
}

// sentSpans are what exportSpans sent, as the SDK saw them.
type sentSpans struct {
	root, child oteltrace.SpanContext
}

// exportSpans sends a server span "GET /cart" with a client child
// "SELECT cart" (status error) through exp, as service "checkout".
func exportSpans(t *testing.T, exp sdktrace.SpanExporter) sentSpans {
	t.Helper()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "checkout"), attribute.String("k8s.namespace.name", "shop"))),
	)
	tr := tp.Tracer("meshlens.test/cart", oteltrace.WithInstrumentationVersion("1.2.3"))
	ctx, root := tr.Start(context.Background(), "GET /cart", oteltrace.WithSpanKind(oteltrace.SpanKindServer),
		oteltrace.WithAttributes(attribute.String("http.route", "/cart"), attribute.Int("http.response.status_code", 500)))
	_, child := tr.Start(ctx, "SELECT cart", oteltrace.WithSpanKind(oteltrace.SpanKindClient),
		oteltrace.WithAttributes(attribute.Bool("db.retry", true), attribute.Float64("db.load", 0.5), attribute.StringSlice("db.hosts", []string{"a", "b"})))
	child.AddEvent("connection lost", oteltrace.WithAttributes(attribute.String("peer", "db-0")))
	child.SetStatus(otelcodes.Error, "connection lost")
	child.End()
	root.End()
	sent := sentSpans{root: root.SpanContext(), child: child.SpanContext()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("export: %v", err)
	}
	return sent
}

// checkSDKSpans asserts that the appender received what exportSpans sent.
func checkSDKSpans(t *testing.T, sent sentSpans, got []traces.Span) {
	t.Helper()
	if len(got) != 2 {
		t.Fatalf("appended %d spans, want 2", len(got))
	}
	var root, child *traces.Span
	for i := range got {
		switch got[i].Name {
		case "GET /cart":
			root = &got[i]
		case "SELECT cart":
			child = &got[i]
		}
	}
	if root == nil || child == nil {
		t.Fatalf("spans %q and %q, want GET /cart and SELECT cart", got[0].Name, got[1].Name)
	}
	if root.TraceID != traces.TraceID(sent.root.TraceID()) || root.SpanID != traces.SpanID(sent.root.SpanID()) || !root.IsRoot() {
		t.Errorf("root ids: trace %s span %s parent %s; sent trace %s span %s", root.TraceID, root.SpanID, root.ParentSpanID, sent.root.TraceID(), sent.root.SpanID())
	}
	if child.TraceID != root.TraceID || child.SpanID != traces.SpanID(sent.child.SpanID()) || child.ParentSpanID != root.SpanID {
		t.Errorf("child ids: trace %s span %s parent %s; sent span %s under %s", child.TraceID, child.SpanID, child.ParentSpanID, sent.child.SpanID(), root.SpanID)
	}
	if root.Kind != traces.KindServer || child.Kind != traces.KindClient {
		t.Errorf("kinds %s and %s, want server and client", root.Kind, child.Kind)
	}
	for _, s := range []*traces.Span{root, child} {
		if s.Service != "checkout" || s.ScopeName != "meshlens.test/cart" || s.ScopeVersion != "1.2.3" {
			t.Errorf("span %q: service %q scope %q %q", s.Name, s.Service, s.ScopeName, s.ScopeVersion)
		}
		if a, ok := s.ResourceAttr("k8s.namespace.name"); !ok || a.Str != "shop" {
			t.Errorf("span %q: resource attribute k8s.namespace.name %+v", s.Name, a)
		}
		if s.EndUnixNano < s.StartUnixNano || s.StartUnixNano == 0 {
			t.Errorf("span %q: start %d end %d", s.Name, s.StartUnixNano, s.EndUnixNano)
		}
	}
	wantAttrs := map[*traces.Span][]traces.Attr{
		root:  {traces.String("http.route", "/cart"), traces.Int("http.response.status_code", 500)},
		child: {traces.Bool("db.retry", true), traces.Float("db.load", 0.5), {Key: "db.hosts", Type: traces.TypeJSON, Str: `["a","b"]`}},
	}
	for s, want := range wantAttrs {
		for _, w := range want {
			if a, ok := s.Attr(w.Key); !ok || a != w {
				t.Errorf("span %q attribute %s = %+v, want %+v", s.Name, w.Key, a, w)
			}
		}
	}
	if root.StatusCode != traces.StatusUnset || child.StatusCode != traces.StatusError || child.StatusMessage != "connection lost" {
		t.Errorf("status: root %s, child %s %q", root.StatusCode, child.StatusCode, child.StatusMessage)
	}
	if len(child.Events) != 1 || child.Events[0].Name != "connection lost" || len(child.Events[0].Attrs) != 1 || child.Events[0].Attrs[0] != traces.String("peer", "db-0") {
		t.Errorf("child events %+v", child.Events)
	}
}

func TestOTLPHTTPFromSDK(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []otlptracehttp.Option
	}{
		{"protobuf", nil},
		{"protobuf gzip", []otlptracehttp.Option{otlptracehttp.WithCompression(otlptracehttp.GzipCompression)}},
		{"JSON", []otlptracehttp.Option{otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON)}},
		{"JSON gzip", []otlptracehttp.Option{otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON), otlptracehttp.WithCompression(otlptracehttp.GzipCompression)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			mux := http.NewServeMux()
			mux.Handle("POST /v1/traces", NewOTLPHandler(rec, Options{}))
			srv := httptest.NewServer(mux)
			defer srv.Close()
			exp, err := otlptracehttp.New(context.Background(), append([]otlptracehttp.Option{
				otlptracehttp.WithEndpointURL(srv.URL + "/v1/traces"),
				otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
			}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			sent := exportSpans(t, exp)
			checkSDKSpans(t, sent, rec.get())
		})
	}
}

func TestOTLPGRPCFromSDK(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []otlptracegrpc.Option
	}{
		{"plain", nil},
		{"gzip", []otlptracegrpc.Option{otlptracegrpc.WithCompressor("gzip")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			addr := serveGRPC(t, rec, Options{})
			exp, err := otlptracegrpc.New(context.Background(), append([]otlptracegrpc.Option{
				otlptracegrpc.WithEndpoint(addr),
				otlptracegrpc.WithInsecure(),
				otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}),
			}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			sent := exportSpans(t, exp)
			checkSDKSpans(t, sent, rec.get())
		})
	}
}

// serveGRPC serves the OTLP service over app on a local port until the test
// ends, and returns its address.
func serveGRPC(t *testing.T, app traces.Appender, opts Options) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOptions(opts)...)
	NewOTLPService(app, opts).Register(gs)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}
