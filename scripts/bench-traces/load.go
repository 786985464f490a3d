package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshlens/meshlens/internal/procstat"
)

// spanSummary is the part of `meshsim load --json`'s span summary the
// tables use.
type spanSummary struct {
	SpansPerRequest   float64          `json:"spans_per_request"`
	DurationSeconds   float64          `json:"duration_seconds"`
	Requests          int64            `json:"requests"`
	RequestsFailed    int64            `json:"requests_failed"`
	SpansSent         int64            `json:"spans_sent"`
	SpansAccepted     int64            `json:"spans_accepted"`
	AcceptedPerSecond float64          `json:"accepted_spans_per_second"`
	BytesSent         int64            `json:"bytes_sent"`
	LatencyP50MS      float64          `json:"request_latency_p50_ms"`
	LatencyP99MS      float64          `json:"request_latency_p99_ms"`
	StatusCodes       map[string]int64 `json:"status_codes"`
	TransportErrors   int64            `json:"transport_errors"`
}

// loadResult is one load run against one receiver.
type loadResult struct {
	receiver, format string
	rate             float64 // 0: as fast as accepted
	sum              spanSummary
	cpu              float64 // receiver CPU-seconds during the load
	rssEnd, rssMax   int64   // receiver RSS at the end, largest sampled during the load
}

func (r *loadResult) spansPerCPUSecond() float64 { return float64(r.sum.SpansAccepted) / r.cpu }

// sendLoad runs `meshsim load` against url for d and measures the
// receiver s meanwhile: CPU time and RSS from /proc.
func (b *bench) sendLoad(s *server, url, format string, rate float64, d time.Duration) (*loadResult, error) {
	cpu0, err := procstat.CPUSeconds(s.pid())
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.meshsimBin, "load", "--traces-url="+url, "--traces-format="+format,
		"--spans-per-request="+strconv.Itoa(b.spansPerRequest), "--concurrency="+strconv.Itoa(b.concurrency),
		"--duration="+d.String(), "--rate="+strconv.FormatFloat(rate, 'f', -1, 64), "--progress=0", "--json")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	res := &loadResult{receiver: s.name, format: format, rate: rate}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case err = <-done:
			waiting = false
		case <-tick.C:
			if rss, err := procstat.RSSBytes(s.pid()); err == nil {
				res.rssMax = max(res.rssMax, rss)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("meshsim load: %w\n%s", err, errOut.Bytes())
	}
	if res.cpu, err = procstat.CPUSeconds(s.pid()); err != nil {
		return nil, fmt.Errorf("%s: %w; its log ends:\n%s", s.name, err, s.logTail())
	}
	res.cpu -= cpu0
	if res.rssEnd, err = procstat.RSSBytes(s.pid()); err != nil {
		return nil, err
	}
	res.rssMax = max(res.rssMax, res.rssEnd)
	if err := json.Unmarshal(out.Bytes(), &res.sum); err != nil {
		return nil, fmt.Errorf("meshsim load output: %w\n%s", err, out.Bytes())
	}
	return res, nil
}

// recorder is a proxy between meshsim and a receiver that keeps trace ids
// of the requests the receiver accepted, for the lookups.
type recorder struct {
	target, format string
	client         *http.Client
	srv            *http.Server
	url            string

	mu  sync.Mutex
	ids []string
}

// perRequest is how many trace ids the recorder keeps of each request,
// spread over the request.
const perRequest = 8

func startRecorder(target, format string) (*recorder, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &recorder{target: target, format: format, client: &http.Client{Timeout: time.Minute}}
	r.srv = &http.Server{Handler: r}
	r.url = "http://" + l.Addr().String() + "/spans"
	go r.srv.Serve(l)
	return r, nil
}

func (r *recorder) close() { r.srv.Shutdown(context.Background()) }

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, err := http.NewRequestWithContext(req.Context(), http.MethodPost, r.target, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, h := range []string{"Content-Type", "Content-Encoding"} {
		if v := req.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	resp, err := r.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
	if resp.StatusCode/100 != 2 {
		return
	}
	ids := traceIDs(r.format, body)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range perRequest {
		if len(ids) > 0 {
			r.ids = append(r.ids, ids[i*len(ids)/perRequest])
		}
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// sample returns n of the recorded trace ids, at random (with repeats
// when fewer were recorded).
func (r *recorder) sample(n int, rng *rand.Rand) []string {
	r.mu.Lock()
	ids := slices.Clone(r.ids)
	r.mu.Unlock()
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		return nil
	}
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	for len(ids) < n {
		ids = append(ids, ids[rng.IntN(len(ids))])
	}
	return ids[:n]
}

// traceIDs returns the distinct trace ids of a request body, in hex, in
// order of appearance.
func traceIDs(format string, body []byte) []string {
	var ids []string
	add := func(id string) {
		if len(ids) == 0 || ids[len(ids)-1] != id {
			ids = append(ids, id)
		}
	}
	if format == "zipkin" {
		key := []byte(`"traceId":"`)
		for off := 0; ; {
			i := bytes.Index(body[off:], key)
			if i < 0 {
				break
			}
			at := off + i + len(key)
			end := bytes.IndexByte(body[at:], '"')
			if end < 0 {
				break
			}
			add(string(body[at : at+end]))
			off = at + end
		}
		return ids
	}
	// ExportTraceServiceRequest: resource_spans (1) > scope_spans (2) >
	// spans (2) > trace_id (1).
	var walk func(msg []byte, depth int)
	walk = func(msg []byte, depth int) {
		for len(msg) > 0 {
			num, typ, n := protowire.ConsumeTag(msg)
			if n < 0 {
				return
			}
			msg = msg[n:]
			m := protowire.ConsumeFieldValue(num, typ, msg)
			if m < 0 {
				return
			}
			if typ == protowire.BytesType {
				v, _ := protowire.ConsumeBytes(msg[:m])
				switch {
				case depth < 3 && num == []protowire.Number{1, 2, 2}[depth]:
					walk(v, depth+1)
				case depth == 3 && num == 1:
					add(hex.EncodeToString(v))
				}
			}
			msg = msg[m:]
		}
	}
	walk(body, 0)
	return ids
}

// lookupResult is the latency of trace-by-id lookups.
type lookupResult struct {
	receiver, where string
	spans           int64 // spans the receiver held
	lat             []time.Duration
	notFound, errs  int
	firstErr        string
}

var lookupClient = &http.Client{Timeout: time.Minute}

// lookup fetches each trace by id in turn and records the latencies of
// the answers with the trace.
func lookup(s *server, where string, ids []string) *lookupResult {
	r := &lookupResult{receiver: s.name, where: where}
	for _, id := range ids {
		req, _ := http.NewRequest(http.MethodGet, s.lookupURL(id), nil)
		req.Header.Set("Accept", s.accept)
		start := time.Now()
		resp, err := lookupClient.Do(req)
		if err != nil {
			r.errs++
			r.firstErr = err.Error()
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		switch {
		case err != nil:
			r.errs++
			r.firstErr = err.Error()
		case resp.StatusCode == http.StatusNotFound:
			r.notFound++
			r.firstErr = fmt.Sprintf("trace %s: %s: %.200s", id, resp.Status, body)
		case resp.StatusCode != http.StatusOK || len(body) == 0:
			r.errs++
			r.firstErr = fmt.Sprintf("trace %s: %s: %.200s", id, resp.Status, body)
		default:
			r.lat = append(r.lat, d)
		}
	}
	if r.firstErr != "" {
		progress("   %s, %s: %d not found, %d errors; last: %s", s.name, where, r.notFound, r.errs, r.firstErr)
	}
	return r
}

// quantile of sorted-on-demand latencies, in milliseconds.
func quantileMS(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i]) / 1e6
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
