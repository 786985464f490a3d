package emit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"google.golang.org/protobuf/encoding/protowire"
)

// A backfill writes hours-old samples, and Prometheus's WAL watcher skips
// every sample older than the moment it started (tsdb/wlog/watcher.go:
// "if s.T > w.startTimestamp"). So a backfill appends its samples shifted
// forward to just after that moment, Prometheus's queue sends them as
// usual, and the relay — an HTTP server on 127.0.0.1 that the queue's
// remote_write url points at — shifts every timestamp of each request
// back before passing the request on unchanged otherwise: headers,
// receiver's status, Retry-After and the 2.0 written-counts headers travel
// both ways, so the queue's batching, retries and drops are Prometheus's.

// relayMaxBody bounds a request the relay buffers.
const relayMaxBody = 256 << 20

type relay struct {
	upstream string
	// shift (ms) is subtracted from every timestamp; set before the first
	// request.
	shift  atomic.Int64
	client *http.Client
	ln     net.Listener
	srv    *http.Server
	log    *slog.Logger
}

func newRelay(upstream string, log *slog.Logger) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("backfill relay: %w", err)
	}
	r := &relay{upstream: upstream, ln: ln, log: log,
		client: &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 100,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}}}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is where the queues send.
func (r *relay) URL() string { return "http://" + r.ln.Addr().String() + "/write" }

func (r *relay) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// forwarded are the request headers passed on to the receiver.
var forwarded = []string{"Content-Type", "Content-Encoding", "User-Agent", "X-Prometheus-Remote-Write-Version", "Retry-Attempt", "Authorization"}

func (r *relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, relayMaxBody+1))
	if err != nil || len(body) > relayMaxBody {
		http.Error(w, fmt.Sprintf("backfill relay: read request (limit %d bytes): %v", relayMaxBody, err), http.StatusBadRequest)
		return
	}
	bufs := relayBufs.Get().(*relayBuf)
	defer relayBufs.Put(bufs)
	n, err := snappy.DecodedLen(body)
	if err == nil {
		bufs.raw = slices.Grow(bufs.raw[:0], n)[:n]
		bufs.raw, err = snappy.Decode(bufs.raw, body)
	}
	if err != nil {
		http.Error(w, "backfill relay: snappy: "+err.Error(), http.StatusBadRequest)
		return
	}
	v2 := strings.Contains(req.Header.Get("Content-Type"), "io.prometheus.write.v2.Request")
	out := bufs.raw
	// Timestamps keep their varint length unless the shift moves them
	// across a power of 128: then the request is rebuilt.
	delta := -r.shift.Load()
	if !shiftInPlace(bufs.raw, v2, delta, &bufs.at) {
		bufs.out, err = ShiftTimestamps(bufs.out[:0], bufs.raw, v2, delta)
		if err != nil {
			http.Error(w, "backfill relay: "+err.Error(), http.StatusBadRequest)
			return
		}
		out = bufs.out
	}
	bufs.comp = slices.Grow(bufs.comp[:0], snappy.MaxEncodedLen(len(out)))
	comp := snappy.Encode(bufs.comp[:cap(bufs.comp)], out)
	up, err := http.NewRequestWithContext(req.Context(), http.MethodPost, r.upstream, bytes.NewReader(comp))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, h := range forwarded {
		if v := req.Header.Get(h); v != "" {
			up.Header.Set(h, v)
		}
	}
	resp, err := r.client.Do(up)
	if err != nil {
		// The queue retries on 5xx, as it would on a transport error.
		r.log.Debug("backfill relay: receiver unreachable", "err", err)
		http.Error(w, "backfill relay: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// relayBuf holds the buffers of one request.
type relayBuf struct {
	raw, out, comp []byte
	at             []patch
}

var relayBufs = sync.Pool{New: func() any { return new(relayBuf) }}

// Field numbers of the timestamps in remote-write messages
// (prompb/types.proto, prompb/io/prometheus/write/v2/types.proto).
var (
	// message Sample { double value = 1; int64 timestamp = 2; [2.0: int64 start_timestamp = 3;] }
	// message Exemplar { ...; int64 timestamp = 3; }
	// message Histogram { ...; int64 timestamp = 15; [2.0: int64 start_timestamp = 17;] }
	v1SampleSpec  = &msgSpec{ts: []protowire.Number{2}}
	v2SampleSpec  = &msgSpec{ts: []protowire.Number{2, 3}}
	exemplarSpec  = &msgSpec{ts: []protowire.Number{3}}
	histogramSpec = &msgSpec{ts: []protowire.Number{15, 17}}
	// 1.0: message TimeSeries { labels = 1; Sample samples = 2; Exemplar exemplars = 3; Histogram histograms = 4; }
	// message WriteRequest { TimeSeries timeseries = 1; ... }
	v1Spec = &msgSpec{sub: [maxSub]*msgSpec{1: {sub: [maxSub]*msgSpec{2: v1SampleSpec, 3: exemplarSpec, 4: histogramSpec}}}}
	// 2.0: message TimeSeries { labels_refs = 1; Sample samples = 2; Histogram histograms = 3; Exemplar exemplars = 4; Metadata metadata = 5; }
	// message Request { repeated string symbols = 4; TimeSeries timeseries = 5; }
	v2Spec = &msgSpec{sub: [maxSub]*msgSpec{5: {sub: [maxSub]*msgSpec{2: v2SampleSpec, 3: histogramSpec, 4: exemplarSpec}}}}
)

const maxSub = 6

// msgSpec names the int64 timestamp fields of a message and the
// sub-messages (by field number) to descend into.
type msgSpec struct {
	ts  []protowire.Number
	sub [maxSub]*msgSpec
}

func (s *msgSpec) isTS(n protowire.Number) bool {
	for _, x := range s.ts {
		if x == n {
			return true
		}
	}
	return false
}

func (s *msgSpec) child(n protowire.Number) *msgSpec {
	if n < maxSub {
		return s.sub[n]
	}
	return nil
}

// ShiftTimestamps appends to dst the remote-write request msg (1.0
// prometheus.WriteRequest, or 2.0 io.prometheus.write.v2.Request if v2)
// with delta milliseconds added to every non-zero sample, exemplar and
// histogram timestamp. Every other field is copied unchanged.
func ShiftTimestamps(dst, msg []byte, v2 bool, delta int64) ([]byte, error) {
	spec := v1Spec
	if v2 {
		spec = v2Spec
	}
	return shift(slices.Grow(dst, len(msg)+len(msg)/8), msg, spec, delta)
}

var errMalformed = errors.New("malformed remote-write request")

// shiftInPlace adds delta to the timestamps of msg where they are if none
// changes its varint length, and reports whether it did; it leaves msg
// unchanged otherwise (or if msg is malformed). at is scratch space.
func shiftInPlace(msg []byte, v2 bool, delta int64, at *[]patch) bool {
	spec := v1Spec
	if v2 {
		spec = v2Spec
	}
	*at = (*at)[:0]
	if !walkTimestamps(msg, spec, func(b []byte, v uint64) bool {
		*at = append(*at, patch{b, v})
		return true
	}, delta) {
		return false
	}
	var tmp [binary.MaxVarintLen64]byte
	for _, p := range *at {
		copy(p.b, protowire.AppendVarint(tmp[:0], p.v))
	}
	return true
}

// patch is a varint to overwrite and its new value.
type patch struct {
	b []byte
	v uint64
}

// walkTimestamps calls fn with the bytes of every non-zero timestamp
// varint of msg and its shifted value; it stops and returns false if a
// shifted value needs another length, fn returns false, or msg is
// malformed.
func walkTimestamps(msg []byte, spec *msgSpec, fn func(b []byte, v uint64) bool, delta int64) bool {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return false
		}
		msg = msg[n:]
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			return false
		}
		value := msg[:m]
		msg = msg[m:]
		switch {
		case typ == protowire.VarintType && spec.isTS(num):
			v, _ := protowire.ConsumeVarint(value)
			if v == 0 {
				continue
			}
			nv := uint64(int64(v) + delta)
			if protowire.SizeVarint(nv) != len(value) || !fn(value, nv) {
				return false
			}
		case typ == protowire.BytesType && spec.child(num) != nil:
			inner, _ := protowire.ConsumeBytes(value)
			if !walkTimestamps(inner, spec.child(num), fn, delta) {
				return false
			}
		}
	}
	return true
}

func shift(dst, msg []byte, spec *msgSpec, delta int64) ([]byte, error) {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return dst, errMalformed
		}
		field := msg
		msg = msg[n:]
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			return dst, errMalformed
		}
		value := msg[:m]
		msg = msg[m:]
		switch {
		case typ == protowire.VarintType && spec.isTS(num):
			v, _ := protowire.ConsumeVarint(value)
			if v != 0 {
				v = uint64(int64(v) + delta)
			}
			dst = protowire.AppendTag(dst, num, typ)
			dst = protowire.AppendVarint(dst, v)
		case typ == protowire.BytesType && spec.child(num) != nil:
			inner, _ := protowire.ConsumeBytes(value)
			// Timestamps keep their varint length unless delta moves
			// them across a power of 128; reserve the original length
			// and fix it up if the message grew or shrank.
			dst = protowire.AppendTag(dst, num, typ)
			at := len(dst)
			dst = protowire.AppendVarint(dst, uint64(len(inner)))
			start := len(dst)
			var err error
			if dst, err = shift(dst, inner, spec.child(num), delta); err != nil {
				return dst, err
			}
			if got := len(dst) - start; got != len(inner) {
				body := append([]byte(nil), dst[start:]...)
				dst = protowire.AppendVarint(dst[:at], uint64(got))
				dst = append(dst, body...)
			}
		default:
			dst = append(dst, field[:n+m]...)
		}
	}
	return dst, nil
}
