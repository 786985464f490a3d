package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/meshlens/meshlens/cmd/meshsim/emit"
	"github.com/meshlens/meshlens/cmd/meshsim/rw"
	"github.com/meshlens/meshlens/cmd/meshsim/scenario"
	"github.com/meshlens/meshlens/cmd/meshsim/sim"
	"github.com/meshlens/meshlens/cmd/meshsim/zipkin"
)

// sendFlags are the output flags shared by run and backfill.
type sendFlags struct {
	mesh          meshFlags
	url           string
	protocol      string
	tracesURL     string
	interval      time.Duration
	traceSampling float64
	ha            bool
	shards        int
	maxPerSend    int
	progress      time.Duration
}

func (f *sendFlags) register(fs *flag.FlagSet) {
	f.mesh.register(fs, true)
	fs.StringVar(&f.url, "url", "", "remote-write endpoint, e.g. http://127.0.0.1:9201/api/v1/write")
	fs.StringVar(&f.protocol, "protocol", "1.0", "remote-write protocol: 1.0 or 2.0")
	fs.StringVar(&f.tracesURL, "traces-url", "", "Zipkin v2 span endpoint, e.g. http://127.0.0.1:9411/api/v2/spans (empty: no spans)")
	fs.DurationVar(&f.interval, "interval", 0, "scrape interval (default 15s, or the scenario's)")
	fs.Float64Var(&f.traceSampling, "trace-sampling", 0.01, "fraction of requests traced")
	fs.BoolVar(&f.ha, "ha", false, "two Prometheus replicas per cluster (series get __replica__)")
	fs.IntVar(&f.shards, "shards", 2, "requests in flight per cluster")
	fs.IntVar(&f.maxPerSend, "max-samples-per-send", 2000, "samples per remote-write request")
	fs.DurationVar(&f.progress, "progress", 10*time.Second, "progress line interval on stderr (0: none)")
}

type outputs struct {
	sim    *sim.Sim
	sc     *scenario.Scenario
	writer *emit.Writer
	spans  *zipkin.Sender
	pages  *emit.Pages
	nSpans int64
	spanEr int64
}

// setup builds the simulation starting at start and the outputs.
func (m *Main) setup(fs *flag.FlagSet, f *sendFlags, start time.Time, needOutput bool) (*outputs, error) {
	t, sc, err := f.mesh.build(fs)
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
	s, err := sim.New(sim.Options{Topology: t, Scenario: sc, Start: start.Truncate(interval), Interval: interval, TraceSampling: f.traceSampling})
	if err != nil {
		return nil, err
	}
	o := &outputs{sim: s, sc: sc}
	if f.url != "" {
		p, err := rw.ParseProtocol(f.protocol)
		if err != nil {
			return nil, fmt.Errorf("--protocol: %w", err)
		}
		if f.shards < 1 || f.maxPerSend < 1 {
			return nil, fmt.Errorf("--shards %d and --max-samples-per-send %d must be positive", f.shards, f.maxPerSend)
		}
		o.writer, err = emit.New(emit.Options{URL: f.url, Protocol: p, Shards: f.shards, MaxSamplesPerSend: f.maxPerSend, HA: f.ha, Logger: m.Logger}, s)
		if err != nil {
			return nil, err
		}
	}
	if f.tracesURL != "" {
		o.spans = &zipkin.Sender{URL: f.tracesURL}
	}
	if needOutput && o.writer == nil {
		return nil, errors.New("--url is required")
	}
	return o, nil
}

// step runs one simulation step and sends its output.
func (o *outputs) step(ctx context.Context, m *Main) error {
	b := o.sim.Step()
	if o.pages != nil {
		o.pages.Update(b)
	}
	if o.writer != nil {
		if err := o.writer.Write(ctx, b); err != nil {
			return err
		}
	}
	if o.spans != nil && len(b.Spans) > 0 {
		for i := 0; i < len(b.Spans); i += 1000 {
			batch := b.Spans[i:min(i+1000, len(b.Spans))]
			if err := o.spans.Send(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				o.spanEr += int64(len(batch))
				m.Logger.Warn("spans dropped", "spans", len(batch), "err", err)
				continue
			}
			o.nSpans += int64(len(batch))
		}
	}
	return nil
}

func (o *outputs) progressLine(m *Main, step int, began time.Time) {
	var samples, dropped, retries, reqs int64
	if o.writer != nil {
		samples, dropped, retries, reqs = o.writer.Stats.Samples.Load(), o.writer.Stats.Dropped.Load(), o.writer.Stats.Retries.Load(), o.writer.Stats.Requests.Load()
	}
	el := time.Since(began).Seconds()
	fmt.Fprintf(m.Stderr, "step %d (%s): %d series, %d samples sent (%.0f/s), %d requests, %d retries, %d dropped, %d spans sent, %d spans dropped\n",
		step, o.sim.StepTime(step).UTC().Format(time.RFC3339), o.sim.NumSeries(), samples, float64(samples)/el, reqs, retries, dropped, o.nSpans, o.spanEr)
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
	o, err := m.setup(fs, &f, time.Now(), false)
	if err != nil {
		return err
	}
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
	for i := 0; ; i++ {
		at := o.sim.StepTime(i)
		if *duration > 0 && at.Sub(o.sim.StepTime(0)) >= *duration {
			break
		}
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d):
			}
		}
		if err := o.step(ctx, m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if f.progress > 0 && time.Since(lastProgress) >= f.progress {
			o.progressLine(m, i, began)
			lastProgress = time.Now()
		}
	}
	o.progressLine(m, -1+int(time.Since(began)/o.sim.Interval()), began)
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
	o, err := m.setup(fs, &f, end.Add(-span), f.tracesURL == "")
	if err != nil {
		return err
	}
	steps := int(span / o.sim.Interval())
	began := time.Now()
	lastProgress := began
	for i := range steps {
		if err := o.step(ctx, m); err != nil {
			return fmt.Errorf("backfill stopped at step %d of %d: %w", i, steps, err)
		}
		if f.progress > 0 && time.Since(lastProgress) >= f.progress {
			o.progressLine(m, i, began)
			lastProgress = time.Now()
		}
	}
	o.progressLine(m, steps-1, began)
	if o.writer != nil && o.writer.Stats.Dropped.Load() > 0 {
		return fmt.Errorf("backfill: %d samples dropped: the receiver rejected them (see the log)", o.writer.Stats.Dropped.Load())
	}
	return nil
}
