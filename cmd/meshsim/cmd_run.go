package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"

	"github.com/meshlens/meshlens/internal/meshsim/emit"
	"github.com/meshlens/meshlens/internal/meshsim/otlp"
	"github.com/meshlens/meshlens/internal/meshsim/rw"
	"github.com/meshlens/meshlens/internal/meshsim/sim"
	"github.com/meshlens/meshlens/internal/meshsim/zipkin"
	"github.com/meshlens/meshlens/internal/scenario"
)

// sendFlags are the output flags shared by run and backfill.
type sendFlags struct {
	mesh          meshFlags
	proxies       string
	url           string
	protocol      string
	tracesURL     string
	tracesFormat  string
	interval      time.Duration
	traceSampling float64
	ha            bool
	minShards     int
	maxShards     int
	maxPerSend    int
	batchDeadline time.Duration
	retry429      bool
	flushDeadline time.Duration
	walDir        string
	progress      time.Duration
}

func (f *sendFlags) register(fs *flag.FlagSet) {
	f.mesh.register(fs, true)
	fs.StringVar(&f.proxies, "mesh", "istio", "proxies whose metrics are simulated: istio (Envoy, Istio standard metrics, istiod) or linkerd (linkerd2-proxy)")
	fs.StringVar(&f.url, "url", "", "remote-write endpoint, e.g. http://127.0.0.1:9201/api/v1/write")
	fs.StringVar(&f.protocol, "protocol", "1.0", "remote-write protocol: 1.0 or 2.0")
	fs.StringVar(&f.tracesURL, "traces-url", "", "span endpoint: Zipkin http://HOST:9411/api/v2/spans or OTLP http://HOST:4318/v1/traces (empty: no spans)")
	fs.StringVar(&f.tracesFormat, "traces-format", "zipkin", "span format: zipkin (v2 JSON) or otlp (OTLP/HTTP protobuf)")
	fs.DurationVar(&f.interval, "interval", 0, "scrape interval (default 15s, or the scenario's)")
	fs.Float64Var(&f.traceSampling, "trace-sampling", 0.01, "fraction of requests traced")
	fs.BoolVar(&f.ha, "ha", false, `remote write from two Prometheus replicas per cluster (HA pair), external label __replica__="a" and "b"`)
	fs.IntVar(&f.minShards, "shards", 1, "remote-write queue_config min_shards per Prometheus")
	fs.IntVar(&f.maxShards, "max-shards", 50, "remote-write queue_config max_shards per Prometheus (backfill: default 4)")
	fs.IntVar(&f.maxPerSend, "max-samples-per-send", 2000, "remote-write queue_config max_samples_per_send")
	fs.DurationVar(&f.batchDeadline, "batch-send-deadline", 5*time.Second, "remote-write queue_config batch_send_deadline")
	fs.BoolVar(&f.retry429, "retry-on-429", true, "remote-write queue_config retry_on_http_429")
	fs.DurationVar(&f.flushDeadline, "flush-deadline", time.Minute, "how long the queues may flush on exit")
	fs.StringVar(&f.walDir, "wal-dir", "", "directory for the per-Prometheus WALs (default: the system temporary directory; removed on exit)")
	fs.DurationVar(&f.progress, "progress", 10*time.Second, "progress line interval on stderr (0: none)")
}

// spanSender sends the spans of a step.
type spanSender interface {
	Send(ctx context.Context, spans []sim.Span) error
}

type outputs struct {
	sim    *sim.Sim
	sc     *scenario.Scenario
	writer *emit.Writer
	spans  spanSender
	pages  *emit.Pages
	nSpans int64
	spanEr int64
}

// setup builds the outputs and the simulation. A backfill passes the time
// of its first step; run passes the zero time and starts just after the
// remote-write queues (or now without --url).
func (m *Main) setup(fs *flag.FlagSet, f *sendFlags, backfillStart time.Time) (_ *outputs, err error) {
	t, sc, err := f.mesh.build(fs)
	if err != nil {
		return nil, err
	}
	mesh, err := sim.ParseMesh(f.proxies)
	if err != nil {
		return nil, err
	}
	interval := f.interval
	if interval == 0 && sc != nil {
		interval = sc.Interval.D()
	}
	if interval == 0 {
		interval = 15 * time.Second
	}
	if f.traceSampling <= 0 || f.traceSampling > 1 {
		return nil, fmt.Errorf("--trace-sampling %v out of range (0, 1]", f.traceSampling)
	}
	backfill := !backfillStart.IsZero()
	start := backfillStart.Truncate(interval)
	if backfill && !isSet(fs, "max-shards") {
		// In a backfill, sample time runs faster than the clock, which the
		// queue's resharding reads as a growing lag: it would open all 50
		// shards and flood the receiver (and meshsim's memory).
		f.maxShards = max(backfillMaxShards, f.minShards)
	}
	o := &outputs{sc: sc}
	defer func() {
		if err != nil {
			o.close()
		}
	}()
	switch f.tracesFormat {
	case "zipkin":
		if f.tracesURL != "" {
			o.spans = &zipkin.Sender{URL: f.tracesURL}
		}
	case "otlp":
		if f.tracesURL != "" {
			o.spans = &otlp.Sender{URL: f.tracesURL}
		}
	default:
		return nil, fmt.Errorf("unknown --traces-format %q (zipkin or otlp)", f.tracesFormat)
	}
	if f.url != "" {
		p, err := rw.ParseProtocol(f.protocol)
		if err != nil {
			return nil, fmt.Errorf("--protocol: %w", err)
		}
		q := config.QueueConfig{
			MinShards: f.minShards, MaxShards: f.maxShards, MaxSamplesPerSend: f.maxPerSend,
			BatchSendDeadline: model.Duration(f.batchDeadline), RetryOnRateLimit: f.retry429,
		}
		if f.minShards < 1 || f.maxShards < 1 || f.maxPerSend < 1 || f.batchDeadline <= 0 {
			return nil, fmt.Errorf("--shards %d, --max-shards %d, --max-samples-per-send %d and --batch-send-deadline %s must be positive",
				f.minShards, f.maxShards, f.maxPerSend, f.batchDeadline)
		}
		o.writer, err = emit.New(emit.Options{
			URL: f.url, Protocol: p, Queue: q, HA: f.ha, FlushDeadline: f.flushDeadline, Dir: f.walDir,
			// The first step's scrapes are up to an interval before it.
			Backfill: backfill, Earliest: start.Add(-interval), Logger: m.Logger,
		}, t.Clusters, interval)
		if err != nil {
			return nil, err
		}
	}
	if backfill && o.writer == nil && o.spans == nil {
		return nil, errors.New("backfill: --url is required")
	}
	if !backfill {
		start = time.Now().Truncate(interval)
		if o.writer != nil {
			// Prometheus's WAL watcher sends only samples newer than its
			// start: the first scrape comes two seconds after the queues.
			start = o.writer.Ready().Add(interval + 2*time.Second)
		}
	}
	o.sim, err = sim.New(sim.Options{Topology: t, Scenario: sc, Start: start, Interval: interval,
		TraceSampling: f.traceSampling, Mesh: mesh})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// backfillMaxShards is backfill's default --max-shards.
const backfillMaxShards = 4

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func (o *outputs) close() {
	if o.writer != nil {
		_ = o.writer.Close()
	}
}

// step runs one simulation step and sends its output.
func (o *outputs) step(ctx context.Context, m *Main) (*sim.Batch, error) {
	b := o.sim.Step()
	if o.pages != nil {
		o.pages.Update(b)
	}
	if o.writer != nil {
		if err := o.writer.Write(ctx, o.sim, b); err != nil {
			return b, err
		}
	}
	if o.spans != nil && len(b.Spans) > 0 {
		for i := 0; i < len(b.Spans); i += 1000 {
			batch := b.Spans[i:min(i+1000, len(b.Spans))]
			if err := o.spans.Send(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return b, ctx.Err()
				}
				o.spanEr += int64(len(batch))
				m.Logger.Warn("spans dropped", "spans", len(batch), "err", err)
				continue
			}
			o.nSpans += int64(len(batch))
		}
	}
	return b, nil
}

func (o *outputs) progressLine(m *Main, step int, began time.Time) {
	el := time.Since(began).Seconds()
	fmt.Fprintf(m.Stderr, "step %d (%s): %d series", step, o.sim.StepTime(max(step, 0)).UTC().Format(time.RFC3339), o.sim.NumSeries())
	if o.writer != nil {
		st := o.writer.Stats()
		fmt.Fprintf(m.Stderr, ", %d samples appended, %d sent (%.0f/s), %d requests, %d shards, %d retried, %d failed, %d dropped, %d pending",
			st.Appended, st.Sent, float64(st.Sent)/el, st.Requests, st.Shards, st.Retried, st.Failed, st.Dropped, st.Pending)
	}
	if o.spans != nil {
		fmt.Fprintf(m.Stderr, ", %d spans sent, %d spans dropped", o.nSpans, o.spanEr)
	}
	fmt.Fprintln(m.Stderr)
}

func (m *Main) runRun(ctx context.Context, args []string) error {
	fs, lvl := m.newFlagSet("run")
	var f sendFlags
	f.register(fs)
	listen := fs.String("listen", "", "serve /metrics/<cluster> pages on this address for a Prometheus to scrape (honor_labels: true)")
	duration := fs.Duration("duration", 0, "stop after this long (0: the scenario's duration, or forever)")
	if err := m.parse(fs, lvl, args); err != nil {
		return err
	}
	if f.url == "" && *listen == "" && f.tracesURL == "" {
		return errors.New("run: give --url, --listen or --traces-url")
	}
	o, err := m.setup(fs, &f, time.Time{})
	if err != nil {
		return err
	}
	defer o.close()
	if *duration == 0 && o.sc != nil {
		*duration = o.sc.Duration.D()
	}
	if *listen != "" {
		o.pages = emit.NewPages(o.sim)
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", o.pages)
		mux.Handle("/metrics/", o.pages)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		m.Logger.Info("serving metrics pages", "addr", ln.Addr().String())
	}
	began := time.Now()
	lastProgress := began
	steps := 0
	for i := 0; ; i++ {
		at := o.sim.StepTime(i)
		if *duration > 0 && at.Sub(o.sim.StepTime(0)) >= *duration {
			break
		}
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
				o.progressLine(m, i-1, began)
				return nil
			case <-time.After(d):
			}
		}
		if _, err := o.step(ctx, m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		steps++
		if f.progress > 0 && time.Since(lastProgress) >= f.progress {
			o.progressLine(m, i, began)
			lastProgress = time.Now()
		}
	}
	if o.writer != nil {
		fctx, cancel := context.WithTimeout(ctx, f.flushDeadline)
		err := o.writer.Flush(fctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			m.Logger.Warn("remote-write queues not flushed", "deadline", f.flushDeadline)
		}
	}
	o.progressLine(m, steps-1, began)
	return nil
}

func (m *Main) runBackfill(ctx context.Context, args []string) error {
	fs, lvl := m.newFlagSet("backfill")
	var f sendFlags
	f.register(fs)
	hours := fs.Float64("hours", 0, "hours of history to write (required)")
	endFlag := fs.String("end", "", "end of the history, RFC 3339 (default now)")
	if err := m.parse(fs, lvl, args); err != nil {
		return err
	}
	if *hours <= 0 {
		return fmt.Errorf("backfill: --hours must be positive, got %v", *hours)
	}
	end := time.Now()
	if *endFlag != "" {
		var err error
		if end, err = time.Parse(time.RFC3339, *endFlag); err != nil {
			return fmt.Errorf("--end: %w", err)
		}
	}
	span := time.Duration(*hours * float64(time.Hour))
	o, err := m.setup(fs, &f, end.Add(-span))
	if err != nil {
		return err
	}
	defer o.close()
	steps := int(span / o.sim.Interval())
	began := time.Now()
	lastProgress := began
	var backlog int64
	for i := range steps {
		b, err := o.step(ctx, m)
		if err != nil {
			return fmt.Errorf("backfill stopped at step %d of %d: %w", i, steps, err)
		}
		if o.writer != nil {
			// Append ahead of the queues by at most a few steps.
			for _, c := range b.Samples {
				backlog = max(backlog, 3*int64(len(c)), 100000)
			}
			if err := o.writer.WaitBacklog(ctx, backlog); err != nil {
				return fmt.Errorf("backfill stopped at step %d of %d: %w", i, steps, err)
			}
		}
		if f.progress > 0 && time.Since(lastProgress) >= f.progress {
			o.progressLine(m, i, began)
			lastProgress = time.Now()
		}
	}
	if o.writer != nil {
		if err := o.writer.Flush(ctx); err != nil {
			return fmt.Errorf("backfill: waiting for the remote-write queues: %w", err)
		}
	}
	o.progressLine(m, steps-1, began)
	if o.writer != nil {
		st := o.writer.Stats()
		if st.Failed > 0 || st.Dropped > 0 || st.Rejected > 0 {
			return fmt.Errorf("backfill: %d samples failed (the receiver rejected their requests, see the log), %d dropped by the queues, %d rejected by the WAL",
				st.Failed, st.Dropped, st.Rejected)
		}
	}
	return nil
}
