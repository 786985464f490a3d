// Package load sends remote-write requests, or spans, as fast as a
// receiver accepts them (or at a set rate) and measures what it accepted:
// rate, request latency (p50, p90, p99, max) and answers by status code.
//
// Unlike run and backfill, which send through Prometheus's own queue
// (package emit), load builds its requests itself: a benchmark needs the
// generator to out-run the receiver by a wide margin, and the Prometheus
// path (appender, WAL write, WAL watcher, queue, gogo protobuf) costs
// several times more CPU per sample than copying pre-encoded labels, so
// on the same machine it would measure meshsim rather than the receiver
// (docs/BENCHMARKS.md has both rates). The requests are what Prometheus
// sends: the same messages, headers and snappy framing; load does not
// retry, so that every answer counts once.
//
// The series are encoded once. Each round gives every series one sample
// with a later timestamp than the round before; each request carries a
// contiguous range of series (a chunk), and each chunk belongs to one
// worker, so the samples of a series always arrive in time order.
package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"

	"github.com/meshlens/meshlens/internal/meshsim/rw"
)

// Options configure a load run.
type Options struct {
	// URL is the remote-write endpoint, e.g. http://127.0.0.1:9201/api/v1/write.
	URL      string
	Protocol rw.Protocol
	// SamplesPerRequest is the number of series (one sample each) per
	// request; zero means 2000.
	SamplesPerRequest int
	// Concurrency is the number of requests in flight; zero means 4.
	Concurrency int
	// Duration stops the run after this long; zero means no time limit.
	Duration time.Duration
	// Requests stops the run after this many requests; zero means no limit.
	// With neither Duration nor Requests the run lasts until ctx ends.
	Requests int64
	// Rate caps the samples sent per second; zero means as fast as possible.
	Rate float64
	// Step is how far timestamps advance per round; zero means wall-clock
	// time (strictly increasing per series).
	Step time.Duration
	// Start is the timestamp of round 0 when Step is set; zero means now.
	Start time.Time
	// Timeout is the per-request timeout; zero means 30s.
	Timeout time.Duration
	// Progress is the interval of progress lines on ProgressOut; zero
	// means 5s, negative means none.
	Progress    time.Duration
	ProgressOut io.Writer
	Headers     map[string]string
	Logger      *slog.Logger
	// Client overrides the HTTP client (tests).
	Client *http.Client
}

// Summary is the result of a run; its JSON form is what benchmark scripts
// parse.
type Summary struct {
	URL               string           `json:"url"`
	Protocol          string           `json:"protocol"`
	Series            int              `json:"series"`
	LabelsPerSeries   float64          `json:"labels_per_series"`
	SamplesPerRequest int              `json:"samples_per_request"`
	Concurrency       int              `json:"concurrency"`
	DurationSeconds   float64          `json:"duration_seconds"`
	Requests          int64            `json:"requests"`
	RequestsFailed    int64            `json:"requests_failed"`
	SamplesSent       int64            `json:"samples_sent"`
	SamplesAccepted   int64            `json:"samples_accepted"`
	AcceptedPerSecond float64          `json:"accepted_samples_per_second"`
	RequestsPerSecond float64          `json:"requests_per_second"`
	BytesSent         int64            `json:"bytes_sent"`
	UncompressedBytes int64            `json:"uncompressed_bytes"`
	LatencyP50MS      float64          `json:"request_latency_p50_ms"`
	LatencyP90MS      float64          `json:"request_latency_p90_ms"`
	LatencyP99MS      float64          `json:"request_latency_p99_ms"`
	LatencyMaxMS      float64          `json:"request_latency_max_ms"`
	StatusCodes       map[string]int64 `json:"status_codes"`
	// TransportErrors counts requests without an HTTP response.
	TransportErrors int64 `json:"transport_errors"`
	// Rounds is the number of full passes over the series.
	Rounds int64 `json:"rounds"`
}

// String formats the summary for people.
func (s *Summary) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "protocol %s, %d series (%.1f labels each), %d samples/request, concurrency %d, %.1fs\n",
		s.Protocol, s.Series, s.LabelsPerSeries, s.SamplesPerRequest, s.Concurrency, s.DurationSeconds)
	fmt.Fprintf(&b, "requests %d (%.1f/s), failed %d, rounds %d\n", s.Requests, s.RequestsPerSecond, s.RequestsFailed, s.Rounds)
	fmt.Fprintf(&b, "samples sent %d, accepted %d: %.0f accepted samples/s\n", s.SamplesSent, s.SamplesAccepted, s.AcceptedPerSecond)
	fmt.Fprintf(&b, "bytes sent %d (%.1f MB/s compressed, %.1fx ratio)\n", s.BytesSent,
		float64(s.BytesSent)/1e6/math.Max(s.DurationSeconds, 1e-9), float64(s.UncompressedBytes)/math.Max(float64(s.BytesSent), 1))
	fmt.Fprintf(&b, "request latency p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms\n", s.LatencyP50MS, s.LatencyP90MS, s.LatencyP99MS, s.LatencyMaxMS)
	codes := make([]string, 0, len(s.StatusCodes))
	for c := range s.StatusCodes {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	b.WriteString("status codes:")
	for _, c := range codes {
		fmt.Fprintf(&b, " %s=%d", c, s.StatusCodes[c])
	}
	if s.TransportErrors > 0 {
		fmt.Fprintf(&b, " transport_errors=%d", s.TransportErrors)
	}
	b.WriteString("\n")
	return b.String()
}

// Errors.
var (
	ErrNoURL = errors.New("no remote-write URL (--url)")
)

type counters struct {
	requests, failed, sent, accepted, bytes, raw, transport atomic.Int64
	reserved                                                atomic.Int64 // samples reserved by the rate limiter
	started                                                 atomic.Int64 // requests started (for Requests)
}

// Run sends the dataset until the run ends and returns the summary.
func Run(ctx context.Context, opts Options, d *Dataset) (*Summary, error) {
	if opts.URL == "" {
		return nil, ErrNoURL
	}
	if opts.Protocol == "" {
		opts.Protocol = rw.V1
	}
	if opts.SamplesPerRequest == 0 {
		opts.SamplesPerRequest = 2000
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 4
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Progress == 0 {
		opts.Progress = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SamplesPerRequest < 1 || opts.Concurrency < 1 || opts.Rate < 0 || opts.Requests < 0 || opts.Duration < 0 {
		return nil, fmt.Errorf("samples per request %d, concurrency %d, rate %v, requests %d, duration %s: must not be negative",
			opts.SamplesPerRequest, opts.Concurrency, opts.Rate, opts.Requests, opts.Duration)
	}
	n := d.Set.Len()
	chunks := (n + opts.SamplesPerRequest - 1) / opts.SamplesPerRequest
	workers := min(opts.Concurrency, chunks)
	if workers < opts.Concurrency {
		opts.Logger.Warn("fewer chunks than workers; lower concurrency", "chunks", chunks, "concurrency", opts.Concurrency)
	}
	client := opts.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        workers * 2,
			MaxIdleConnsPerHost: workers * 2,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}}
	}
	var c counters
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-runCtx.Done():
			halt()
		case <-stop:
		}
	}()
	t0 := time.Now()
	if opts.Duration > 0 {
		timer := time.AfterFunc(opts.Duration, halt)
		defer timer.Stop()
	}
	startMS := opts.Start.UnixMilli()
	if opts.Start.IsZero() {
		startMS = t0.UnixMilli()
	}

	var codesMu sync.Mutex
	codes := make(map[int]int64)
	lat := make([][]time.Duration, workers)
	var rounds atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk := worker{opts: &opts, d: d, client: client, c: &c, stop: stop, halt: halt, t0: t0, startMS: startMS,
				scratch: d.Set.NewScratch(), lastTS: make(map[int]int64)}
			mine := make([]int, 0, chunks/workers+1)
			for k := w; k < chunks; k += workers {
				mine = append(mine, k)
			}
			for r := int64(0); ; r++ {
				for _, k := range mine {
					if !wk.send(ctx, r, k, codes, &codesMu) {
						lat[w] = wk.lat
						return
					}
				}
				if w == 0 {
					rounds.Store(r + 1)
				}
			}
		}()
	}
	done := make(chan struct{})
	if opts.Progress > 0 && opts.ProgressOut != nil {
		go progress(opts, &c, t0, done)
	}
	wg.Wait()
	close(done)
	elapsed := time.Since(t0)

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	sum := &Summary{
		URL: opts.URL, Protocol: string(opts.Protocol), Series: n, SamplesPerRequest: opts.SamplesPerRequest,
		Concurrency: workers, DurationSeconds: elapsed.Seconds(),
		Requests: c.requests.Load(), RequestsFailed: c.failed.Load(), SamplesSent: c.sent.Load(),
		SamplesAccepted: c.accepted.Load(), BytesSent: c.bytes.Load(), UncompressedBytes: c.raw.Load(),
		TransportErrors: c.transport.Load(), StatusCodes: make(map[string]int64), Rounds: rounds.Load(),
		LatencyP50MS: quantileMS(all, 0.5), LatencyP90MS: quantileMS(all, 0.9), LatencyP99MS: quantileMS(all, 0.99),
		LatencyMaxMS: quantileMS(all, 1),
	}
	for code, k := range codes {
		sum.StatusCodes[strconv.Itoa(code)] = k
	}
	var nl int
	for _, ls := range d.Labels {
		nl += ls.Len()
	}
	sum.LabelsPerSeries = float64(nl) / float64(max(len(d.Labels), 1))
	sum.AcceptedPerSecond = float64(sum.SamplesAccepted) / elapsed.Seconds()
	sum.RequestsPerSecond = float64(sum.Requests) / elapsed.Seconds()
	return sum, nil
}

func quantileMS(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i].Microseconds()) / 1000
}

func progress(opts Options, c *counters, t0 time.Time, done <-chan struct{}) {
	tick := time.NewTicker(opts.Progress)
	defer tick.Stop()
	var lastAcc, lastReq int64
	last := t0
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			acc, req := c.accepted.Load(), c.requests.Load()
			dt := now.Sub(last).Seconds()
			fmt.Fprintf(opts.ProgressOut, "%6.0fs  accepted %10.0f samples/s  %7.1f req/s  total %d samples, %d requests, %d failed\n",
				now.Sub(t0).Seconds(), float64(acc-lastAcc)/dt, float64(req-lastReq)/dt, acc, req, c.failed.Load())
			lastAcc, lastReq, last = acc, req, now
		}
	}
}

type worker struct {
	opts    *Options
	d       *Dataset
	client  *http.Client
	c       *counters
	stop    <-chan struct{}
	halt    func()
	t0      time.Time
	startMS int64
	scratch *rw.Scratch
	lastTS  map[int]int64
	vals    []float64
	raw     []byte
	comp    []byte
	lat     []time.Duration
}

// send sends round r of chunk k; it returns false when the run is over.
func (w *worker) send(ctx context.Context, r int64, k int, codes map[int]int64, mu *sync.Mutex) bool {
	select {
	case <-w.stop:
		return false
	default:
	}
	o := w.opts
	if o.Requests > 0 && w.c.started.Add(1) > o.Requests {
		w.halt()
		return false
	}
	lo := k * o.SamplesPerRequest
	hi := min(lo+o.SamplesPerRequest, w.d.Set.Len())
	if o.Rate > 0 {
		res := w.c.reserved.Add(int64(hi - lo))
		due := w.t0.Add(time.Duration(float64(res-int64(hi-lo)) / o.Rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-w.stop:
				t.Stop()
				return false
			case <-t.C:
			}
		}
	}
	var ts int64
	if o.Step > 0 {
		ts = w.startMS + r*o.Step.Milliseconds()
	} else {
		ts = max(time.Now().UnixMilli(), w.lastTS[k]+1)
		w.lastTS[k] = ts
	}
	w.vals = w.vals[:0]
	fr := float64(r)
	for i := lo; i < hi; i++ {
		w.vals = append(w.vals, w.d.Start[i]+fr*w.d.Inc[i])
	}
	if o.Protocol == rw.V2 {
		w.raw = w.d.Set.AppendV2(w.raw[:0], w.scratch, lo, hi, ts, w.vals)
	} else {
		w.raw = w.d.Set.AppendV1(w.raw[:0], lo, hi, ts, w.vals)
	}
	if need := snappy.MaxEncodedLen(len(w.raw)); cap(w.comp) < need {
		w.comp = make([]byte, need)
	}
	body := snappy.Encode(w.comp[:cap(w.comp)], w.raw)

	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, o.URL, bytes.NewReader(body))
	if err != nil {
		w.halt()
		return false
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", o.Protocol.ContentType())
	req.Header.Set("X-Prometheus-Remote-Write-Version", o.Protocol.VersionHeader())
	req.Header.Set("User-Agent", "meshsim")
	for k, v := range o.Headers {
		req.Header.Set(k, v)
	}
	begin := time.Now()
	resp, err := w.client.Do(req)
	n := int64(hi - lo)
	w.c.requests.Add(1)
	w.c.sent.Add(n)
	w.c.bytes.Add(int64(len(body)))
	w.c.raw.Add(int64(len(w.raw)))
	if err != nil {
		w.lat = append(w.lat, time.Since(begin))
		w.c.failed.Add(1)
		w.c.transport.Add(1)
		if ctx.Err() != nil {
			return false
		}
		o.Logger.Debug("remote write failed", "err", err)
		return true
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	w.lat = append(w.lat, time.Since(begin))
	mu.Lock()
	codes[resp.StatusCode]++
	mu.Unlock()
	if resp.StatusCode/100 == 2 {
		// A 2.0 receiver says how many samples it wrote.
		if h := resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written"); h != "" && o.Protocol == rw.V2 {
			if v, err := strconv.ParseInt(h, 10, 64); err == nil {
				n = v
			}
		}
		w.c.accepted.Add(n)
	} else {
		w.c.failed.Add(1)
	}
	return true
}
