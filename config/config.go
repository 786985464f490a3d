// Package config holds meshlens's YAML configuration: its schema, the embedded
// defaults, strict decoding and validation.
//
// Loading follows one path: defaults, then the file decoded on top of them
// (unknown fields are errors), then Validate. A zero Config is not valid; use
// Default or Load.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/alecthomas/units"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/thanos-io/objstore/client"
	"go.yaml.in/yaml/v3"
)

// Config is the whole meshlens configuration file.
type Config struct {
	Global      GlobalConfig      `yaml:"global"`
	Storage     StorageConfig     `yaml:"storage"`
	Query       QueryConfig       `yaml:"query"`
	RemoteWrite RemoteWriteConfig `yaml:"remote_write"`
	RemoteRead  RemoteReadConfig  `yaml:"remote_read"`
	Rules       RulesConfig       `yaml:"rules"`
	Compactor   CompactorConfig   `yaml:"compactor"`
	Aggregation AggregationConfig `yaml:"aggregation"`
	Traces      TracesConfig      `yaml:"traces"`
	// Alerting is Prometheus's own alerting section: alertmanagers (static_configs,
	// file_sd_configs, dns_sd_configs, scheme, path_prefix, timeout, api_version,
	// TLS and auth) and alert_relabel_configs. It is reloadable.
	Alerting promconfig.AlertingConfig `yaml:"alerting"`
}

// GlobalConfig holds settings shared by several components. It is reloadable.
type GlobalConfig struct {
	// ExternalLabels are added to alerts sent to Alertmanager and written
	// into the meta.json of every shipped block (thanos.labels). A
	// meshlens_node label with the host name is added unless it is set here.
	ExternalLabels map[string]string `yaml:"external_labels"`
	// ExternalURL is the URL under which users reach meshlens; alerts link to
	// it (generatorURL). Empty means http://<listen address>.
	ExternalURL string `yaml:"external_url"`
}

// RulesConfig configures rule evaluation. It is reloadable.
type RulesConfig struct {
	// EvaluationInterval is how often rule groups are evaluated unless a group
	// sets its own interval.
	EvaluationInterval Duration `yaml:"evaluation_interval"`
	// QueryOffset evaluates rules this far in the past, so that samples still
	// in flight from remote-writing Prometheus servers are seen; 0 evaluates at
	// the present, as Prometheus does by default.
	QueryOffset Duration `yaml:"query_offset"`
	// Files are Prometheus rule files; each entry may be a glob.
	Files []string `yaml:"files"`
	// Packs configures the built-in mesh rule packs by name. Every pack is on
	// unless it is listed with enabled: false.
	Packs map[string]PackConfig `yaml:"packs"`
	// DisabledGroups names rule groups (of packs or files) that are not
	// evaluated.
	DisabledGroups []string `yaml:"disabled_groups"`
	// OutageTolerance is how long meshlens may be down and still restore the
	// `for` state of alerts from ALERTS_FOR_STATE at start.
	OutageTolerance Duration `yaml:"outage_tolerance"`
	// ForGracePeriod is the least time an alert with `for` waits after a
	// restore before it fires.
	ForGracePeriod Duration `yaml:"for_grace_period"`
	// ResendDelay is how often firing alerts are re-sent to Alertmanager.
	ResendDelay Duration `yaml:"resend_delay"`
	// AlertTraces is how many trace ids an alert that asks for them (the
	// meshlens_exemplars annotation) carries to Alertmanager; 0 turns the
	// lookup off and drops the request.
	AlertTraces int `yaml:"alert_traces"`
}

// AggregationConfig configures stream aggregation: counters summed over
// the labels a rule drops as remote-written samples arrive, before they are
// stored. Changes need a restart.
type AggregationConfig struct {
	// FlushDelay is how long, in sample time, after an interval ends its
	// outputs are written; samples arriving later count in the next interval.
	FlushDelay Duration `yaml:"flush_delay"`
	// Rules are the aggregations; a series may match several.
	Rules []AggregationRule `yaml:"rules"`
}

// AggregationRule is one aggregation, in the shape of vmagent's stream
// aggregation config.
type AggregationRule struct {
	// Match is a series selector, e.g. '{__name__=~"istio_.*"}'.
	Match string `yaml:"match"`
	// Interval is the output resolution.
	Interval Duration `yaml:"interval"`
	// StalenessInterval is how long an input or output is kept without
	// samples; 0 means 5m.
	StalenessInterval Duration `yaml:"staleness_interval"`
	// By lists the labels outputs keep, Without the ones they drop; the
	// metric name is always kept.
	By      []string `yaml:"by"`
	Without []string `yaml:"without"`
	// Outputs must be [total] (the default): counter increases summed.
	Outputs []string `yaml:"outputs"`
	// KeepMetricNames names outputs as their inputs instead of
	// <metric>:<interval>[_by_<labels>|_without_<labels>]_total.
	KeepMetricNames bool `yaml:"keep_metric_names"`
	// DropInput stores only the outputs of the matched series.
	DropInput bool `yaml:"drop_input"`
}

// TracesConfig configures span ingest, the span store and forwarding.
// Changes need a restart.
type TracesConfig struct {
	// Retention is how long spans are kept, locally and in the bucket.
	Retention Duration `yaml:"retention"`
	// TraceIdle is how long after its last span a trace is complete and may
	// leave the head for a block.
	TraceIdle Duration `yaml:"trace_idle"`
	// MaxBlockDuration is how often, at least, the head is cut into a block.
	MaxBlockDuration Duration `yaml:"max_block_duration"`
	// MaxRequestBytes limits a (compressed) request body; larger bodies get 413.
	MaxRequestBytes Bytes `yaml:"max_request_bytes"`
	// MaxDecodedBytes limits a decompressed body; larger ones get 400.
	MaxDecodedBytes Bytes `yaml:"max_decoded_bytes"`
	// MaxSpansPerRequest limits the spans of one request; larger ones get 400.
	MaxSpansPerRequest int `yaml:"max_spans_per_request"`
	// MaxAttributeValueBytes truncates longer string attribute values.
	MaxAttributeValueBytes int `yaml:"max_attribute_value_bytes"`
	// MaxSpansPerTrace refuses further spans of a trace that has this many.
	MaxSpansPerTrace int `yaml:"max_spans_per_trace"`
	// OTLPGRPC is the OTLP/gRPC listener; off unless an address is set
	// (OTLP's conventional one is :4317).
	OTLPGRPC OTLPGRPCConfig `yaml:"otlp_grpc"`
	// Forward sends every accepted span on to an OTLP endpoint (Grafana
	// Tempo, Jaeger, an OpenTelemetry Collector); off unless an endpoint is
	// set.
	Forward ForwardConfig `yaml:"forward"`
	// ExemplarTraceIDLabels are the exemplar labels that hold a trace id,
	// in order of preference: exemplars with one are kept for Retention,
	// and the drill-down, the coverage series and the alerts' traces read
	// the trace id from them.
	ExemplarTraceIDLabels []string `yaml:"exemplar_trace_id_labels"`
	// Coverage measures the share of request exemplars whose trace is
	// stored and writes it as series (meshlens_exemplar_trace_coverage_ratio).
	Coverage TraceCoverageConfig `yaml:"coverage"`
}

// TraceCoverageConfig configures the trace coverage series.
type TraceCoverageConfig struct {
	// Enabled turns the measurement on; on by default.
	Enabled bool `yaml:"enabled"`
	// Interval is the time between measurements (and the series' sample
	// interval).
	Interval Duration `yaml:"interval"`
	// Lag is how far behind now a measurement's window ends: spans arrive
	// after the request their exemplar belongs to ends.
	Lag Duration `yaml:"lag"`
	// MaxTraces bounds the traces looked up per measurement; beyond it a
	// sample chosen by trace id is checked.
	MaxTraces int `yaml:"max_traces"`
	// Selectors choose the request exemplars (series selectors); empty
	// means Istio's request-duration histograms.
	Selectors []string `yaml:"selectors"`
}

// OTLPGRPCConfig configures the OTLP/gRPC listener.
type OTLPGRPCConfig struct {
	// Address is host:port to listen on; empty turns the listener off.
	Address string `yaml:"address"`
}

// ForwardConfig configures span forwarding over OTLP.
type ForwardConfig struct {
	// Endpoint is a URL for http (http://tempo:4318/v1/traces) or host:port
	// for grpc (tempo:4317); empty turns forwarding off.
	Endpoint string `yaml:"endpoint"`
	// Protocol is grpc or http.
	Protocol string `yaml:"protocol"`
	// Headers are sent with every export (e.g. X-Scope-OrgID).
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one export.
	Timeout Duration `yaml:"timeout"`
	// QueueSpans bounds the spans waiting to be sent; beyond it spans are
	// dropped and counted.
	QueueSpans int `yaml:"queue_spans"`
}

// CompactorConfig configures the bucket compactor (meshlens compact, or
// the server with --compact, the default with the default bucket).
// Changes need a restart.
type CompactorConfig struct {
	// Interval is the time between compaction passes.
	Interval Duration `yaml:"interval"`
	// Ranges are the block ranges of leveled compaction, each a larger
	// multiple of the one before.
	Ranges []Duration `yaml:"ranges"`
	// DeleteDelay is how long blocks marked for deletion stay readable.
	DeleteDelay Duration `yaml:"delete_delay"`
	// Downsample makes 5m and 1h copies of large old blocks, as Thanos does.
	Downsample bool `yaml:"downsample"`
	// Retention per resolution. 0 keeps data of that resolution for
	// storage.tsdb.retention, or as long as the finer resolution if that is
	// longer; forever with storage.tsdb.retention 0 as well.
	Retention ResolutionRetention `yaml:"retention"`
}

// ResolutionRetention is how long data of each resolution stays in the
// bucket.
type ResolutionRetention struct {
	Raw         Duration `yaml:"raw"`
	FiveMinutes Duration `yaml:"5m"`
	OneHour     Duration `yaml:"1h"`
}

// PackConfig configures one built-in rule pack.
type PackConfig struct {
	// Enabled turns the pack off when false; absent means on.
	Enabled *bool `yaml:"enabled"`
	// Params override the pack's default parameters (thresholds, windows, for).
	Params map[string]string `yaml:"params"`
	// Overrides evaluate the pack's alerting rules with other parameters for
	// the series one matcher selects (for example one destination service);
	// the default rules then skip those series.
	Overrides []PackOverride `yaml:"overrides"`
}

// PackOverride sets parameters for the series whose Label matches the
// regular expression Matches.
type PackOverride struct {
	Label   string            `yaml:"label"`
	Matches string            `yaml:"matches"`
	Params  map[string]string `yaml:"params"`
}

// PackEnabled reports whether the named pack is on.
func (c RulesConfig) PackEnabled(name string) bool {
	p, ok := c.Packs[name]
	return !ok || p.Enabled == nil || *p.Enabled
}

// StorageConfig configures local storage.
type StorageConfig struct {
	TSDB TSDBConfig `yaml:"tsdb"`
	// Bucket is the object storage completed blocks are shipped to, in
	// thanos-io/objstore's own format. With neither Bucket nor BucketFile set,
	// a FILESYSTEM bucket in <data-dir>/bucket is used.
	Bucket ObjstoreConfig `yaml:"bucket"`
	// BucketFile names a file holding the bucket configuration instead.
	BucketFile string `yaml:"bucket_file"`
	// BucketCacheSize bounds the on-disk cache (<data-dir>/bucket-cache) of
	// bucket blocks downloaded for queries.
	BucketCacheSize Bytes `yaml:"bucket_cache_size"`
	// LocalRetention is how long shipped blocks stay on local disk. A block
	// is never deleted locally before its upload is confirmed. 0 keeps them.
	LocalRetention Duration `yaml:"local_retention"`
}

// ObjstoreConfig is thanos-io/objstore's bucket configuration: the provider
// (FILESYSTEM, S3, GCS, AZURE, ...), its settings and a key prefix. It is
// objstore's own type, which the bucket is opened with.
type ObjstoreConfig = client.BucketConfig

// TSDBConfig configures the embedded Prometheus TSDB. Changes need a restart.
type TSDBConfig struct {
	// Retention is how long metrics are kept in total: the compacting node
	// applies it in the bucket as the default of compactor.retention
	// (shipped blocks leave the local disk after storage.local_retention).
	// 0 means no time limit.
	Retention Duration `yaml:"retention"`
	// RetentionSize bounds the local TSDB (blocks and WAL) and the metric
	// blocks of the default bucket together; the compacting node deletes
	// the bucket's oldest blocks while they are over it. It does not apply
	// to a remote bucket. 0 means no limit.
	RetentionSize Bytes `yaml:"retention_size"`
	// OutOfOrderTimeWindow accepts samples older than a series' newest sample by
	// up to this much. 0 rejects every out-of-order sample, as Prometheus does by
	// default.
	OutOfOrderTimeWindow Duration `yaml:"out_of_order_time_window"`
	// MaxExemplars is the size of the in-memory exemplar ring shared by all
	// series. 0 turns exemplar storage off.
	MaxExemplars int64 `yaml:"max_exemplars"`
	// MinBlockDuration is the range of the blocks cut from the head.
	MinBlockDuration Duration `yaml:"min_block_duration"`
	// MaxBlockDuration is the largest range local compaction produces.
	MaxBlockDuration Duration `yaml:"max_block_duration"`
	// WALCompression compresses WAL records with snappy.
	WALCompression bool `yaml:"wal_compression"`
}

// QueryConfig configures the PromQL engine. Changes need a restart.
type QueryConfig struct {
	Timeout        Duration `yaml:"timeout"`
	MaxSamples     int      `yaml:"max_samples"`
	MaxConcurrency int      `yaml:"max_concurrency"`
	LookbackDelta  Duration `yaml:"lookback_delta"`
	// ExperimentalPromQL turns on what Prometheus puts behind its
	// promql-experimental-functions, promql-binop-fill-modifiers and
	// promql-delayed-name-removal feature flags, and unquoted UTF-8 names.
	ExperimentalPromQL bool `yaml:"experimental_promql"`
}

// RemoteWriteConfig configures the remote-write receiver. It is reloadable.
type RemoteWriteConfig struct {
	// MaxRequestBytes limits the (compressed) request body; larger bodies get 413.
	MaxRequestBytes Bytes `yaml:"max_request_bytes"`
	// MaxDecodedBytes limits the snappy-decoded size a body may declare; larger
	// declarations get 400 before anything of that size is allocated.
	MaxDecodedBytes Bytes `yaml:"max_decoded_bytes"`
	// MaxInflightRequests is how many write requests are processed at once;
	// beyond it requests get 429 with Retry-After.
	MaxInflightRequests int `yaml:"max_inflight_requests"`
}

// RemoteReadConfig configures the remote-read endpoint. Changes need a restart.
type RemoteReadConfig struct {
	// SampleLimit is the most samples one SAMPLES-type query may return; 0 is no limit.
	SampleLimit int `yaml:"sample_limit"`
	// ConcurrentLimit is how many remote-read requests run at once; 0 is no limit.
	ConcurrentLimit int `yaml:"concurrent_limit"`
	// MaxBytesInFrame is the largest frame of a STREAMED_XOR_CHUNKS response.
	MaxBytesInFrame Bytes `yaml:"max_bytes_in_frame"`
}

// Default returns the embedded defaults meshlens runs on without a file. The
// values are Prometheus's own defaults wherever Prometheus has the setting.
func Default() Config {
	return Config{
		Storage: StorageConfig{LocalRetention: Duration(6 * time.Hour), BucketCacheSize: 10 << 30, TSDB: TSDBConfig{
			Retention:        Duration(15 * 24 * time.Hour),
			MaxExemplars:     100000,
			MinBlockDuration: Duration(2 * time.Hour),
			MaxBlockDuration: Duration(36 * time.Hour), // 10% of retention, as Prometheus picks.
			WALCompression:   true,
		}},
		Query: QueryConfig{
			Timeout:        Duration(2 * time.Minute),
			MaxSamples:     50000000,
			MaxConcurrency: 20,
			LookbackDelta:  Duration(5 * time.Minute),
		},
		RemoteWrite: RemoteWriteConfig{
			MaxRequestBytes:     32 << 20,
			MaxDecodedBytes:     32 << 20,
			MaxInflightRequests: 64,
		},
		RemoteRead: RemoteReadConfig{
			SampleLimit:     50000000,
			ConcurrentLimit: 10,
			MaxBytesInFrame: 1 << 20,
		},
		Compactor: CompactorConfig{
			Interval:    Duration(5 * time.Minute),
			Ranges:      []Duration{Duration(2 * time.Hour), Duration(8 * time.Hour), Duration(48 * time.Hour), Duration(14 * 24 * time.Hour)},
			DeleteDelay: Duration(48 * time.Hour),
			Downsample:  true,
		},
		Aggregation: AggregationConfig{FlushDelay: Duration(30 * time.Second)},
		Traces: TracesConfig{
			Retention:              Duration(7 * 24 * time.Hour),
			TraceIdle:              Duration(10 * time.Second),
			MaxBlockDuration:       Duration(5 * time.Minute),
			MaxRequestBytes:        16 << 20,
			MaxDecodedBytes:        64 << 20,
			MaxSpansPerRequest:     100000,
			MaxAttributeValueBytes: 4096,
			MaxSpansPerTrace:       100000,
			Forward:                ForwardConfig{Protocol: "grpc", Timeout: Duration(10 * time.Second), QueueSpans: 100000},
			ExemplarTraceIDLabels:  []string{"trace_id", "traceId", "traceID"},
			Coverage:               TraceCoverageConfig{Enabled: true, Interval: Duration(time.Minute), Lag: Duration(time.Minute), MaxTraces: 10000},
		},
		Rules: RulesConfig{
			EvaluationInterval: Duration(30 * time.Second),
			OutageTolerance:    Duration(time.Hour),
			ForGracePeriod:     Duration(10 * time.Minute),
			ResendDelay:        Duration(time.Minute),
			AlertTraces:        5,
		},
	}
}

// LoadFile reads, decodes and validates the file at path. Errors name the file.
func LoadFile(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config file: %w", err)
	}
	cfg, err := Load(b)
	if err != nil {
		return Config{}, fmt.Errorf("config file %q: %w", path, err)
	}
	return cfg, nil
}

// Load decodes YAML on top of Default and validates the result. An empty
// document yields the defaults. Unknown fields are errors.
func Load(b []byte) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate reports the first invalid setting, named by its YAML path.
func (c Config) Validate() error {
	t := c.Storage.TSDB
	checks := []struct {
		ok    bool
		field string
		msg   string
	}{
		{t.Retention >= 0, "storage.tsdb.retention", "must not be negative"},
		{t.RetentionSize >= 0, "storage.tsdb.retention_size", "must not be negative"},
		{t.OutOfOrderTimeWindow >= 0, "storage.tsdb.out_of_order_time_window", "must not be negative"},
		{t.MaxExemplars >= 0, "storage.tsdb.max_exemplars", "must not be negative"},
		{t.MinBlockDuration > 0, "storage.tsdb.min_block_duration", "must be positive"},
		{t.MaxBlockDuration >= t.MinBlockDuration, "storage.tsdb.max_block_duration", "must be at least min_block_duration"},
		{c.Storage.LocalRetention >= 0, "storage.local_retention", "must not be negative"},
		{c.Storage.BucketCacheSize > 0, "storage.bucket_cache_size", "must be positive"},
		{c.Storage.Bucket.Type == "" || c.Storage.BucketFile == "", "storage.bucket_file", "cannot be set together with storage.bucket"},
		{c.Storage.Bucket.Type != "" || (c.Storage.Bucket.Config == nil && c.Storage.Bucket.Prefix == ""), "storage.bucket.type", "is required"},
		{c.Query.Timeout > 0, "query.timeout", "must be positive"},
		{c.Query.MaxSamples > 0, "query.max_samples", "must be positive"},
		{c.Query.MaxConcurrency > 0, "query.max_concurrency", "must be positive"},
		{c.Query.LookbackDelta > 0, "query.lookback_delta", "must be positive"},
		{c.RemoteWrite.MaxRequestBytes > 0, "remote_write.max_request_bytes", "must be positive"},
		{c.RemoteWrite.MaxDecodedBytes > 0, "remote_write.max_decoded_bytes", "must be positive"},
		{c.RemoteWrite.MaxInflightRequests > 0, "remote_write.max_inflight_requests", "must be positive"},
		{c.RemoteRead.SampleLimit >= 0, "remote_read.sample_limit", "must not be negative"},
		{c.RemoteRead.ConcurrentLimit >= 0, "remote_read.concurrent_limit", "must not be negative"},
		{c.RemoteRead.MaxBytesInFrame > 0, "remote_read.max_bytes_in_frame", "must be positive"},
		{c.Rules.EvaluationInterval > 0, "rules.evaluation_interval", "must be positive"},
		{c.Compactor.Interval > 0, "compactor.interval", "must be positive"},
		{c.Compactor.DeleteDelay > 0, "compactor.delete_delay", "must be positive"},
		{c.Compactor.Retention.Raw >= 0 && c.Compactor.Retention.FiveMinutes >= 0 && c.Compactor.Retention.OneHour >= 0, "compactor.retention", "must not be negative"},
		{rangesGrow(c.Compactor.Ranges), "compactor.ranges", "must be positive, each a larger multiple of the one before"},
		{c.Rules.QueryOffset >= 0, "rules.query_offset", "must not be negative"},
		{c.Rules.OutageTolerance >= 0, "rules.outage_tolerance", "must not be negative"},
		{c.Rules.ForGracePeriod >= 0, "rules.for_grace_period", "must not be negative"},
		{c.Rules.ResendDelay > 0, "rules.resend_delay", "must be positive"},
		{c.Rules.AlertTraces >= 0, "rules.alert_traces", "must not be negative"},
		{c.Aggregation.FlushDelay >= 0, "aggregation.flush_delay", "must not be negative"},
		{c.Traces.Retention > 0, "traces.retention", "must be positive"},
		{c.Traces.TraceIdle > 0, "traces.trace_idle", "must be positive"},
		{c.Traces.MaxBlockDuration >= c.Traces.TraceIdle, "traces.max_block_duration", "must be at least trace_idle"},
		{c.Traces.MaxRequestBytes > 0, "traces.max_request_bytes", "must be positive"},
		{c.Traces.MaxDecodedBytes > 0, "traces.max_decoded_bytes", "must be positive"},
		{c.Traces.MaxSpansPerRequest > 0, "traces.max_spans_per_request", "must be positive"},
		{c.Traces.MaxAttributeValueBytes > 0, "traces.max_attribute_value_bytes", "must be positive"},
		{c.Traces.MaxSpansPerTrace > 0, "traces.max_spans_per_trace", "must be positive"},
		{c.Traces.Forward.Protocol == "grpc" || c.Traces.Forward.Protocol == "http", "traces.forward.protocol", "must be grpc or http"},
		{c.Traces.Forward.Timeout > 0, "traces.forward.timeout", "must be positive"},
		{c.Traces.Forward.QueueSpans > 0, "traces.forward.queue_spans", "must be positive"},
		{len(c.Traces.ExemplarTraceIDLabels) > 0 && !slices.Contains(c.Traces.ExemplarTraceIDLabels, ""), "traces.exemplar_trace_id_labels", "must name at least one label, none empty"},
		{c.Traces.Coverage.Interval > 0, "traces.coverage.interval", "must be positive"},
		{c.Traces.Coverage.Lag > 0, "traces.coverage.lag", "must be positive"},
		{c.Traces.Coverage.MaxTraces > 0, "traces.coverage.max_traces", "must be positive"},
	}
	for _, ch := range checks {
		if !ch.ok {
			return fmt.Errorf("%s: %s", ch.field, ch.msg)
		}
	}
	for name := range c.Global.ExternalLabels {
		if !model.UTF8Validation.IsValidLabelName(name) || name == labels.MetricName {
			return fmt.Errorf("global.external_labels: invalid label name %q", name)
		}
	}
	if c.Global.ExternalURL != "" {
		if u, err := url.Parse(c.Global.ExternalURL); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("global.external_url: %q is not an absolute URL", c.Global.ExternalURL)
		}
	}
	for _, f := range c.Rules.Files {
		if _, err := filepath.Match(f, ""); err != nil {
			return fmt.Errorf("rules.files: %q: %w", f, err)
		}
	}
	for i, sel := range c.Traces.Coverage.Selectors {
		if _, err := parser.NewParser(parser.Options{}).ParseMetricSelector(sel); err != nil {
			return fmt.Errorf("traces.coverage.selectors[%d]: %q: %w", i, sel, err)
		}
	}
	for i, r := range c.Aggregation.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("aggregation.rules[%d].%w", i, err)
		}
	}
	for name, p := range c.Rules.Packs {
		for i, o := range p.Overrides {
			path := fmt.Sprintf("rules.packs.%s.overrides[%d]", name, i)
			if !model.UTF8Validation.IsValidLabelName(o.Label) {
				return fmt.Errorf("%s.label: invalid label name %q", path, o.Label)
			}
			if _, err := regexp.Compile("^(?:" + o.Matches + ")$"); err != nil || o.Matches == "" {
				return fmt.Errorf("%s.matches: want a non-empty regular expression: %q", path, o.Matches)
			}
		}
	}
	return nil
}

func (r AggregationRule) validate() error {
	if _, err := parser.NewParser(parser.Options{}).ParseMetricSelector(r.Match); err != nil {
		return fmt.Errorf("match: %q: %w", r.Match, err)
	}
	if r.Interval <= 0 {
		return errors.New("interval: must be positive")
	}
	if r.StalenessInterval != 0 && r.StalenessInterval < r.Interval {
		return errors.New("staleness_interval: must be at least interval")
	}
	if len(r.By) > 0 && len(r.Without) > 0 {
		return errors.New("by: set by or without, not both")
	}
	for _, l := range append(slices.Clone(r.By), r.Without...) {
		if !model.UTF8Validation.IsValidLabelName(l) || l == labels.MetricName {
			return fmt.Errorf("by/without: invalid label name %q (the metric name is always kept)", l)
		}
	}
	for _, o := range r.Outputs {
		if o != "total" {
			return fmt.Errorf("outputs: %q is not supported (only total: counter increases summed)", o)
		}
	}
	return nil
}

func rangesGrow(rs []Duration) bool {
	for i, r := range rs {
		if r <= 0 || (i > 0 && (r <= rs[i-1] || r%rs[i-1] != 0)) {
			return false
		}
	}
	return true
}

// ExternalLabels returns Global.ExternalLabels as sorted labels.
func (c Config) ExternalLabels() labels.Labels {
	return labels.FromMap(c.Global.ExternalLabels)
}

// Duration is a span of time written as Prometheus writes durations
// ("30s", "5m", "2h", "15d", "1w").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := model.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 30s, 2h or 15d)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String formats d as Prometheus does.
func (d Duration) String() string { return model.Duration(d).String() }

// Bytes is a size in bytes written in YAML as an integer or with a base-2 unit
// ("512KiB", "32MiB", "10GiB"; "KB", "MB", "GB" are read as their base-2 units,
// as Prometheus reads its size flags).
type Bytes int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := units.ParseBase2Bytes(s)
	if err != nil {
		var i int64
		if n.Decode(&i) == nil {
			*b = Bytes(i)
			return nil
		}
		return fmt.Errorf("line %d: %q is not a size (use e.g. 512MiB or 10GiB)", n.Line, s)
	}
	*b = Bytes(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (b Bytes) MarshalYAML() (any, error) { return units.Base2Bytes(b).String(), nil }
