package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/meshlens/meshlens/cmd/meshsim/load"
	"github.com/meshlens/meshlens/cmd/meshsim/rw"
)

func (m *Main) runLoad(ctx context.Context, args []string) error {
	fs, lvl := m.newFlagSet("load")
	var (
		url         = fs.String("url", "", "remote-write endpoint, e.g. http://127.0.0.1:9201/api/v1/write (required)")
		series      = fs.Int("series", 100000, "number of active series")
		spr         = fs.Int("samples-per-request", 2000, "samples (series) per request")
		protocol    = fs.String("protocol", "1.0", "remote-write protocol: 1.0 or 2.0")
		concurrency = fs.Int("concurrency", 4, "requests in flight")
		duration    = fs.Duration("duration", 0, "stop after this long (default 30s when --requests is not set)")
		requests    = fs.Int64("requests", 0, "stop after this many requests")
		rate        = fs.Float64("rate", 0, "samples per second to send (0: as fast as the receiver accepts)")
		step        = fs.Duration("step", 0, "timestamp advance per round (0: wall-clock timestamps)")
		seed        = fs.Int64("seed", 1, "random seed of the simulated mesh the series come from")
		clusters    = fs.Int("clusters", 2, "clusters of the simulated mesh")
		mix         = fs.String("mix", "istio", "series: istio (Istio standard metrics only) or all (every series Prometheus sends)")
		timeout     = fs.Duration("timeout", 30*time.Second, "per-request timeout")
		progress    = fs.Duration("progress", 5*time.Second, "progress line interval on stderr (0: none)")
		asJSON      = fs.Bool("json", false, "print the summary as JSON on stdout")
		headers     = fs.String("headers", "", "extra request headers, comma-separated Name=Value")
	)
	if err := m.parse(fs, lvl, args); err != nil {
		return err
	}
	if *url == "" {
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
	if *series < 1 || *spr < 1 || *concurrency < 1 {
		return fmt.Errorf("--series %d, --samples-per-request %d and --concurrency %d must be positive", *series, *spr, *concurrency)
	}
	begin := time.Now()
	d, err := load.BuildDataset(load.DatasetOptions{Seed: *seed, Series: *series, Clusters: *clusters, Mix: load.Mix(*mix)})
	if err != nil {
		return err
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
