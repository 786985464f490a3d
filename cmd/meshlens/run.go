package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/api"
	"github.com/meshlens/meshlens/api/remoteread"
	"github.com/meshlens/meshlens/config"
	"github.com/meshlens/meshlens/exemplars"
	exstore "github.com/meshlens/meshlens/exemplars/store"
	"github.com/meshlens/meshlens/remotewrite"
	"github.com/meshlens/meshlens/remotewrite/aggregate"
	"github.com/meshlens/meshlens/remotewrite/decode"
	"github.com/meshlens/meshlens/rules"
	"github.com/meshlens/meshlens/tsdb"
	"github.com/meshlens/meshlens/tsdb/bucketstore"
	"github.com/meshlens/meshlens/tsdb/compact"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0"

// Main is the meshlens server: flags, configuration, components and their
// lifecycle. Tests build one, call ParseFlags and Open, then Run.
type Main struct {
	Listen     string
	DataDir    string
	ConfigFile string
	// WebConfigFile is the exporter-toolkit web configuration (TLS, basic
	// auth, headers) of the HTTP and OTLP/gRPC listeners; open when empty.
	WebConfigFile string
	LogLevel      string
	// Compact runs the bucket compactor in the server (single-node setups).
	// Unless ParseFlags saw --compact, the compactor also runs when the
	// bucket is the default one in <data-dir>/bucket.
	Compact bool
	// compactSet is whether --compact was given.
	compactSet bool
	// compacting is whether this node compacts the bucket and applies
	// retention there, set by Open.
	compacting bool
	// Stderr receives logs; os.Stderr when nil.
	Stderr io.Writer

	logger *slog.Logger

	mu         sync.Mutex
	cfg        config.Config
	reloadOK   bool
	reloadedAt time.Time

	db        *tsdb.DB                 // set by Run once open
	openDB    func() (*tsdb.DB, error) // opens the TSDB, replaying its WAL
	gate      *tsdb.Gate               // the TSDB for every component, ready once open
	shipper   *tsdb.Shipper
	bucket    *bucketstore.Store
	compactor *compact.Compactor
	engine    *promql.Engine
	write     *remotewrite.WriteHandler
	aggr      *aggregate.Aggregator // nil without aggregation rules
	rules     *rules.Engine
	traces    *tracing
	exemplars *exstore.Store // exemplars with a trace id, kept as long as spans
	metrics   *metrics.Set   // meshlens's own metrics, shown on /metrics
	ln        net.Listener
	srv       *http.Server

	coverage *exemplars.TraceCoverage // nil with traces.coverage.enabled false
}

// NewMain returns a Main with the embedded defaults.
func NewMain() *Main {
	return &Main{Listen: "127.0.0.1:9201", DataDir: "data", LogLevel: "info"}
}

// ParseFlags parses the command line.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("meshlens", flag.ContinueOnError)
	fs.StringVar(&m.Listen, "listen", m.Listen, "HTTP listen address (Prometheus API, remote write and read)")
	fs.StringVar(&m.DataDir, "data-dir", m.DataDir, "directory for the TSDB (data-dir/tsdb)")
	fs.StringVar(&m.ConfigFile, "config", m.ConfigFile, "optional YAML configuration file; embedded defaults when empty")
	fs.StringVar(&m.WebConfigFile, "web.config.file", m.WebConfigFile, "optional exporter-toolkit web configuration file (TLS, client certificates, basic auth, headers) for every listener; without it every endpoint is open")
	fs.BoolVar(&m.Compact, "compact", m.Compact, "also compact, downsample and apply retention to the bucket (one compactor per bucket); on by default with the default bucket in data-dir/bucket, --compact=false turns it off")
	fs.StringVar(&m.LogLevel, "log.level", m.LogLevel, "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "compact" {
			m.compactSet = true
		}
	})
	return nil
}

// Open loads the configuration, opens storage and listens. On error nothing
// stays open.
func (m *Main) Open() (err error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(m.LogLevel)); err != nil {
		return fmt.Errorf("--log.level: %w", err)
	}
	stderr := m.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	m.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// The TSDB and the rule manager report routine work (WAL replay,
	// compactions, start and stop) at info; keep it for --log.level=debug.
	quietLogger := m.logger
	if level > slog.LevelDebug {
		quietLogger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: max(level, slog.LevelWarn)}))
	}

	cfg, err := m.loadConfig()
	if err != nil {
		return err
	}
	if err := validateWebConfig(m.WebConfigFile); err != nil {
		return err
	}
	m.cfg, m.reloadOK, m.reloadedAt = cfg, true, time.Now()

	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	reg := prometheus.NewRegistry()
	m.metrics = newMetrics()
	bucketConf, err := bucketConfig(cfg.Storage, m.DataDir)
	if err != nil {
		return err
	}
	bkt, err := tsdb.OpenBucket(bucketConf, quietLogger, reg)
	if err != nil {
		return fmt.Errorf("storage.bucket: %w", err)
	}
	tsdbDir := filepath.Join(m.DataDir, "tsdb")
	m.shipper, err = tsdb.NewShipper(tsdb.ShipperOptions{
		Dir: tsdbDir, Bucket: bkt, Labels: externalLabels(cfg), Logger: quietLogger, Registerer: reg,
	})
	if err != nil {
		return err
	}
	// With the default bucket nothing else can compact it or apply
	// retention to it: this node does, unless told --compact=false.
	m.compacting = m.Compact || (!m.compactSet && defaultBucket(cfg.Storage))
	if m.compacting {
		// Routine compaction is logged at debug unless --compact asked for it.
		logger := quietLogger
		if m.Compact {
			logger = m.logger
		}
		if m.compactor, err = newCompactor(cfg, bkt, m.DataDir, logger, reg); err != nil {
			return err
		}
	}
	m.bucket, err = bucketstore.New(bucketstore.Options{
		Bucket:     bkt,
		CacheDir:   filepath.Join(m.DataDir, "bucket-cache"),
		CacheBytes: int64(cfg.Storage.BucketCacheSize),
		Logger:     quietLogger.With("component", "bucket store"),
		Registerer: reg,
	})
	if err != nil {
		return err
	}
	// Know the bucket's blocks before the first query; an unreachable
	// bucket is retried by the store's own loop.
	if err := m.bucket.Sync(context.Background()); err != nil {
		m.logger.Warn("bucket not readable at start; queries cover local data until it is", "err", err)
	}
	opts := tsdbOptions(cfg.Storage.TSDB)
	// Blocks go to the bucket as the head cuts them; merging them locally
	// would upload the same data twice (Thanos requires the same of sidecars).
	opts.MaxBlockDuration = opts.MinBlockDuration
	opts.BlocksToDelete = tsdb.KeepUntilServed(m.shipper.BlocksToDelete(time.Duration(cfg.Storage.LocalRetention)), m.bucket)
	// The TSDB opens (and replays its WAL) in Run; until then the gate
	// answers ErrNotReady and the API 503. Queries, rules and remote read
	// see the local TSDB and the bucket through it.
	m.openDB = func() (*tsdb.DB, error) { return tsdb.Open(tsdbDir, opts, quietLogger, reg) }
	m.gate = tsdb.NewGate(m.bucket)
	if m.exemplars, err = openExemplars(cfg.Traces, m.DataDir, bkt, m.compacting, m.metrics, quietLogger.With("component", "exemplar store")); err != nil {
		return err
	}
	store := newStorageWithExemplars(m.gate, m.exemplars)
	q := cfg.Query
	tracker, err := promql.NewActiveQueryTracker(m.DataDir, q.MaxConcurrency, m.logger.With("component", "query tracker"))
	if err != nil {
		return fmt.Errorf("query tracker in %s: %w", m.DataDir, err)
	}
	m.engine = newEngine(q, m.logger.With("component", "query engine"), reg, tracker)

	// The ingest chain: remote write, then each stage in order, then the
	// TSDB. HA-pair dedup and per-cluster limits are stages before the
	// stream aggregation.
	var stages []ingestStage
	if len(cfg.Aggregation.Rules) > 0 {
		stages = append(stages, func(next storage.AppendableV2) (storage.AppendableV2, error) {
			a, err := newAggregator(next, cfg.Aggregation, m.logger.With("component", "aggregation"), m.metrics)
			if err != nil {
				return nil, err
			}
			m.aggr = a
			return a, nil
		})
	}
	stages = append(stages, exemplarStage(m.exemplars))
	ingest, err := ingestChain(m.gate, stages...)
	if err != nil {
		return err
	}
	if m.traces, err = openTraces(cfg.Traces, time.Duration(cfg.Storage.LocalRetention), m.DataDir, bkt, m.compacting, m.WebConfigFile, m.metrics, m.logger, quietLogger); err != nil {
		return err
	}
	if m.coverage, err = newTraceCoverage(cfg.Traces.Coverage, cfg.Traces.ExemplarTraceIDLabels, store, m.traces.store, m.gate, m.metrics, m.logger.With("component", "trace coverage")); err != nil {
		return err
	}
	meta := remotewrite.NewMetadataStore()
	wo := writeOptions(cfg)
	wo.Metrics = m.metrics
	m.write = remotewrite.NewWriteHandler(m.logger.With("component", "remote write"), ingest, meta, wo)
	rr := cfg.RemoteRead
	read := remoteread.NewHandler(m.logger.With("component", "remote read"), reg, store, remoteread.Options{
		SampleLimit: rr.SampleLimit, ConcurrentLimit: rr.ConcurrentLimit, MaxBytesInFrame: int(rr.MaxBytesInFrame),
	})

	m.ln, err = net.Listen("tcp", m.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	rc := cfg.Rules
	m.rules, err = rules.New(rules.Options{
		Logger:          quietLogger.With("component", "rules"),
		Registerer:      reg,
		Queryable:       store,
		Appendable:      m.gate,
		Engine:          m.engine,
		Parser:          newParser(q),
		OutageTolerance: time.Duration(rc.OutageTolerance),
		ForGracePeriod:  time.Duration(rc.ForGracePeriod),
		ResendDelay:     time.Duration(rc.ResendDelay),
		Annotator:       m.traces.alertAnnotator(store, newParser(q), rc.AlertTraces, quietLogger.With("component", "alert traces")),
	}, m.rulesConfig(cfg))
	if err != nil {
		return err
	}
	handler := api.New(api.Options{
		Logger:        m.logger.With("component", "api"),
		Storage:       store,
		Engine:        m.engine,
		Write:         m.write,
		Read:          read,
		Metadata:      meta,
		Metrics:       m.metrics,
		Gatherer:      reg,
		DataDir:       m.DataDir,
		ListenAddress: m.ln.Addr().String(),
		Retention:     retentionInfo(cfg, m.compacting),
		LookbackDelta: time.Duration(q.LookbackDelta),
		QueryTimeout:  time.Duration(q.Timeout),
		Parser:        newParser(q),
		Version:       Version,
		Revision:      revision(),
		Ready:         m.gate.Ready,
		Reload:        m.Reload,
		LastReload:    m.lastReload,
		Rules:         func(context.Context) apiv1.RulesRetriever { return m.rules },
		Alertmanagers: func(context.Context) apiv1.AlertmanagerRetriever { return m.rules },
		ZipkinSpans:   m.traces.zipkin,
		OTLPTraces:    m.traces.otlp,
		Tempo:         m.traces.tempo,
		Jaeger:        m.traces.jaeger,
		Drilldown:     m.traces.drilldown(store, newParser(q)),
	})
	m.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second}
	m.logger.Info("meshlens started", "listen", m.ln.Addr().String(), "data_dir", m.DataDir, "config", m.ConfigFile, "version", Version)
	return nil
}

// newMetrics returns the set of one server's own metrics, holding
// meshlens_build_info; the components add theirs. /metrics shows it with
// HELP and TYPE lines.
func newMetrics() *metrics.Set {
	metrics.ExposeMetadata(true)
	set := metrics.NewSet()
	set.NewGauge(fmt.Sprintf(`meshlens_build_info{version=%q,revision=%q,goversion=%q}`, Version, revision(), runtime.Version()), func() float64 { return 1 })
	return set
}

// revision is the VCS revision the binary was built from, if the build
// recorded it.
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}

// loadConfig reads --config, or returns the embedded defaults without it.
func (m *Main) loadConfig() (config.Config, error) {
	if m.ConfigFile == "" {
		return config.Default(), nil
	}
	return config.LoadFile(m.ConfigFile)
}

// Addr is the address the server listens on, once Open returned.
func (m *Main) Addr() string { return m.ln.Addr().String() }

// Run serves until ctx is cancelled or a component fails, then closes
// everything (listeners first, the TSDB and its WAL last). It calls Open if
// it was not called.
func (m *Main) Run(ctx context.Context) error {
	if m.srv == nil {
		if err := m.Open(); err != nil {
			return err
		}
	}
	defer m.Close()

	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			<-ctx.Done()
			m.logger.Info("shutting down")
			return nil
		}, func(error) { cancel() })
	}
	{
		g.Add(func() error {
			if err := serveHTTP(m.srv, m.ln, m.WebConfigFile, m.logger); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server: %w", err)
			}
			return nil
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = m.srv.Shutdown(ctx)
		})
	}
	{
		// The TSDB opens and replays its WAL here, behind the gate. It
		// stays open until Close, after every other component stopped.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			start := time.Now()
			db, err := m.openDB()
			if err != nil {
				return err
			}
			m.db = db
			m.gate.Set(db)
			m.logger.Info("tsdb ready", "took", time.Since(start).Round(time.Millisecond))
			<-ctx.Done()
			return nil
		}, func(error) { cancel() })
	}
	{
		// Rules evaluate once the TSDB is open.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			select {
			case <-m.gate.Done():
			case <-ctx.Done():
				return nil
			}
			return m.rules.Run(ctx)
		}, func(error) { cancel() })
	}
	if m.aggr != nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return m.aggr.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return m.shipper.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return m.bucket.Run(ctx) }, func(error) { cancel() })
	}
	m.traces.add(&g)
	addTraceCoverage(&g, m.coverage, m.gate.Done())
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return m.exemplars.Run(ctx) }, func(error) { cancel() })
	}
	if m.compactor != nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return m.compactor.Run(ctx)
		}, func(error) { cancel() })
	}
	{
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		done := make(chan struct{})
		g.Add(func() error {
			for {
				select {
				case <-hup:
					_ = m.Reload()
				case <-done:
					return nil
				}
			}
		}, func(error) {
			signal.Stop(hup)
			close(done)
		})
	}
	return g.Run()
}

// WaitReady waits until the TSDB is open (its WAL replayed) and the server
// answers queries and writes, or ctx is done.
func (m *Main) WaitReady(ctx context.Context) error {
	select {
	case <-m.gate.Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close releases everything Open acquired. The TSDB closes last, after the
// HTTP server stopped accepting writes, so the WAL holds every acknowledged
// sample.
func (m *Main) Close() error {
	if m.srv != nil {
		_ = m.srv.Close()
	} else if m.ln != nil {
		_ = m.ln.Close()
	}
	var err error
	if m.aggr != nil && m.db != nil {
		// No more writes arrive: the pending intervals go to the TSDB.
		m.aggr.Flush(context.Background(), true)
		m.aggr = nil
	}
	if m.rules != nil {
		m.rules.Close()
		m.rules = nil
	}
	if m.engine != nil {
		err = m.engine.Close()
		m.engine = nil
	}
	if m.exemplars != nil {
		err = errors.Join(err, m.exemplars.Close())
		m.exemplars = nil
	}
	if m.traces != nil {
		err = errors.Join(err, m.traces.Close())
		m.traces = nil
	}
	if m.bucket != nil {
		err = errors.Join(err, m.bucket.Close())
		m.bucket = nil
	}
	if m.db != nil {
		err = errors.Join(err, m.db.Close())
		m.db = nil
	}
	return err
}

// Reload re-reads the configuration file. An invalid file leaves the running
// configuration in place. remote_write settings apply at once; changes to
// other sections are logged and take effect at the next start.
func (m *Main) Reload() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg, err := m.loadConfig()
	if err == nil {
		err = m.rules.ApplyConfig(m.rulesConfig(cfg))
	}
	if err != nil {
		m.reloadOK = false
		m.logger.Error("configuration reload failed, keeping the running configuration", "err", err)
		return err
	}
	restartOnly := func(r config.RulesConfig) [3]config.Duration {
		return [3]config.Duration{r.OutageTolerance, r.ForGracePeriod, r.ResendDelay}
	}
	for _, s := range []struct {
		name     string
		old, new any
	}{
		{"storage", m.cfg.Storage, cfg.Storage},
		{"query", m.cfg.Query, cfg.Query},
		{"remote_read", m.cfg.RemoteRead, cfg.RemoteRead},
		{"aggregation", m.cfg.Aggregation, cfg.Aggregation},
		{"traces", m.cfg.Traces, cfg.Traces},
		{"rules (outage_tolerance, for_grace_period, resend_delay)", restartOnly(m.cfg.Rules), restartOnly(cfg.Rules)},
	} {
		if !reflect.DeepEqual(s.old, s.new) {
			m.logger.Warn("configuration section changed; it takes effect at restart", "section", s.name)
		}
	}
	m.write.SetOptions(writeOptions(cfg))
	m.cfg.RemoteWrite, m.cfg.Rules, m.cfg.Alerting, m.cfg.Global = cfg.RemoteWrite, cfg.Rules, cfg.Alerting, cfg.Global
	m.reloadOK, m.reloadedAt = true, time.Now()
	m.logger.Info("configuration reloaded", "config", m.ConfigFile)
	return nil
}

func (m *Main) lastReload() (bool, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reloadOK, m.reloadedAt
}

// rulesConfig is the rule engine's part of cfg. Alerts link to
// global.external_url, or to the listen address when it is empty.
func (m *Main) rulesConfig(cfg config.Config) rules.Config {
	ext := &url.URL{Scheme: "http", Host: m.ln.Addr().String()}
	if cfg.Global.ExternalURL != "" {
		ext, _ = url.Parse(cfg.Global.ExternalURL)  // checked by config.Validate
		ext.Path = strings.TrimRight(ext.Path, "/") // as Prometheus does
	}
	rc := rules.Config{
		Interval:       time.Duration(cfg.Rules.EvaluationInterval),
		QueryOffset:    time.Duration(cfg.Rules.QueryOffset),
		Files:          cfg.Rules.Files,
		Packs:          map[string]rules.PackConfig{},
		DisabledGroups: cfg.Rules.DisabledGroups,
		ExternalLabels: externalLabels(cfg),
		ExternalURL:    ext,
		Alerting:       cfg.Alerting,
	}
	for name, p := range cfg.Rules.Packs {
		pc := rules.PackConfig{Disabled: !cfg.Rules.PackEnabled(name), Params: p.Params}
		for _, o := range p.Overrides {
			pc.Overrides = append(pc.Overrides, rules.Override{Label: o.Label, Matches: o.Matches, Params: o.Params})
		}
		rc.Packs[name] = pc
	}
	return rc
}

// newCompactor builds the bucket compactor; it works in <data-dir>/compact.
// Its retention is compactor.retention defaulted from
// storage.tsdb.retention; with the default bucket,
// storage.tsdb.retention_size bounds <data-dir>/tsdb and the bucket's
// metric blocks together.
func newCompactor(cfg config.Config, bkt objstore.Bucket, dataDir string, logger *slog.Logger, reg prometheus.Registerer) (*compact.Compactor, error) {
	c := cfg.Compactor
	tsdbDir := filepath.Join(dataDir, "tsdb")
	ranges := make([]time.Duration, len(c.Ranges))
	for i, r := range c.Ranges {
		ranges[i] = time.Duration(r)
	}
	return compact.New(compact.Options{
		Bucket:        bkt,
		WorkDir:       filepath.Join(dataDir, "compact"),
		Ranges:        ranges,
		DeleteDelay:   time.Duration(c.DeleteDelay),
		Retention:     bucketRetention(cfg),
		RetentionSize: bucketRetentionSize(cfg),
		LocalBytes:    func() int64 { return dirBytes(tsdbDir) },
		Downsample:    c.Downsample,
		Interval:      time.Duration(c.Interval),
		Logger:        logger, // the compactor names itself
		Registerer:    reg,
	})
}

// externalLabels are global.external_labels with meshlens_node set to the
// host name unless the file sets it.
func externalLabels(cfg config.Config) labels.Labels {
	b := labels.NewBuilder(cfg.ExternalLabels())
	if _, ok := cfg.Global.ExternalLabels["meshlens_node"]; !ok {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
		b.Set("meshlens_node", host)
	}
	return b.Labels()
}

// bucketConfig returns the bucket's configuration: storage.bucket, the
// file storage.bucket_file names, or a FILESYSTEM bucket in
// <data-dir>/bucket.
func bucketConfig(s config.StorageConfig, dataDir string) (tsdb.BucketConfig, error) {
	switch {
	case s.BucketFile != "":
		b, err := os.ReadFile(s.BucketFile)
		if err != nil {
			return tsdb.BucketConfig{}, fmt.Errorf("storage.bucket_file: %w", err)
		}
		c, err := tsdb.ParseBucketConfig(b)
		if err != nil {
			return c, fmt.Errorf("storage.bucket_file: %w", err)
		}
		return c, nil
	case s.Bucket.Type != "":
		return s.Bucket, nil
	}
	return tsdb.BucketConfig{Type: objstore.FILESYSTEM, Config: map[string]any{"directory": filepath.Join(dataDir, "bucket")}}, nil
}

func writeOptions(cfg config.Config) remotewrite.WriteOptions {
	rw := cfg.RemoteWrite
	return remotewrite.WriteOptions{
		Limits:      decode.Limits{MaxBodyBytes: int(rw.MaxRequestBytes), MaxDecodedBytes: int(rw.MaxDecodedBytes)},
		MaxInflight: rw.MaxInflightRequests,
	}
}

// ingestStage is a decorator of the ingest chain: a storage.AppendableV2
// that passes what it keeps to next.
type ingestStage func(next storage.AppendableV2) (storage.AppendableV2, error)

// ingestChain puts stages in front of tail: remote-written samples pass
// stages[0] first and reach tail last.
func ingestChain(tail storage.AppendableV2, stages ...ingestStage) (storage.AppendableV2, error) {
	app := tail
	for i := len(stages) - 1; i >= 0; i-- {
		var err error
		if app, err = stages[i](app); err != nil {
			return nil, err
		}
	}
	return app, nil
}

func newAggregator(db storage.AppendableV2, c config.AggregationConfig, logger *slog.Logger, set *metrics.Set) (*aggregate.Aggregator, error) {
	opts := aggregate.Options{FlushDelay: time.Duration(c.FlushDelay), Logger: logger, Metrics: set}
	for i, r := range c.Rules {
		ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(r.Match)
		if err != nil {
			return nil, fmt.Errorf("aggregation.rules[%d].match: %w", i, err)
		}
		opts.Rules = append(opts.Rules, aggregate.Rule{
			Match: ms, Interval: time.Duration(r.Interval), Staleness: time.Duration(r.StalenessInterval),
			By: r.By, Without: r.Without, KeepMetricNames: r.KeepMetricNames, DropInput: r.DropInput,
		})
	}
	return aggregate.New(db, opts)
}

func tsdbOptions(t config.TSDBConfig) tsdb.Options {
	return tsdb.Options{
		Retention:        time.Duration(t.Retention),
		RetentionSize:    int64(t.RetentionSize),
		OutOfOrderWindow: time.Duration(t.OutOfOrderTimeWindow),
		MaxExemplars:     t.MaxExemplars,
		MinBlockDuration: time.Duration(t.MinBlockDuration),
		MaxBlockDuration: time.Duration(t.MaxBlockDuration),
		WALCompression:   t.WALCompression,
	}
}

// newEngine builds the PromQL engine as Prometheus builds it by default.
// tracker may be nil (no concurrency limit, no query log).
func newEngine(q config.QueryConfig, logger *slog.Logger, reg prometheus.Registerer, tracker promql.QueryTracker) *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{
		Parser:                   newParser(q),
		EnableDelayedNameRemoval: q.ExperimentalPromQL,
		Logger:                   logger,
		Reg:                      reg,
		MaxSamples:               q.MaxSamples,
		Timeout:                  time.Duration(q.Timeout),
		ActiveQueryTracker:       tracker,
		LookbackDelta:            time.Duration(q.LookbackDelta),
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
		// Always on in Prometheus since v2.33.
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
	})
}

// newParser returns the PromQL parser the engine and the API share.
func newParser(q config.QueryConfig) parser.Parser {
	return parser.NewParser(parser.Options{
		EnableExperimentalFunctions: q.ExperimentalPromQL,
		EnableBinopFillModifiers:    q.ExperimentalPromQL,
		EnableUnquotedUTF8Names:     q.ExperimentalPromQL,
	})
}
