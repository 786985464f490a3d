package ingest

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	zipkinhttp "github.com/openzipkin/zipkin-go/reporter/http"

	"github.com/meshlens/meshlens/traces"
)

// TestZipkinFromReporter sends spans with zipkin-go's HTTP reporter, in
// JSON and in protobuf, and checks what the appender receives.
func TestZipkinFromReporter(t *testing.T) {
	parent := zipkinmodel.ID(0x463ac35c9f6413ad)
	spans := []zipkinmodel.SpanModel{
		{
			SpanContext:   zipkinmodel.SpanContext{TraceID: zipkinmodel.TraceID{Low: 0x463ac35c9f6413ad}, ID: parent},
			Name:          "get /productpage", // zipkin-go lower-cases names
			Kind:          zipkinmodel.Server,
			Timestamp:     time.UnixMicro(1700000000000000),
			Duration:      12 * time.Millisecond,
			LocalEndpoint: &zipkinmodel.Endpoint{ServiceName: "productpage.default"},
			Tags:          map[string]string{"http.status_code": "200", "istio.canonical_service": "productpage"},
		},
		{
			SpanContext:   zipkinmodel.SpanContext{TraceID: zipkinmodel.TraceID{Low: 0x463ac35c9f6413ad}, ID: 0xa1b2c3d4e5f60718, ParentID: &parent},
			Name:          "get /reviews",
			Kind:          zipkinmodel.Client,
			Timestamp:     time.UnixMicro(1700000000002000),
			Duration:      6 * time.Millisecond,
			LocalEndpoint: &zipkinmodel.Endpoint{ServiceName: "productpage.default"},
			Tags:          map[string]string{"error": "true", "upstream_cluster": "outbound|9080||reviews.default.svc.cluster.local"},
		},
	}
	for _, tc := range []struct {
		name string
		opts []zipkinhttp.ReporterOption
	}{
		{"JSON", nil},
		{"protobuf", []zipkinhttp.ReporterOption{zipkinhttp.Serializer(zipkin_proto3.SpanSerializer{})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			answers := make(chan int, 10)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v2/spans" {
					http.NotFound(w, r)
					return
				}
				sw := &statusWriter{ResponseWriter: w}
				NewZipkinHandler(rec, Options{}).ServeHTTP(sw, r)
				answers <- sw.code
			}))
			defer srv.Close()
			rep := zipkinhttp.NewReporter(srv.URL+"/api/v2/spans", append([]zipkinhttp.ReporterOption{zipkinhttp.BatchInterval(time.Hour)}, tc.opts...)...)
			for _, s := range spans {
				rep.Send(s)
			}
			if err := rep.Close(); err != nil {
				t.Fatal(err)
			}
			if code := <-answers; code != http.StatusAccepted {
				t.Fatalf("answered %d, want 202", code)
			}
			got := rec.get()
			if len(got) != 2 {
				t.Fatalf("appended %d spans, want 2", len(got))
			}
			wantTrace := "0000000000000000463ac35c9f6413ad"
			for _, s := range got {
				if s.TraceID.String() != wantTrace || s.Service != "productpage.default" {
					t.Errorf("span %q: trace %s service %q", s.Name, s.TraceID, s.Service)
				}
				switch s.Name {
				case "get /productpage":
					if s.SpanID.String() != "463ac35c9f6413ad" || !s.IsRoot() || s.Kind != traces.KindServer || attrText(&s, "istio.canonical_service") != "productpage" ||
						s.StartUnixNano != 1700000000000000000 || s.DurationNanos() != 12e6 {
						t.Errorf("server span %+v", s)
					}
				case "get /reviews":
					if s.SpanID.String() != "a1b2c3d4e5f60718" || s.ParentSpanID.String() != "463ac35c9f6413ad" || s.Kind != traces.KindClient ||
						s.StatusCode != traces.StatusError || attrText(&s, "upstream_cluster") != "outbound|9080||reviews.default.svc.cluster.local" {
						t.Errorf("client span %+v", s)
					}
				default:
					t.Errorf("unexpected span %q", s.Name)
				}
			}
		})
	}
}

func attrText(s *traces.Span, key string) string {
	a, ok := s.Attr(key)
	if !ok {
		return "<absent>"
	}
	return a.Text()
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}
