// Package emit sends the output of the simulator to a remote-write
// receiver as the per-cluster Prometheus servers would: one queue per
// cluster (and per replica of an HA pair), batches of at most
// MaxSamplesPerSend samples, sent with client_golang's remote-write client
// (retries with back-off on 5xx and 429, none on other 4xx, whose batches
// are dropped as Prometheus drops them).
package emit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/cmd/meshsim/rw"
	"github.com/meshlens/meshlens/cmd/meshsim/sim"
)

// Options configure a Writer.
type Options struct {
	// URL is the remote-write endpoint.
	URL      string
	Protocol rw.Protocol
	// MaxSamplesPerSend caps a request; zero means 2000 (Prometheus's default).
	MaxSamplesPerSend int
	// Shards is the number of requests in flight per cluster queue; zero means 2.
	Shards int
	// HA doubles every cluster into two Prometheus replicas that send the
	// same series with __replica__="replica-0" and "replica-1".
	HA bool
	// MinBackoff and MaxBackoff bound the retry back-off; zero means 30ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetries per request; zero means retry until the context ends, as
	// Prometheus does.
	MaxRetries int
	Timeout    time.Duration // per attempt; zero means 30s
	Logger     *slog.Logger
}

// Stats count what a Writer sent.
type Stats struct {
	Samples, Exemplars, Requests, Dropped, Retries atomic.Int64
}

// Writer sends batches.
type Writer struct {
	opts     Options
	api      *remote.API
	sim      *sim.Sim
	replicas int
	builders [][]*rw.Builder // [queue][shard]
	// repLabels caches the labels with __replica__ per replica.
	repLabels [2][]labels.Labels
	Stats     Stats
}

// New returns a writer for the series of s.
func New(opts Options, s *sim.Sim) (*Writer, error) {
	if opts.URL == "" {
		return nil, errors.New("no remote-write URL (--url)")
	}
	if opts.Protocol == "" {
		opts.Protocol = rw.V1
	}
	if opts.MaxSamplesPerSend == 0 {
		opts.MaxSamplesPerSend = 2000
	}
	if opts.Shards == 0 {
		opts.Shards = 2
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 30 * time.Millisecond
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	client := &http.Client{Timeout: opts.Timeout, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
	w := &Writer{opts: opts, sim: s, replicas: 1}
	if opts.HA {
		w.replicas = 2
	}
	var err error
	w.api, err = remote.NewAPI(opts.URL,
		remote.WithAPIPath(""),
		remote.WithAPIHTTPClient(client),
		remote.WithAPILogger(opts.Logger),
		remote.WithAPIBackoff(remote.BackoffConfig{Min: opts.MinBackoff, Max: opts.MaxBackoff, MaxRetries: opts.MaxRetries}),
	)
	if err != nil {
		return nil, fmt.Errorf("remote-write client for %s: %w", opts.URL, err)
	}
	queues := len(s.Topology().Clusters) * w.replicas
	w.builders = make([][]*rw.Builder, queues)
	for q := range w.builders {
		w.builders[q] = make([]*rw.Builder, opts.Shards)
		for i := range w.builders[q] {
			w.builders[q][i] = rw.NewBuilder(opts.Protocol)
		}
	}
	return w, nil
}

func (w *Writer) labels(r sim.Ref, replica int) labels.Labels {
	if !w.opts.HA {
		return w.sim.Labels(r)
	}
	c := &w.repLabels[replica]
	for len(*c) < w.sim.NumSeries() {
		*c = append(*c, labels.EmptyLabels())
	}
	if (*c)[r].IsEmpty() {
		b := labels.NewBuilder(w.sim.Labels(r))
		b.Set("__replica__", fmt.Sprintf("replica-%d", replica))
		(*c)[r] = b.Labels()
	}
	return (*c)[r]
}

// Write sends one step and returns when every request of it has been
// accepted, dropped (4xx) or ctx has ended.
func (w *Writer) Write(ctx context.Context, b *sim.Batch) error {
	if w.opts.HA {
		// Extend the label caches before the queues read them concurrently.
		for rep := range 2 {
			w.labels(0, rep)
			for _, c := range b.Samples {
				for _, smp := range c {
					w.labels(smp.Ref, rep)
				}
			}
		}
	}
	var wg sync.WaitGroup
	for c, samples := range b.Samples {
		if len(samples) == 0 {
			continue
		}
		var ex map[sim.Ref]*sim.Exemplar
		if len(b.Exemplars[c]) > 0 {
			ex = make(map[sim.Ref]*sim.Exemplar, len(b.Exemplars[c]))
			for i := range b.Exemplars[c] {
				ex[b.Exemplars[c][i].Ref] = &b.Exemplars[c][i]
			}
		}
		per := (len(samples) + w.opts.Shards - 1) / w.opts.Shards
		for rep := range w.replicas {
			q := c*w.replicas + rep
			for sh := range w.opts.Shards {
				lo := sh * per
				hi := min(lo+per, len(samples))
				if lo >= hi {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					w.sendShard(ctx, w.builders[q][sh], samples[lo:hi], ex, rep)
				}()
			}
		}
	}
	wg.Wait()
	return ctx.Err()
}

func (w *Writer) sendShard(ctx context.Context, bld *rw.Builder, samples []sim.Sample, ex map[sim.Ref]*sim.Exemplar, rep int) {
	msgType := remote.WriteV1MessageType
	if w.opts.Protocol == rw.V2 {
		msgType = remote.WriteV2MessageType
	}
	var e rw.Exemplar
	for len(samples) > 0 && ctx.Err() == nil {
		n := min(len(samples), w.opts.MaxSamplesPerSend)
		bld.Reset()
		for _, smp := range samples[:n] {
			var ep *rw.Exemplar
			if x, ok := ex[smp.Ref]; ok {
				e = rw.Exemplar{Labels: labels.FromStrings("span_id", x.SpanID.String(), "trace_id", x.TraceID.String()), V: x.V, T: x.T}
				ep = &e
			}
			bld.Add(w.labels(smp.Ref, rep), w.sim.Type(smp.Ref).RemoteWriteType(), smp.T, smp.V, ep)
		}
		samples = samples[n:]
		_, err := w.api.Write(ctx, msgType, bld, remote.WithWriteRetryCallback(func(error) { w.Stats.Retries.Add(1) }))
		w.Stats.Requests.Add(1)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.Stats.Dropped.Add(int64(bld.Samples()))
			w.opts.Logger.Warn("remote write batch dropped", "samples", bld.Samples(), "err", err)
			continue
		}
		w.Stats.Samples.Add(int64(bld.Samples()))
		w.Stats.Exemplars.Add(int64(bld.Exemplars()))
	}
}
