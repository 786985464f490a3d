package forward

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshlens/meshlens/traces"
)

// answer is how a test receiver answers one request. The zero answer
// accepts it.
type answer struct {
	httpStatus int           // HTTP: the status; 0: 200
	grpcCode   codes.Code    // gRPC: the status code; OK: accept
	retryAfter time.Duration // HTTP Retry-After (whole seconds), gRPC RetryInfo
	rejected   int64         // partial success: spans rejected
	stall      chan struct{} // wait for it to close before answering
}

// receiver is an OTLP endpoint that keeps what it receives.
type receiver struct {
	// respond answers request n (from 1); nil accepts every request.
	respond func(n int) answer

	mu       sync.Mutex
	requests int
	spans    []traces.Span
	orgIDs   []string    // X-Scope-OrgID of each request
	at       []time.Time // arrival of each request
}

func (r *receiver) receive(td ptraceotlpRequest, orgID string) answer {
	r.mu.Lock()
	r.requests++
	n := r.requests
	r.orgIDs = append(r.orgIDs, orgID)
	r.at = append(r.at, time.Now())
	respond := r.respond
	r.mu.Unlock()
	var a answer
	if respond != nil {
		a = respond(n)
	}
	if a.stall != nil {
		<-a.stall
	}
	if a.httpStatus/100 <= 2 && a.grpcCode == codes.OK {
		r.mu.Lock()
		r.spans = traces.FromPdata(r.spans, td.Traces())
		r.mu.Unlock()
	}
	return a
}

type ptraceotlpRequest = ptraceotlp.ExportRequest

func (r *receiver) received() (requests int, spans []traces.Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, append([]traces.Span(nil), r.spans...)
}

// serveHTTP starts an OTLP/HTTP endpoint and returns its URL.
func serveHTTP(t *testing.T, r *receiver) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want a protobuf POST to /v1/traces", http.StatusBadRequest)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		er := ptraceotlp.NewExportRequest()
		if err := er.UnmarshalProto(b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a := r.receive(er, req.Header.Get("X-Scope-OrgID"))
		if a.httpStatus >= 300 {
			if a.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int(a.retryAfter/time.Second)))
			}
			http.Error(w, "refused", a.httpStatus)
			return
		}
		resp := ptraceotlp.NewExportResponse()
		resp.PartialSuccess().SetRejectedSpans(a.rejected)
		out, _ := resp.MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1/traces"
}

type grpcReceiver struct {
	ptraceotlp.UnimplementedGRPCServer
	r *receiver
}

func (g *grpcReceiver) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	orgID := ""
	if v := md.Get("x-scope-orgid"); len(v) > 0 {
		orgID = v[0]
	}
	a := g.r.receive(req, orgID)
	resp := ptraceotlp.NewExportResponse()
	if a.grpcCode != codes.OK {
		st := status.New(a.grpcCode, "refused")
		if a.retryAfter > 0 {
			st, _ = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(a.retryAfter)})
		}
		return resp, st.Err()
	}
	resp.PartialSuccess().SetRejectedSpans(a.rejected)
	return resp, nil
}

// serveGRPC starts an OTLP/gRPC endpoint and returns its address.
func serveGRPC(t *testing.T, r *receiver) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ptraceotlp.RegisterGRPCServer(srv, &grpcReceiver{r: r})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func serve(t *testing.T, protocol string, r *receiver) string {
	if protocol == ProtocolGRPC {
		return serveGRPC(t, r)
	}
	return serveHTTP(t, r)
}

// start runs a forwarder for the test; the returned stop cancels Run and
// waits for it.
func start(t *testing.T, o Options) (f *Forwarder, stop func()) {
	t.Helper()
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return f, stop
}

// waitFor polls cond until it holds, failing the test after a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metric returns the value of a sample in set's exposition, -1 if absent.
func metric(set *metrics.Set, name string) float64 {
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	return -1
}

func dropped(reason string) string {
	return fmt.Sprintf(`meshlens_traces_forward_dropped_spans_total{reason=%q}`, reason)
}

const sentSpans = `meshlens_traces_forward_sent_spans_total`

// testSpans returns n spans of two services with every kind of field set.
func testSpans(n int) []traces.Span {
	resA := []traces.Attr{traces.String(traces.ServiceNameKey, "frontend"), traces.String("k8s.namespace.name", "shop")}
	resB := []traces.Attr{traces.String(traces.ServiceNameKey, "checkout"), traces.Int("process.pid", 42)}
	spans := make([]traces.Span, n)
	for i := range spans {
		s := traces.Span{
			TraceID:       traces.TraceID{0xab, byte(i >> 8), byte(i), 15: 1},
			SpanID:        traces.SpanID{0xcd, byte(i >> 8), byte(i), 7: 2},
			Name:          fmt.Sprintf("GET /item/%d", i),
			Kind:          traces.KindServer,
			StartUnixNano: 1_700_000_000_000_000_000 + uint64(i)*1000,
			EndUnixNano:   1_700_000_000_000_500_000 + uint64(i)*1000,
			StatusCode:    traces.StatusError,
			StatusMessage: "upstream reset",
			Service:       "frontend",
			Resource:      resA,
			ScopeName:     "envoy",
			ScopeVersion:  "1.30",
			Attrs: []traces.Attr{
				traces.String("http.method", "GET"),
				traces.Int("http.status_code", 503),
				traces.Float("upstream.weight", 0.5),
				traces.Bool("retry", true),
			},
		}
		if i%2 == 1 {
			s.Service, s.Resource = "checkout", resB
			s.ParentSpanID = traces.SpanID{0xcd, byte((i - 1) >> 8), byte(i - 1), 7: 2}
			s.Kind = traces.KindClient
			s.TraceState = "vendor=1"
			s.Events = []traces.Event{{TimeUnixNano: s.StartUnixNano + 10, Name: "retry", Attrs: []traces.Attr{traces.Int("attempt", 2)}}}
			s.Links = []traces.Link{{TraceID: traces.TraceID{1, 15: 9}, SpanID: traces.SpanID{2, 7: 9}, Attrs: []traces.Attr{traces.String("why", "batch")}}}
		}
		spans[i] = s
	}
	return spans
}

var protocols = []string{ProtocolHTTP, ProtocolGRPC}

func TestForwardSpansArriveIntact(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			r := &receiver{}
			set := metrics.NewSet()
			f, _ := start(t, Options{
				Endpoint:   serve(t, protocol, r),
				Protocol:   protocol,
				Headers:    map[string]string{"X-Scope-OrgID": "mesh-1"},
				BatchSpans: 4,
				Metrics:    set,
			})
			want := testSpans(10)
			// Appended in two calls: batches need not follow them.
			if err := f.Append(context.Background(), want[:3]); err != nil {
				t.Fatal(err)
			}
			if err := f.Append(context.Background(), want[3:]); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "10 spans sent", func() bool { return metric(set, sentSpans) == 10 })

			requests, got := r.received()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("received spans differ from the appended ones\ngot:  %+v\nwant: %+v", got, want)
			}
			if requests != 3 {
				t.Errorf("10 spans in batches of at most 4 took %d requests, want 3", requests)
			}
			for i, id := range r.orgIDs {
				if id != "mesh-1" {
					t.Errorf("request %d: X-Scope-OrgID %q, want the configured header", i+1, id)
				}
			}
			if v := metric(set, `meshlens_traces_forward_queue_spans`); v != 0 {
				t.Errorf("queue gauge %v after everything was sent, want 0", v)
			}
		})
	}
}

func TestForwardRetries(t *testing.T) {
	cases := []struct {
		name     string
		protocol string
		first    answer // the answer to the first request; later ones accept
		retried  bool   // else the spans are dropped as rejected
	}{
		{"http 503", ProtocolHTTP, answer{httpStatus: 503}, true},
		{"http 502", ProtocolHTTP, answer{httpStatus: 502}, true},
		{"http 504", ProtocolHTTP, answer{httpStatus: 504}, true},
		{"http 429", ProtocolHTTP, answer{httpStatus: 429}, true},
		{"http 400", ProtocolHTTP, answer{httpStatus: 400}, false},
		{"http 500", ProtocolHTTP, answer{httpStatus: 500}, false},
		{"http 413", ProtocolHTTP, answer{httpStatus: 413}, false},
		{"grpc unavailable", ProtocolGRPC, answer{grpcCode: codes.Unavailable}, true},
		{"grpc deadline exceeded", ProtocolGRPC, answer{grpcCode: codes.DeadlineExceeded}, true},
		{"grpc resource exhausted with retry info", ProtocolGRPC, answer{grpcCode: codes.ResourceExhausted, retryAfter: 20 * time.Millisecond}, true},
		{"grpc resource exhausted without retry info", ProtocolGRPC, answer{grpcCode: codes.ResourceExhausted}, false},
		{"grpc invalid argument", ProtocolGRPC, answer{grpcCode: codes.InvalidArgument}, false},
		{"grpc unauthenticated", ProtocolGRPC, answer{grpcCode: codes.Unauthenticated}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &receiver{respond: func(n int) answer {
				if n == 1 {
					return tc.first
				}
				return answer{}
			}}
			set := metrics.NewSet()
			f, _ := start(t, Options{
				Endpoint:      serve(t, tc.protocol, r),
				Protocol:      tc.protocol,
				FlushInterval: time.Millisecond,
				MinBackoff:    time.Millisecond,
				Metrics:       set,
			})
			want := testSpans(5)
			f.Append(context.Background(), want)
			if tc.retried {
				waitFor(t, "spans sent", func() bool { return metric(set, sentSpans) == 5 })
				requests, got := r.received()
				if requests != 2 || !reflect.DeepEqual(got, want) {
					t.Errorf("after one retry: %d requests and %d spans received, want 2 requests and the 5 spans", requests, len(got))
				}
				if v := metric(set, dropped(reasonRejected)); v != 0 {
					t.Errorf("%v spans counted as rejected, want 0", v)
				}
				return
			}
			waitFor(t, "spans dropped", func() bool { return metric(set, dropped(reasonRejected)) == 5 })
			if requests, got := r.received(); requests != 1 || len(got) != 0 {
				t.Errorf("a non-retryable failure: %d requests and %d spans received, want 1 request and none", requests, len(got))
			}
			if v := metric(set, sentSpans); v != 0 {
				t.Errorf("%v spans counted as sent, want 0", v)
			}
		})
	}
}

func TestForwardHonoursRetryAfter(t *testing.T) {
	cases := []struct {
		protocol string
		first    answer
	}{
		{ProtocolHTTP, answer{httpStatus: 503, retryAfter: time.Second}},
		{ProtocolGRPC, answer{grpcCode: codes.Unavailable, retryAfter: 300 * time.Millisecond}},
	}
	for _, tc := range cases {
		t.Run(tc.protocol, func(t *testing.T) {
			r := &receiver{respond: func(n int) answer {
				if n == 1 {
					return tc.first
				}
				return answer{}
			}}
			set := metrics.NewSet()
			f, _ := start(t, Options{
				Endpoint:      serve(t, tc.protocol, r),
				Protocol:      tc.protocol,
				FlushInterval: time.Millisecond,
				MinBackoff:    time.Millisecond, // the endpoint's delay wins
				Metrics:       set,
			})
			f.Append(context.Background(), testSpans(3))
			waitFor(t, "spans sent", func() bool { return metric(set, sentSpans) == 3 })
			r.mu.Lock()
			defer r.mu.Unlock()
			if gap := r.at[1].Sub(r.at[0]); gap < tc.first.retryAfter {
				t.Errorf("retried after %s, want at least the endpoint's %s", gap, tc.first.retryAfter)
			}
			if v := metric(set, `meshlens_traces_forward_retries_total`); v != 1 {
				t.Errorf("retries counter %v, want 1", v)
			}
		})
	}
}

func TestForwardRetriesExhausted(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			r := &receiver{respond: func(int) answer { return answer{httpStatus: 503, grpcCode: codes.Unavailable} }}
			set := metrics.NewSet()
			f, _ := start(t, Options{
				Endpoint:      serve(t, protocol, r),
				Protocol:      protocol,
				FlushInterval: time.Millisecond,
				MinBackoff:    5 * time.Millisecond,
				MaxBackoff:    20 * time.Millisecond,
				MaxRetryTime:  200 * time.Millisecond,
				Metrics:       set,
			})
			f.Append(context.Background(), testSpans(4))
			waitFor(t, "spans dropped", func() bool { return metric(set, dropped(reasonRetriesExhausted)) == 4 })
			requests, _ := r.received()
			if requests < 3 {
				t.Errorf("%d requests in the retry time, want several", requests)
			}
			// The forwarder goes on with later spans.
			r.mu.Lock()
			r.respond = nil
			r.mu.Unlock()
			f.Append(context.Background(), testSpans(2))
			waitFor(t, "later spans sent", func() bool { return metric(set, sentSpans) == 2 })
		})
	}
}

func TestForwardQueueFullDropsAndCounts(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			release := make(chan struct{})
			r := &receiver{respond: func(n int) answer {
				if n == 1 {
					return answer{stall: release}
				}
				return answer{}
			}}
			set := metrics.NewSet()
			f, _ := start(t, Options{
				Endpoint:      serve(t, protocol, r),
				Protocol:      protocol,
				QueueSpans:    10,
				BatchSpans:    5,
				FlushInterval: time.Millisecond,
				Metrics:       set,
			})
			spans := testSpans(20)
			// The first batch is taken off the queue and stalls in the endpoint.
			f.Append(context.Background(), spans[:5])
			waitFor(t, "the first request", func() bool { n, _ := r.received(); return n == 1 })

			appended := make(chan struct{})
			go func() {
				defer close(appended)
				f.Append(context.Background(), spans[5:12])  // fits
				f.Append(context.Background(), spans[12:20]) // 3 fit, 5 dropped
			}()
			select {
			case <-appended:
			case <-time.After(5 * time.Second):
				t.Fatal("Append blocked while the endpoint stalled")
			}
			if v := metric(set, dropped(reasonQueueFull)); v != 5 {
				t.Errorf("%v spans counted as dropped for a full queue, want 5", v)
			}
			if v := metric(set, `meshlens_traces_forward_queue_spans`); v != 10 {
				t.Errorf("queue gauge %v, want 10 (full)", v)
			}
			close(release)
			waitFor(t, "queued spans sent", func() bool { return metric(set, sentSpans) == 15 })
			_, got := r.received()
			if !reflect.DeepEqual(got, spans[:15]) {
				t.Errorf("received %d spans, want the 15 that fitted, in order", len(got))
			}
		})
	}
}

func TestForwardFlushesOnShutdown(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			r := &receiver{}
			set := metrics.NewSet()
			f, stop := start(t, Options{
				Endpoint:      serve(t, protocol, r),
				Protocol:      protocol,
				BatchSpans:    3,
				FlushInterval: time.Hour, // only the shutdown sends a partial batch
				Metrics:       set,
			})
			want := testSpans(7)
			f.Append(context.Background(), want)
			waitFor(t, "full batches sent", func() bool { return metric(set, sentSpans) == 6 })
			stop()
			if _, got := r.received(); !reflect.DeepEqual(got, want) {
				t.Errorf("after shutdown %d spans received, want all 7", len(got))
			}
			// After Run returned, spans are dropped and counted.
			f.Append(context.Background(), testSpans(2))
			if v := metric(set, dropped(reasonShutdown)); v != 2 {
				t.Errorf("%v spans counted as dropped at shutdown, want 2", v)
			}
		})
	}
}

func TestForwardShutdownGraceBoundsRetries(t *testing.T) {
	r := &receiver{respond: func(int) answer { return answer{httpStatus: 503} }}
	set := metrics.NewSet()
	f, stop := start(t, Options{
		Endpoint:      serve(t, ProtocolHTTP, r),
		Protocol:      ProtocolHTTP,
		FlushInterval: time.Millisecond,
		MinBackoff:    5 * time.Millisecond,
		MaxBackoff:    5 * time.Millisecond,
		ShutdownGrace: 100 * time.Millisecond,
		Metrics:       set,
	})
	f.Append(context.Background(), testSpans(4))
	waitFor(t, "a retry", func() bool { n, _ := r.received(); return n >= 2 })
	t0 := time.Now()
	stop()
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("shutdown took %s with a failing endpoint, want about the 100ms grace", d)
	}
	if v := metric(set, dropped(reasonShutdown)); v != 4 {
		t.Errorf("%v spans counted as dropped at shutdown, want 4", v)
	}
}

func TestForwardPartialSuccessCountsRejected(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			r := &receiver{respond: func(int) answer { return answer{rejected: 2} }}
			set := metrics.NewSet()
			f, _ := start(t, Options{Endpoint: serve(t, protocol, r), Protocol: protocol, FlushInterval: time.Millisecond, Metrics: set})
			f.Append(context.Background(), testSpans(5))
			waitFor(t, "spans sent", func() bool { return metric(set, sentSpans) == 3 })
			if v := metric(set, dropped(reasonRejected)); v != 2 {
				t.Errorf("%v spans counted as rejected, want the 2 the endpoint rejected", v)
			}
		})
	}
}

func TestAppendCopiesSpans(t *testing.T) {
	r := &receiver{}
	set := metrics.NewSet()
	f, _ := start(t, Options{Endpoint: serve(t, ProtocolHTTP, r), Protocol: ProtocolHTTP, FlushInterval: 20 * time.Millisecond, Metrics: set})
	spans := testSpans(2)
	want := testSpans(2)
	f.Append(context.Background(), spans)
	// The caller reuses its spans at once.
	spans[0].Name = "reused"
	spans[0].Attrs[0].Str = "POST"
	spans[0].Resource[1].Str = "other"
	spans[1].Events[0].Attrs[0].Int = 7
	spans[1].Links[0].Attrs[0].Str = "changed"
	waitFor(t, "spans sent", func() bool { return metric(set, sentSpans) == 2 })
	if _, got := r.received(); !reflect.DeepEqual(got, want) {
		t.Errorf("the forwarder sent what the caller changed after Append\ngot:  %+v\nwant: %+v", got, want)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"no endpoint", Options{Protocol: ProtocolHTTP}, "endpoint is empty"},
		{"unknown protocol", Options{Endpoint: "http://tempo:4318/v1/traces", Protocol: "thrift"}, `protocol "thrift"`},
		{"http endpoint without scheme", Options{Endpoint: "tempo:4318", Protocol: ProtocolHTTP}, "want an http:// or https:// URL"},
		{"negative queue", Options{Endpoint: "tempo:4317", Protocol: ProtocolGRPC, QueueSpans: -1}, "negative queue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// store is a primary appender that fails when told to.
type store struct {
	err   error
	spans []traces.Span
}

func (s *store) Append(_ context.Context, spans []traces.Span) error {
	if s.err != nil {
		return s.err
	}
	s.spans = append(s.spans, spans...)
	return nil
}

func TestTee(t *testing.T) {
	errFull := errors.New("store full")
	cases := []struct {
		name      string
		storeErr  error
		forwarded int
	}{
		{"stored spans are forwarded", nil, 3},
		{"refused spans are not", errFull, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := metrics.NewSet()
			// Not running: Append only queues, which the gauge shows.
			f, err := New(Options{Endpoint: "127.0.0.1:1", Protocol: ProtocolGRPC, Metrics: set})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.send.close() })
			st := &store{err: tc.storeErr}
			err = Tee(st, f).Append(context.Background(), testSpans(3))
			if !errors.Is(err, tc.storeErr) {
				t.Errorf("Append: %v, want the store's error %v", err, tc.storeErr)
			}
			if v := metric(set, `meshlens_traces_forward_queue_spans`); v != float64(tc.forwarded) {
				t.Errorf("%v spans queued for forwarding, want %d", v, tc.forwarded)
			}
			if tc.storeErr == nil && len(st.spans) != 3 {
				t.Errorf("store got %d spans, want 3", len(st.spans))
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"-1", 0},
		{"soon", 0},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second},
		{now.Add(-10 * time.Second).Format(http.TimeFormat), 0},
	}
	for _, tc := range cases {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
