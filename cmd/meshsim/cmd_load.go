package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshlens/meshlens/internal/meshsim/load"
	"github.com/meshlens/meshlens/internal/meshsim/rw"
)

func (m *Main) runLoad(ctx context.Context, args []string) error {
	fs, lvl := m.newFlagSet("load")
	var (
		url         = fs.String("url", "", "remote-write endpoint, e.g. http://127.0.0.1:9201/api/v1/write (required)")
		series      = fs.Int("series", 100000, "number of active series (0: every series of a mesh of --services services, encoded per request)")
		interval    = fs.Duration("interval", 0, "send every series once per interval, as a Prometheus scraping at it does (sets --rate; counters grow at the simulated mesh's rates)")
		spr         = fs.Int("samples-per-request", 2000, "samples (series) per request")
		protocol    = fs.String("protocol", "1.0", "remote-write protocol: 1.0 or 2.0")
		concurrency = fs.Int("concurrency", 4, "requests in flight")
		duration    = fs.Duration("duration", 0, "stop after this long (default 30s when --requests is not set)")
		requests    = fs.Int64("requests", 0, "stop after this many requests")
		rate        = fs.Float64("rate", 0, "samples (spans, with --traces-url) per second to send (0: as fast as the receiver accepts)")
		step        = fs.Duration("step", 0, "timestamp advance per round (0: wall-clock timestamps)")
		seed        = fs.Int64("seed", 1, "random seed of the simulated mesh the series come from")
		clusters    = fs.Int("clusters", 2, "clusters of the simulated mesh")
		mix         = fs.String("mix", "istio", "series: istio (Istio standard metrics only) or all (every series Prometheus sends)")
		timeout     = fs.Duration("timeout", 30*time.Second, "per-request timeout")
		progress    = fs.Duration("progress", 5*time.Second, "progress line interval on stderr (0: none)")
		asJSON      = fs.Bool("json", false, "print the summary as JSON on stdout")
		headers     = fs.String("headers", "", "extra request headers, comma-separated Name=Value")
		tracesURL   = fs.String("traces-url", "", "send spans instead: Zipkin http://HOST:9411/api/v2/spans or OTLP http://HOST:4318/v1/traces")
		tracesFmt   = fs.String("traces-format", "zipkin", "span format with --traces-url: zipkin (v2 JSON) or otlp (OTLP/HTTP protobuf)")
		spr2        = fs.Int("spans-per-request", 1000, "spans per request with --traces-url (whole traces, so about this many)")
		services    = fs.Int("services", 30, "services of the simulated mesh the spans (with --traces-url) or, with --series 0, the series come from")
	)
	if err := m.parse(fs, lvl, args); err != nil {
		return err
	}
	if *url != "" && *tracesURL != "" {
		return errors.New("load: give --url (remote write) or --traces-url (spans), not both")
	}
	if *url == "" && *tracesURL == "" {
		return load.ErrNoURL
	}
	p, err := rw.ParseProtocol(*protocol)
	if err != nil {
		return fmt.Errorf("--protocol: %w", err)
	}
	if *duration == 0 && *requests == 0 {
		*duration = 30 * time.Second
	}
	hdr := map[string]string{}
	if *headers != "" {
		for _, kv := range strings.Split(*headers, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("--headers: %q is not Name=Value", kv)
			}
			hdr[k] = v
		}
	}
	if *tracesURL != "" {
		return m.loadSpans(ctx, spanLoad{url: *tracesURL, format: *tracesFmt, spr: *spr2, services: *services,
			seed: *seed, clusters: *clusters, json: *asJSON}, load.SpanOptions{
			URL: *tracesURL, Concurrency: *concurrency, Duration: *duration, Requests: *requests, Rate: *rate,
			Timeout: *timeout, Progress: *progress, ProgressOut: m.Stderr, Headers: hdr, Logger: m.Logger,
		})
	}
	if *series < 0 || *spr < 1 || *concurrency < 1 || *interval < 0 {
		return fmt.Errorf("--series %d, --samples-per-request %d, --concurrency %d and --interval %s must be positive", *series, *spr, *concurrency, *interval)
	}
	begin := time.Now()
	d, err := load.BuildDataset(load.DatasetOptions{Seed: *seed, Series: *series, Services: *services, Clusters: *clusters, Mix: load.Mix(*mix)})
	if err != nil {
		return err
	}
	if *interval > 0 {
		*rate = float64(d.Set.Len()) / interval.Seconds()
		// The increments are per simulated scrape (15s).
		for i := range d.Inc {
			d.Inc[i] *= interval.Seconds() / 15
		}
	}
	m.Logger.Info("series built", "series", d.Set.Len(), "services", d.Services, "took", time.Since(begin))
	opts := load.Options{
		URL: *url, Protocol: p, SamplesPerRequest: *spr, Concurrency: *concurrency, Duration: *duration,
		Requests: *requests, Rate: *rate, Step: *step, Timeout: *timeout, Progress: *progress,
		ProgressOut: m.Stderr, Headers: hdr, Logger: m.Logger,
	}
	if *progress == 0 {
		opts.Progress = -1
	}
	sum, err := load.Run(ctx, opts, d)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	fmt.Fprint(m.Stdout, sum.String())
	return nil
}

type spanLoad struct {
	url, format             string
	spr, services, clusters int
	seed                    int64
	json                    bool
}

// loadSpans is load with --traces-url: whole simulated traces, encoded
// once and re-stamped per request (new trace ids, current timestamps).
func (m *Main) loadSpans(ctx context.Context, sl spanLoad, opts load.SpanOptions) error {
	f, err := load.ParseSpanFormat(sl.format)
	if err != nil {
		return err
	}
	if sl.spr < 1 || opts.Concurrency < 1 {
		return fmt.Errorf("--spans-per-request %d and --concurrency %d must be positive", sl.spr, opts.Concurrency)
	}
	begin := time.Now()
	d, err := load.BuildSpanDataset(load.SpanDatasetOptions{Seed: sl.seed, Services: sl.services, Clusters: sl.clusters,
		Format: f, SpansPerRequest: sl.spr, Bodies: max(64, 4*opts.Concurrency)})
	if err != nil {
		return err
	}
	m.Logger.Info("spans built", "spans", d.Spans, "traces", d.Traces, "took", time.Since(begin))
	if opts.Progress == 0 {
		opts.Progress = -1
	}
	sum, err := load.RunSpans(ctx, opts, d)
	if err != nil {
		return err
	}
	if sl.json {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	fmt.Fprint(m.Stdout, sum.String())
	return nil
}
