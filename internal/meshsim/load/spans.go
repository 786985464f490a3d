package load

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
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

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshlens/meshlens/internal/meshsim/otlp"
	"github.com/meshlens/meshlens/internal/meshsim/sim"
	"github.com/meshlens/meshlens/internal/meshsim/topology"
	"github.com/meshlens/meshlens/internal/meshsim/zipkin"
)

// Span load: the request bodies are encoded once from simulated traces
// (whole traces per request, Istio's attributes). Each send copies a body
// and patches, in place, its trace ids (so every round sends new traces)
// and its timestamps (so the spans are recent): both have fixed width in
// either format, hex in Zipkin JSON and raw bytes / fixed64 in OTLP.

// SpanFormat is the wire format of a span load.
type SpanFormat string

// Span formats.
const (
	FormatZipkin SpanFormat = "zipkin" // Zipkin v2 JSON, POST /api/v2/spans
	FormatOTLP   SpanFormat = "otlp"   // OTLP/HTTP protobuf, POST /v1/traces
)

// ParseSpanFormat accepts "zipkin" and "otlp".
func ParseSpanFormat(s string) (SpanFormat, error) {
	switch SpanFormat(s) {
	case FormatZipkin, FormatOTLP:
		return SpanFormat(s), nil
	}
	return "", fmt.Errorf("unknown --traces-format %q (zipkin or otlp)", s)
}

// ContentType is the Content-Type of requests in the format.
func (f SpanFormat) ContentType() string {
	if f == FormatOTLP {
		return otlp.ContentType
	}
	return "application/json"
}

// SpanDatasetOptions select a span dataset.
type SpanDatasetOptions struct {
	Seed int64
	// Services and Clusters size the simulated mesh; zero means 30 and 2.
	Services, Clusters int
	Format             SpanFormat
	// SpansPerRequest is the target size of a request (whole traces);
	// zero means 1000.
	SpansPerRequest int
	// Bodies is the number of distinct requests; zero means 64.
	Bodies int
}

// SpanDataset is a set of encoded span requests.
type SpanDataset struct {
	Format SpanFormat
	Spans  int // over all bodies
	Traces int
	bodies []spanBody
}

type spanBody struct {
	b     []byte
	spans int
	// ids are the offsets of the trace ids (Zipkin: 32 hex digits; OTLP:
	// 16 bytes), times those of the timestamps (Zipkin: 16 decimal digits
	// of µs; OTLP: fixed64 ns).
	ids, times []int
	end        int64 // latest span end, µs
}

// BuildSpanDataset simulates traces and encodes them into requests.
func BuildSpanDataset(opts SpanDatasetOptions) (*SpanDataset, error) {
	if opts.SpansPerRequest == 0 {
		opts.SpansPerRequest = 1000
	}
	if opts.Bodies == 0 {
		opts.Bodies = 64
	}
	if opts.SpansPerRequest < 1 || opts.Bodies < 1 {
		return nil, fmt.Errorf("spans per request %d and bodies %d must be positive", opts.SpansPerRequest, opts.Bodies)
	}
	if _, err := ParseSpanFormat(string(opts.Format)); err != nil {
		return nil, err
	}
	topo, err := topology.Generate(topology.Options{Seed: opts.Seed, Services: opts.Services, Clusters: opts.Clusters})
	if err != nil {
		return nil, err
	}
	s, err := sim.New(sim.Options{Topology: topo, TraceSampling: 1})
	if err != nil {
		return nil, err
	}
	d := &SpanDataset{Format: opts.Format}
	var body []sim.Span
	flush := func() error {
		if len(body) == 0 {
			return nil
		}
		b, err := encodeBody(opts.Format, body)
		if err != nil {
			return err
		}
		d.bodies = append(d.bodies, b)
		d.Spans += len(body)
		body = body[:0]
		return nil
	}
	for step := 0; len(d.bodies) < opts.Bodies; step++ {
		if step > 10000 {
			return nil, errors.New("the simulated mesh makes no traces")
		}
		spans := s.Step().Spans
		for i := 0; i < len(spans) && len(d.bodies) < opts.Bodies; {
			j := i + 1
			for j < len(spans) && spans[j].TraceID == spans[i].TraceID {
				j++
			}
			if len(body) > 0 && len(body)+j-i > opts.SpansPerRequest {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			body = append(body, spans[i:j]...)
			d.Traces++
			i = j
		}
	}
	return d, nil
}

func encodeBody(f SpanFormat, spans []sim.Span) (spanBody, error) {
	sb := spanBody{spans: len(spans), end: math.MinInt64}
	for i := range spans {
		sb.end = max(sb.end, spans[i].Start+spans[i].Duration)
	}
	var err error
	if f == FormatOTLP {
		if sb.b, err = otlp.Marshal(spans); err != nil {
			return sb, err
		}
		err = sb.findOTLP()
	} else {
		if sb.b, err = zipkin.AppendJSON(nil, spans); err != nil {
			return sb, err
		}
		err = sb.findZipkin()
	}
	if len(sb.ids) != len(spans) {
		return sb, fmt.Errorf("found %d trace ids in a request of %d spans", len(sb.ids), len(spans))
	}
	return sb, err
}

const usDigits = 16 // decimal digits of a µs timestamp until the year 2286

func (sb *spanBody) findZipkin() error {
	for _, k := range []struct {
		key  []byte
		dst  *[]int
		size int
	}{{[]byte(`"traceId":"`), &sb.ids, 32}, {[]byte(`"timestamp":`), &sb.times, usDigits}} {
		b := sb.b
		off := 0
		for {
			i := bytes.Index(b[off:], k.key)
			if i < 0 {
				break
			}
			at := off + i + len(k.key)
			end := at
			for end < len(b) && b[end] != '"' && b[end] != ',' && b[end] != '}' {
				end++
			}
			if end-at != k.size {
				return fmt.Errorf("zipkin field %s is %d characters, want %d", k.key, end-at, k.size)
			}
			*k.dst = append(*k.dst, at)
			off = end
		}
	}
	return nil
}

// findOTLP records the offsets of Span.trace_id (1), start_time_unix_nano
// (7) and end_time_unix_nano (8) in an ExportTraceServiceRequest
// (resource_spans = 1) > ResourceSpans (scope_spans = 2) > ScopeSpans
// (spans = 2) > Span.
func (sb *spanBody) findOTLP() error {
	path := []protowire.Number{1, 2, 2}
	var walk func(off int, msg []byte, depth int) error
	walk = func(off int, msg []byte, depth int) error {
		pos := 0
		for pos < len(msg) {
			num, typ, n := protowire.ConsumeTag(msg[pos:])
			if n < 0 {
				return errMalformedOTLP
			}
			pos += n
			m := protowire.ConsumeFieldValue(num, typ, msg[pos:])
			if m < 0 {
				return errMalformedOTLP
			}
			val := msg[pos : pos+m]
			switch {
			case depth < len(path) && typ == protowire.BytesType && num == path[depth]:
				inner, ln := protowire.ConsumeBytes(val)
				if err := walk(off+pos+ln-len(inner), inner, depth+1); err != nil {
					return err
				}
			case depth == len(path) && num == 1 && typ == protowire.BytesType:
				inner, ln := protowire.ConsumeBytes(val)
				if len(inner) != 16 {
					return errMalformedOTLP
				}
				sb.ids = append(sb.ids, off+pos+ln-16)
			case depth == len(path) && (num == 7 || num == 8) && typ == protowire.Fixed64Type:
				sb.times = append(sb.times, off+pos)
			}
			pos += m
		}
		return nil
	}
	return walk(0, sb.b, 0)
}

var errMalformedOTLP = errors.New("unexpected OTLP encoding")

// patch rewrites a copy of the body in dst for round key and time shift
// (µs) and returns it.
func (sb *spanBody) patch(dst []byte, f SpanFormat, key uint64, shiftUS int64) []byte {
	dst = append(dst[:0], sb.b...)
	var hx [16]byte
	for _, at := range sb.ids {
		if f == FormatOTLP {
			v := binary.BigEndian.Uint64(dst[at:]) ^ key
			binary.BigEndian.PutUint64(dst[at:], v)
			continue
		}
		var raw [8]byte
		_, _ = hex.Decode(raw[:], dst[at:at+16])
		binary.BigEndian.PutUint64(raw[:], binary.BigEndian.Uint64(raw[:])^key)
		hex.Encode(hx[:], raw[:])
		copy(dst[at:], hx[:])
	}
	var digits [24]byte
	for _, at := range sb.times {
		if f == FormatOTLP {
			v := binary.LittleEndian.Uint64(dst[at:])
			binary.LittleEndian.PutUint64(dst[at:], uint64(int64(v)+shiftUS*1000))
			continue
		}
		v, _ := strconv.ParseInt(string(dst[at:at+usDigits]), 10, 64)
		out := strconv.AppendInt(digits[:0], v+shiftUS, 10)
		if len(out) == usDigits {
			copy(dst[at:], out)
		}
	}
	return dst
}

// SpanOptions configure a span load run.
type SpanOptions struct {
	// URL is the span endpoint: .../api/v2/spans (Zipkin) or .../v1/traces (OTLP).
	URL string
	// Concurrency is the number of requests in flight; zero means 4.
	Concurrency int
	// Duration, Requests: as in Options; with neither, the run lasts 30s.
	Duration time.Duration
	Requests int64
	// Rate caps spans sent per second; zero means as fast as possible.
	Rate float64
	// Timeout is the per-request timeout; zero means 30s.
	Timeout time.Duration
	// Progress as in Options.
	Progress    time.Duration
	ProgressOut io.Writer
	Headers     map[string]string
	Logger      *slog.Logger
	Client      *http.Client
}

// SpanSummary is the result of a span load run.
type SpanSummary struct {
	URL               string           `json:"url"`
	Format            string           `json:"format"`
	SpansPerRequest   float64          `json:"spans_per_request"`
	Concurrency       int              `json:"concurrency"`
	DurationSeconds   float64          `json:"duration_seconds"`
	Requests          int64            `json:"requests"`
	RequestsFailed    int64            `json:"requests_failed"`
	SpansSent         int64            `json:"spans_sent"`
	SpansAccepted     int64            `json:"spans_accepted"`
	AcceptedPerSecond float64          `json:"accepted_spans_per_second"`
	RequestsPerSecond float64          `json:"requests_per_second"`
	BytesSent         int64            `json:"bytes_sent"`
	LatencyP50MS      float64          `json:"request_latency_p50_ms"`
	LatencyP90MS      float64          `json:"request_latency_p90_ms"`
	LatencyP99MS      float64          `json:"request_latency_p99_ms"`
	LatencyMaxMS      float64          `json:"request_latency_max_ms"`
	StatusCodes       map[string]int64 `json:"status_codes"`
	TransportErrors   int64            `json:"transport_errors"`
	Rounds            int64            `json:"rounds"`
}

// String formats the summary for people.
func (s *SpanSummary) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "format %s, %.0f spans/request, concurrency %d, %.1fs\n", s.Format, s.SpansPerRequest, s.Concurrency, s.DurationSeconds)
	fmt.Fprintf(&b, "requests %d (%.1f/s), failed %d, rounds %d\n", s.Requests, s.RequestsPerSecond, s.RequestsFailed, s.Rounds)
	fmt.Fprintf(&b, "spans sent %d, accepted %d: %.0f accepted spans/s\n", s.SpansSent, s.SpansAccepted, s.AcceptedPerSecond)
	fmt.Fprintf(&b, "bytes sent %d (%.1f MB/s)\n", s.BytesSent, float64(s.BytesSent)/1e6/math.Max(s.DurationSeconds, 1e-9))
	fmt.Fprintf(&b, "request latency p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms\n", s.LatencyP50MS, s.LatencyP90MS, s.LatencyP99MS, s.LatencyMaxMS)
	b.WriteString("status codes:")
	codes := make([]string, 0, len(s.StatusCodes))
	for c := range s.StatusCodes {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes {
		fmt.Fprintf(&b, " %s=%d", c, s.StatusCodes[c])
	}
	if s.TransportErrors > 0 {
		fmt.Fprintf(&b, " transport_errors=%d", s.TransportErrors)
	}
	b.WriteString("\n")
	return b.String()
}

// RunSpans sends the dataset's requests until the run ends.
func RunSpans(ctx context.Context, opts SpanOptions, d *SpanDataset) (*SpanSummary, error) {
	if opts.URL == "" {
		return nil, errors.New("no span endpoint (--traces-url)")
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
	if opts.Duration == 0 && opts.Requests == 0 {
		opts.Duration = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Concurrency < 1 || opts.Rate < 0 || opts.Requests < 0 || opts.Duration < 0 {
		return nil, fmt.Errorf("concurrency %d, rate %v, requests %d, duration %s: must not be negative",
			opts.Concurrency, opts.Rate, opts.Requests, opts.Duration)
	}
	workers := min(opts.Concurrency, len(d.bodies))
	client := opts.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        workers * 2,
			MaxIdleConnsPerHost: workers * 2,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}}
	}
	var requests, failed, sent, accepted, nbytes, transport, started, reserved, rounds atomic.Int64
	var mu sync.Mutex
	codes := make(map[int]int64)
	lat := make([][]time.Duration, workers)
	stop := make(chan struct{})
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }) }
	t0 := time.Now()
	if opts.Duration > 0 {
		timer := time.AfterFunc(opts.Duration, halt)
		defer timer.Stop()
	}
	go func() {
		select {
		case <-ctx.Done():
			halt()
		case <-stop:
		}
	}()
	done := make(chan struct{})
	if opts.Progress > 0 && opts.ProgressOut != nil {
		go func() {
			tick := time.NewTicker(opts.Progress)
			defer tick.Stop()
			var last int64
			lastT := t0
			for {
				select {
				case <-done:
					return
				case now := <-tick.C:
					acc := accepted.Load()
					fmt.Fprintf(opts.ProgressOut, "%6.0fs  accepted %10.0f spans/s  total %d spans, %d requests, %d failed\n",
						now.Sub(t0).Seconds(), float64(acc-last)/now.Sub(lastT).Seconds(), acc, requests.Load(), failed.Load())
					last, lastT = acc, now
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var buf []byte
			var mine []int
			for k := w; k < len(d.bodies); k += workers {
				mine = append(mine, k)
			}
			for r := int64(0); ; r++ {
				key := splitmix(uint64(r)<<8 | uint64(w)&0xff)
				for _, k := range mine {
					select {
					case <-stop:
						return
					default:
					}
					if opts.Requests > 0 && started.Add(1) > opts.Requests {
						halt()
						return
					}
					body := &d.bodies[k]
					if opts.Rate > 0 {
						res := reserved.Add(int64(body.spans)) - int64(body.spans)
						due := t0.Add(time.Duration(float64(res) / opts.Rate * float64(time.Second)))
						if dl := time.Until(due); dl > 0 {
							t := time.NewTimer(dl)
							select {
							case <-stop:
								t.Stop()
								return
							case <-t.C:
							}
						}
					}
					// The request's last span ends now.
					buf = body.patch(buf, d.Format, key, time.Now().UnixMicro()-body.end)
					rctx, cancel := context.WithTimeout(ctx, opts.Timeout)
					req, err := http.NewRequestWithContext(rctx, http.MethodPost, opts.URL, bytes.NewReader(buf))
					if err != nil {
						cancel()
						halt()
						return
					}
					req.Header.Set("Content-Type", d.Format.ContentType())
					req.Header.Set("User-Agent", "meshsim")
					for h, v := range opts.Headers {
						req.Header.Set(h, v)
					}
					begin := time.Now()
					resp, err := client.Do(req)
					requests.Add(1)
					sent.Add(int64(body.spans))
					nbytes.Add(int64(len(buf)))
					if err != nil {
						cancel()
						lat[w] = append(lat[w], time.Since(begin))
						failed.Add(1)
						transport.Add(1)
						if ctx.Err() != nil {
							return
						}
						opts.Logger.Debug("span request failed", "err", err)
						continue
					}
					rbody, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
					_ = resp.Body.Close()
					cancel()
					lat[w] = append(lat[w], time.Since(begin))
					mu.Lock()
					codes[resp.StatusCode]++
					mu.Unlock()
					if resp.StatusCode/100 != 2 {
						failed.Add(1)
						continue
					}
					n := int64(body.spans)
					if d.Format == FormatOTLP && len(rbody) > 0 {
						r := ptraceotlp.NewExportResponse()
						if r.UnmarshalProto(rbody) == nil {
							n -= r.PartialSuccess().RejectedSpans()
						}
					}
					accepted.Add(n)
				}
				if w == 0 {
					rounds.Store(r + 1)
				}
			}
		})
	}
	wg.Wait()
	close(done)
	elapsed := time.Since(t0)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	sum := &SpanSummary{
		URL: opts.URL, Format: string(d.Format), SpansPerRequest: float64(d.Spans) / float64(max(len(d.bodies), 1)),
		Concurrency: workers, DurationSeconds: elapsed.Seconds(), Requests: requests.Load(), RequestsFailed: failed.Load(),
		SpansSent: sent.Load(), SpansAccepted: accepted.Load(), BytesSent: nbytes.Load(), TransportErrors: transport.Load(),
		StatusCodes: make(map[string]int64), Rounds: rounds.Load(),
		LatencyP50MS: quantileMS(all, 0.5), LatencyP90MS: quantileMS(all, 0.9), LatencyP99MS: quantileMS(all, 0.99),
		LatencyMaxMS: quantileMS(all, 1),
	}
	for c, n := range codes {
		sum.StatusCodes[strconv.Itoa(c)] = n
	}
	sum.AcceptedPerSecond = float64(sum.SpansAccepted) / elapsed.Seconds()
	sum.RequestsPerSecond = float64(sum.Requests) / elapsed.Seconds()
	return sum, nil
}

// splitmix is a 64-bit mixing function (the round keys of trace ids).
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
