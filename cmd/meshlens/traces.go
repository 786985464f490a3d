package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/oklog/run"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc"

	"github.com/meshlens/meshlens/config"
	"github.com/meshlens/meshlens/exemplars"
	"github.com/meshlens/meshlens/rules"
	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/forward"
	"github.com/meshlens/meshlens/traces/ingest"
	"github.com/meshlens/meshlens/traces/ingest/decode"
	"github.com/meshlens/meshlens/traces/query/jaeger"
	"github.com/meshlens/meshlens/traces/query/tempo"
	"github.com/meshlens/meshlens/traces/store"
)

// tracing is the trace half of the server: the span store, span ingest
// (HTTP handlers and the optional OTLP/gRPC listener), forwarding and the
// query APIs.
type tracing struct {
	metrics *metrics.Set
	// traceIDLabels are the exemplar labels that hold a trace id.
	traceIDLabels []string
	store         *store.Store
	fwd           *forward.Forwarder // nil without traces.forward.endpoint

	grpcLn  net.Listener // nil without traces.otlp_grpc.address
	grpcSrv *grpc.Server

	zipkin, otlp, tempo, jaeger http.Handler
}

// openTraces opens the span store in <dataDir>/traces, shipping to bkt,
// and builds the handlers. compact makes this node the bucket's trace
// compactor. The components' self-metrics go to set, the server's.
func openTraces(cfg config.TracesConfig, localRetention time.Duration, dataDir string, bkt objstore.Bucket, compact bool, webConfigFile string, set *metrics.Set, logger, quiet *slog.Logger) (t *tracing, err error) {
	t = &tracing{metrics: set, traceIDLabels: cfg.ExemplarTraceIDLabels}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	t.store, err = store.Open(store.Options{
		Dir:              filepath.Join(dataDir, "traces"),
		Bucket:           bkt,
		TraceIdle:        time.Duration(cfg.TraceIdle),
		MaxBlockDuration: time.Duration(cfg.MaxBlockDuration),
		MaxSpansPerTrace: cfg.MaxSpansPerTrace,
		Retention:        time.Duration(cfg.Retention),
		LocalRetention:   localRetention,
		Compact:          compact,
		CacheDir:         filepath.Join(dataDir, "traces-cache"),
		Logger:           quiet.With("component", "span store"),
		Metrics:          t.metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("span store: %w", err)
	}
	var app traces.Appender = t.store
	if f := cfg.Forward; f.Endpoint != "" {
		t.fwd, err = forward.New(forward.Options{
			Endpoint:   f.Endpoint,
			Protocol:   f.Protocol,
			Headers:    f.Headers,
			Timeout:    time.Duration(f.Timeout),
			QueueSpans: f.QueueSpans,
			Logger:     logger.With("component", "span forwarder"),
			Metrics:    t.metrics,
		})
		if err != nil {
			return nil, fmt.Errorf("traces.forward: %w", err)
		}
		app = forward.Tee(t.store, t.fwd)
	}
	if err := t.openIngest(cfg, app, webConfigFile, logger); err != nil {
		return nil, err
	}
	t.tempo = tempo.NewHandler(t.store, tempo.Options{Logger: logger.With("component", "tempo api")})
	t.jaeger = jaeger.NewHandler(t.store, jaeger.Options{Logger: logger.With("component", "jaeger api")})
	return t, nil
}

// drilldown serves /api/v1/drilldown: the exemplars of ex joined to the
// span store's traces.
func (t *tracing) drilldown(ex storage.ExemplarQueryable, p parser.Parser) http.Handler {
	return exemplars.NewDrilldownHandler(ex, t.store, exemplars.DrilldownOptions{Parser: p, TraceIDLabels: t.traceIDLabels})
}

// alertAnnotator puts the traces behind alerts, n of them, into the
// annotations of the alerts that ask for them; with n 0 it only removes
// the requests.
func (t *tracing) alertAnnotator(ex storage.ExemplarQueryable, p parser.Parser, n int, logger *slog.Logger) rules.AlertAnnotator {
	if n == 0 {
		n = -1
	}
	return exemplars.NewAlertAnnotator(ex, t.store, exemplars.AlertAnnotatorOptions{
		Logger: logger, Metrics: t.metrics, Traces: n, Drilldown: exemplars.DrilldownOptions{Parser: p, TraceIDLabels: t.traceIDLabels},
	})
}

// add puts the trace components into the run group.
func (t *tracing) add(g *run.Group) {
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return t.store.Run(ctx) }, func(error) { cancel() })
	}
	if t.fwd != nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return t.fwd.Run(ctx) }, func(error) { cancel() })
	}
	if t.grpcSrv != nil {
		g.Add(func() error {
			if err := t.grpcSrv.Serve(t.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("otlp grpc server: %w", err)
			}
			return nil
		}, func(error) {
			stopped := make(chan struct{})
			go func() { t.grpcSrv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(10 * time.Second):
				t.grpcSrv.Stop()
			}
		})
	}
}

// Close stops the listener and closes the store (its WAL holds every
// acknowledged span).
func (t *tracing) Close() error {
	if t == nil {
		return nil
	}
	if t.grpcSrv != nil {
		t.grpcSrv.Stop()
	} else if t.grpcLn != nil {
		t.grpcLn.Close()
	}
	var err error
	if t.store != nil {
		err = t.store.Close()
		t.store = nil
	}
	return err
}

// openIngest builds the span receivers over app and, when configured,
// listens for OTLP/gRPC, with TLS and basic auth from the web
// configuration file when set.
func (t *tracing) openIngest(cfg config.TracesConfig, app traces.Appender, webConfigFile string, logger *slog.Logger) error {
	o := ingest.Options{
		MaxRequestBytes: int(cfg.MaxRequestBytes),
		Limits: decode.Limits{
			MaxDecodedBytes:    int(cfg.MaxDecodedBytes),
			MaxSpansPerRequest: cfg.MaxSpansPerRequest,
			MaxAttrValueBytes:  cfg.MaxAttributeValueBytes,
		},
		Logger:  logger.With("component", "span ingest"),
		Metrics: t.metrics,
	}
	t.zipkin = ingest.NewZipkinHandler(app, o)
	t.otlp = ingest.NewOTLPHandler(app, o)
	if cfg.OTLPGRPC.Address == "" {
		return nil
	}
	auth, err := grpcServerOptions(webConfigFile, logger.With("component", "otlp grpc"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.OTLPGRPC.Address)
	if err != nil {
		return fmt.Errorf("traces.otlp_grpc.address: %w", err)
	}
	t.grpcLn = ln
	t.grpcSrv = grpc.NewServer(append(ingest.ServerOptions(o), auth...)...)
	ingest.NewOTLPService(app, o).Register(t.grpcSrv)
	return nil
}

// otlpGRPCAddr is the OTLP/gRPC listener's address; "" when it is off.
func (t *tracing) otlpGRPCAddr() string {
	if t == nil || t.grpcLn == nil {
		return ""
	}
	return t.grpcLn.Addr().String()
}
