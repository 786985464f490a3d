// Package emit sends the output of the simulator to a remote-write
// receiver the way the per-cluster Prometheus servers would, with
// Prometheus's own code: every cluster (and every replica of an HA pair)
// is a Prometheus in agent mode. Samples go through storage.Appender into
// a write-ahead log in a temporary directory (tsdb/agent), and
// Prometheus's remote-write queue (storage/remote QueueManager) tails that
// log, shards and batches it, retries with back-off on 5xx and, when
// enabled, 429 (honouring Retry-After), and drops a batch the receiver
// answers with another 4xx. Protocol 1.0 and 2.0 are Prometheus's
// encoders.
//
// Prometheus's WAL watcher only sends samples newer than the moment it
// started. In real time the simulation therefore starts after Ready; for a
// backfill a Writer moves every timestamp forward by a fixed shift before
// appending and sends through a relay on 127.0.0.1 that moves the
// timestamps of each request back before passing it on; see relay.go.
package emit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/agent"
	"github.com/prometheus/prometheus/util/compression"

	"github.com/meshlens/meshlens/internal/meshsim/rw"
	"github.com/meshlens/meshlens/internal/meshsim/sim"
)

// ReplicaLabel is the external label that tells the replicas of an HA pair
// apart, as Cortex, Thanos and Mimir expect it.
const ReplicaLabel = "__replica__"

// Replicas are the values of ReplicaLabel of the two members of a pair.
var Replicas = [2]string{"a", "b"}

// Options configure a Writer.
type Options struct {
	// URL is the remote-write endpoint.
	URL string
	// Protocol selects the protobuf message; zero means 1.0.
	Protocol rw.Protocol
	// Queue is Prometheus's queue_config. Zero numeric fields take
	// Prometheus's defaults (config.DefaultQueueConfig); RetryOnRateLimit
	// (retry_on_http_429) is used as given.
	Queue config.QueueConfig
	// Timeout is remote_timeout; zero means 30s.
	Timeout time.Duration
	// FlushDeadline bounds how long Close lets the queues flush (and how
	// long a queue may flush when it reshards); zero means 1m
	// (Prometheus's --storage.remote.flush-deadline). Flush and
	// WaitBacklog give up after twice as long (at least a minute) without
	// progress.
	FlushDeadline time.Duration
	// HA runs two Prometheus replicas per cluster that send the same series
	// with external label __replica__="a" and "b". Replica b scrapes a
	// little earlier than a (its timestamps are a few hundred ms lower).
	HA bool
	// Backfill sends history: timestamps from Earliest on, older than the
	// queues. They are shifted forward in the WAL and back in a relay.
	Backfill bool
	// Earliest is the lowest timestamp a backfill writes.
	Earliest time.Time
	// Dir is where the per-instance WAL directories are created; empty
	// means os.TempDir(). They are removed by Close.
	Dir    string
	Logger *slog.Logger
}

// instance is one simulated Prometheus server.
type instance struct {
	cluster int
	name    string
	dir     string
	reg     *prometheus.Registry
	rs      *remote.Storage
	db      *agent.DB
	app     storage.Storage // fanout of db and rs, as in Prometheus
	// lag is subtracted from every timestamp (replica b scrapes earlier).
	lag int64
	// refs caches the storage reference of each simulated series.
	refs      []storage.SeriesRef
	appended  atomic.Int64
	exemplars atomic.Int64
	rejected  atomic.Int64
}

// Source is what a Writer reads of the simulation: *sim.Sim.
type Source interface {
	Labels(sim.Ref) labels.Labels
	Type(sim.Ref) sim.MetricType
	NumSeries() int
}

// Writer appends the steps of a simulation to the simulated Prometheus
// servers.
type Writer struct {
	opts  Options
	inst  []*instance
	relay *relay
	// shift is added to every timestamp before it is appended (backfill).
	shift int64
	ready time.Time
}

// New starts one Prometheus (WAL, remote storage and queue) per cluster
// and replica. clusters are the cluster names (the value of the external
// label cluster, in the order of sim.Batch.Samples); interval is the
// scrape interval.
func New(opts Options, clusters []string, interval time.Duration) (_ *Writer, err error) {
	if opts.URL == "" {
		return nil, errors.New("no remote-write URL (--url)")
	}
	if _, err := url.Parse(opts.URL); err != nil {
		return nil, fmt.Errorf("remote-write URL (--url): %w", err)
	}
	if opts.Protocol == "" {
		opts.Protocol = rw.V1
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.FlushDeadline == 0 {
		opts.FlushDeadline = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	q := queueDefaults(opts.Queue)
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("remote-write queue (--shards, --max-shards, --max-samples-per-send): %w", err)
	}
	opts.Queue = q
	w := &Writer{opts: opts}
	defer func() {
		if err != nil {
			_ = w.Close()
		}
	}()
	target := opts.URL
	if opts.Backfill {
		if w.relay, err = newRelay(opts.URL, opts.Logger); err != nil {
			return nil, err
		}
		target = w.relay.URL()
	}
	replicas := 1
	if opts.HA {
		replicas = 2
	}
	for c, cluster := range clusters {
		for r := range replicas {
			name := cluster
			ext := []string{"cluster", cluster}
			var lag int64
			if opts.HA {
				name += "-" + Replicas[r]
				ext = append(ext, ReplicaLabel, Replicas[r])
				if r == 1 {
					lag = replicaLag(c, interval)
				}
			}
			in, err := w.start(c, name, target, labels.FromStrings(ext...))
			if err != nil {
				return nil, err
			}
			in.lag = lag
			w.inst = append(w.inst, in)
		}
	}
	w.ready = time.Now()
	if opts.Backfill {
		// The watchers started before ready; the first sample lands two
		// seconds after it.
		w.shift = w.ready.Add(2*time.Second).UnixMilli() - opts.Earliest.UnixMilli()
		w.relay.shift.Store(w.shift)
	}
	return w, nil
}

// replicaLag is how much earlier replica b of cluster c scrapes: a
// deterministic 100-599 ms, below a quarter of the interval.
func replicaLag(c int, interval time.Duration) int64 {
	lag := int64(100 + (c*137)%500)
	return min(lag, interval.Milliseconds()/4)
}

func queueDefaults(q config.QueueConfig) config.QueueConfig {
	d := config.DefaultQueueConfig
	if q.Capacity == 0 {
		q.Capacity = d.Capacity
	}
	if q.MaxShards == 0 {
		q.MaxShards = d.MaxShards
	}
	if q.MinShards == 0 {
		q.MinShards = d.MinShards
	}
	if q.MaxSamplesPerSend == 0 {
		q.MaxSamplesPerSend = d.MaxSamplesPerSend
	}
	if q.BatchSendDeadline == 0 {
		q.BatchSendDeadline = d.BatchSendDeadline
	}
	if q.MinBackoff == 0 {
		q.MinBackoff = d.MinBackoff
	}
	if q.MaxBackoff == 0 {
		q.MaxBackoff = d.MaxBackoff
	}
	return q
}

// start wires one Prometheus in agent mode the way cmd/prometheus does:
// remote storage, agent WAL notifying it, then the remote-write config.
func (w *Writer) start(cluster int, name, target string, ext labels.Labels) (*instance, error) {
	base := w.opts.Dir
	if base == "" {
		base = os.TempDir()
	}
	removeStale(base, w.opts.Logger)
	dir, err := os.MkdirTemp(base, walDirPrefix+strconv.Itoa(os.Getpid())+"-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("WAL directory: %w", err)
	}
	log := w.opts.Logger.With("prometheus", name)
	in := &instance{cluster: cluster, name: name, dir: dir, reg: prometheus.NewRegistry()}
	in.rs = remote.NewStorage(log.With("component", "remote"), in.reg, func() (int64, error) { return 0, nil },
		dir, w.opts.FlushDeadline, nil, false)
	aopts := agent.DefaultOptions()
	// An uncompressed WAL (Prometheus compresses its own with snappy):
	// the log lives only as long as meshsim, and compressing it would
	// cost CPU and memory without changing a byte sent.
	aopts.WALCompression = compression.None
	aopts.NoLockfile = true
	aopts.EnableMetadataWALRecords = true
	if w.opts.Backfill {
		// Timestamps run ahead of the clock; check the WAL often so its
		// segments are checkpointed as the queue passes them.
		aopts.TruncateFrequency = time.Minute
	}
	in.db, err = agent.Open(log.With("component", "wal"), in.reg, in.rs, dir, aopts)
	if err != nil {
		_ = in.rs.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("open WAL of %s: %w", name, err)
	}
	in.db.SetWriteNotified(in.rs)
	in.app = storage.NewFanout(log, in.db, in.rs)
	u, err := url.Parse(target)
	if err != nil {
		in.close()
		return nil, err
	}
	msg := remoteapi.WriteV1MessageType
	if w.opts.Protocol == rw.V2 {
		msg = remoteapi.WriteV2MessageType
	}
	rwc := config.DefaultRemoteWriteConfig
	rwc.URL = &commonconfig.URL{URL: u}
	rwc.Name = name
	rwc.RemoteTimeout = model.Duration(w.opts.Timeout)
	rwc.ProtobufMessage = msg
	rwc.SendExemplars = true
	rwc.QueueConfig = w.opts.Queue
	rwc.MetadataConfig.Send = false // 1.0 metadata needs a scrape manager; 2.0 sends it from the WAL
	conf := &config.Config{
		GlobalConfig:       config.GlobalConfig{ExternalLabels: ext},
		RemoteWriteConfigs: []*config.RemoteWriteConfig{&rwc},
	}
	if err := in.rs.ApplyConfig(conf); err != nil {
		in.close()
		return nil, fmt.Errorf("remote-write config of %s: %w", name, err)
	}
	return in, nil
}

// walDirPrefix starts the name of a WAL directory, followed by the pid of
// the meshsim that owns it.
const walDirPrefix = "meshsim-wal-"

// removeStale removes the WAL directories in base whose meshsim is gone
// (killed before it could remove them).
func removeStale(base string, log *slog.Logger) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), walDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pid, err := strconv.Atoi(rest[:max(strings.IndexByte(rest, '-'), 0)])
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(base, e.Name())); err == nil {
			log.Info("removed the WAL of a meshsim that is gone", "dir", e.Name())
		}
	}
}

func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, os.ErrPermission)
}

// Ready is when the queues started: run-mode samples must be newer, or
// Prometheus's WAL watcher skips them.
func (w *Writer) Ready() time.Time { return w.ready }

// Write appends one step of src and commits it to every instance's WAL.
// It returns once the samples are in the WALs; the queues send them on
// their own. Samples the WAL rejects (out of order) are counted, not
// returned. It must not run concurrently with src's Step.
func (w *Writer) Write(ctx context.Context, src Source, b *sim.Batch) error {
	n := src.NumSeries()
	var wg sync.WaitGroup
	errs := make([]error, len(w.inst))
	for i, in := range w.inst {
		if len(b.Samples[in.cluster]) == 0 {
			continue
		}
		for len(in.refs) < n {
			in.refs = append(in.refs, 0)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.append(ctx, src, in, b.Samples[in.cluster], b.Exemplars[in.cluster])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (w *Writer) append(ctx context.Context, src Source, in *instance, samples []sim.Sample, exemplars []sim.Exemplar) error {
	app := in.app.Appender(ctx)
	off := w.shift - in.lag
	var n, rejected, ex int64
	for _, smp := range samples {
		ref := in.refs[smp.Ref]
		ls := src.Labels(smp.Ref)
		got, err := app.Append(ref, ls, smp.T+off, smp.V)
		if err != nil {
			if errors.Is(err, storage.ErrOutOfOrderSample) || errors.Is(err, storage.ErrDuplicateSampleForTimestamp) {
				rejected++
				continue
			}
			_ = app.Rollback()
			return fmt.Errorf("append to %s: %w", in.name, err)
		}
		if ref == 0 {
			in.refs[smp.Ref] = got
			if _, err := app.UpdateMetadata(got, ls, metadata.Metadata{Type: metricType(src.Type(smp.Ref))}); err != nil {
				_ = app.Rollback()
				return fmt.Errorf("metadata of %s: %w", in.name, err)
			}
		}
		n++
	}
	for _, e := range exemplars {
		ref := in.refs[e.Ref]
		if ref == 0 {
			continue
		}
		got, err := app.AppendExemplar(ref, src.Labels(e.Ref), exemplar.Exemplar{
			Labels: labels.FromStrings("span_id", e.SpanID.String(), "trace_id", e.TraceID.String()),
			Value:  e.V, Ts: e.T + off, HasTs: true,
		})
		if err != nil {
			_ = app.Rollback()
			return fmt.Errorf("append exemplar to %s: %w", in.name, err)
		}
		if got != 0 {
			ex++
		}
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("commit to the WAL of %s: %w", in.name, err)
	}
	in.appended.Add(n)
	in.exemplars.Add(ex)
	in.rejected.Add(rejected)
	return nil
}

func metricType(t sim.MetricType) model.MetricType {
	switch t {
	case sim.Counter:
		return model.MetricTypeCounter
	case sim.Gauge:
		return model.MetricTypeGauge
	case sim.Histogram:
		return model.MetricTypeHistogram
	}
	return model.MetricTypeUnknown
}

// Stats sum the queue metrics of every instance (Prometheus's
// prometheus_remote_storage_* series).
type Stats struct {
	// Appended samples and exemplars, committed to the WALs.
	Appended, AppendedExemplars int64
	// Rejected samples: out of order for the WAL.
	Rejected int64
	// Sent is samples the queues took and did not fail (including
	// requests in flight).
	Sent int64
	// Exemplars sent (attempts less retries).
	Exemplars int64
	// Failed samples: in batches answered with a non-retryable error (4xx).
	Failed int64
	// Retried samples: resent after 5xx/429 (once per retry).
	Retried int64
	// Dropped samples: dropped by the queue before sending.
	Dropped int64
	// Pending samples and exemplars: read from the WAL, not yet answered.
	Pending, PendingExemplars int64
	// Requests is the number of attempts (sent_batch_duration_seconds count).
	Requests int64
	// Shards is the current number of shards over all queues.
	Shards int64

	dequeued, dequeuedExemplars, droppedExemplars int64
}

// Stats returns the current counts.
func (w *Writer) Stats() Stats {
	var st Stats
	for _, in := range w.inst {
		s := in.stats()
		st.Appended += s.Appended
		st.AppendedExemplars += s.AppendedExemplars
		st.Rejected += s.Rejected
		st.Sent += s.Sent
		st.Exemplars += s.Exemplars
		st.Failed += s.Failed
		st.Retried += s.Retried
		st.Dropped += s.Dropped
		st.Pending += s.Pending
		st.PendingExemplars += s.PendingExemplars
		st.Requests += s.Requests
		st.Shards += s.Shards
		st.dequeued += s.dequeued
		st.dequeuedExemplars += s.dequeuedExemplars
		st.droppedExemplars += s.droppedExemplars
	}
	return st
}

func (in *instance) stats() Stats {
	st := Stats{Appended: in.appended.Load(), AppendedExemplars: in.exemplars.Load(), Rejected: in.rejected.Load()}
	mfs, err := in.reg.Gather()
	if err != nil {
		return st
	}
	var attempts, exAttempts, exRetried int64
	for _, mf := range mfs {
		var v float64
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				v += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				v += float64(m.GetHistogram().GetSampleCount())
			}
		}
		x := int64(v)
		switch mf.GetName() {
		case "prometheus_remote_storage_samples_total":
			attempts = x
		case "prometheus_remote_storage_samples_retried_total":
			st.Retried = x
		case "prometheus_remote_storage_samples_failed_total":
			st.Failed = x
		case "prometheus_remote_storage_samples_dropped_total":
			st.Dropped = x
		case "prometheus_remote_storage_samples_pending":
			st.Pending = x
		case "prometheus_remote_storage_exemplars_total":
			exAttempts = x
		case "prometheus_remote_storage_exemplars_retried_total":
			exRetried = x
		case "prometheus_remote_storage_exemplars_dropped_total":
			st.droppedExemplars = x
		case "prometheus_remote_storage_exemplars_pending":
			st.PendingExemplars = x
		case "prometheus_remote_storage_sent_batch_duration_seconds":
			st.Requests = x
		case "prometheus_remote_storage_shards":
			st.Shards = x
		}
	}
	// A batch counts in samples_total at every attempt and in
	// samples_retried_total at every retry: the difference counts each
	// dequeued sample once.
	st.dequeued = attempts - st.Retried
	st.dequeuedExemplars = exAttempts - exRetried
	st.Sent = st.dequeued - st.Failed
	st.Exemplars = st.dequeuedExemplars
	return st
}

// done reports whether everything appended has been answered.
func (s Stats) done() bool {
	return s.dequeued+s.Dropped >= s.Appended && s.Pending == 0 &&
		s.dequeuedExemplars+s.droppedExemplars >= s.AppendedExemplars && s.PendingExemplars == 0
}

// backlog is the number of appended samples the queues have not taken yet.
func (s Stats) backlog() int64 { return s.Appended - s.dequeued - s.Dropped }

// Flush waits until the queues have sent, or given up on, every appended
// sample and exemplar, or ctx ends.
func (w *Writer) Flush(ctx context.Context) error {
	return w.waitFor(ctx, func(in *instance, s Stats) bool { return s.done() })
}

// WaitBacklog waits until no instance has more than max appended samples
// the queue has not read yet: a backfill appends faster than the queue
// sends, and the WAL would otherwise grow without bound.
func (w *Writer) WaitBacklog(ctx context.Context, max int64) error {
	return w.waitFor(ctx, func(in *instance, s Stats) bool { return s.backlog() <= max })
}

// waitFor waits until ok holds for every instance. It gives up when the
// queues make no progress for twice the flush deadline (at least a
// minute): the receiver is down, or a queue dropped data on a hard
// shutdown and the counts can no longer add up.
func (w *Writer) waitFor(ctx context.Context, ok func(*instance, Stats) bool) error {
	stall := max(2*w.opts.FlushDeadline, time.Minute)
	var last int64
	lastChange := time.Now()
	for {
		all := true
		var progress int64
		for _, in := range w.inst {
			st := in.stats()
			progress += st.dequeued + st.Dropped + st.Failed + st.dequeuedExemplars + st.droppedExemplars
			if !ok(in, st) {
				all = false
				// A write notification can be missed while the watcher
				// reads; the queue otherwise polls every 15s.
				in.rs.Notify()
			}
		}
		if all {
			return nil
		}
		if progress != last {
			last, lastChange = progress, time.Now()
		} else if time.Since(lastChange) > stall {
			st := w.Stats()
			return fmt.Errorf("remote-write queues made no progress for %s (--flush-deadline %s): %d samples appended, %d sent, %d failed, %d retried, %d pending",
				stall, w.opts.FlushDeadline, st.Appended, st.Sent, st.Failed, st.Retried, st.Pending)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops the queues (each flushes for up to FlushDeadline), closes
// the WALs and removes their directories.
func (w *Writer) Close() error {
	errs := make([]error, len(w.inst))
	var wg sync.WaitGroup
	for i, in := range w.inst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = in.close()
		}()
	}
	wg.Wait()
	w.inst = nil
	if w.relay != nil {
		w.relay.Close()
	}
	return errors.Join(errs...)
}

func (in *instance) close() error {
	err := errors.Join(in.rs.Close(), in.db.Close())
	return errors.Join(err, os.RemoveAll(filepath.Clean(in.dir)))
}
