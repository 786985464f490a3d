package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"google.golang.org/protobuf/encoding/protowire"
)

// sink accepts remote-write requests and spans and discards them, so that
// `meshsim load` (or run and backfill) against it measures meshsim itself.
// It decodes nothing but the counts a 2.0 sender expects in the answer.
type sink struct {
	requests, bytes atomic.Int64
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.requests.Add(1)
	s.bytes.Add(int64(len(body)))
	switch {
	case strings.HasSuffix(r.URL.Path, "/v1/traces"):
		// An empty ExportTraceServiceResponse.
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	case strings.HasSuffix(r.URL.Path, "/spans"):
		w.WriteHeader(http.StatusAccepted)
	default:
		if strings.Contains(r.Header.Get("Content-Type"), "io.prometheus.write.v2.Request") {
			// A 2.0 sender counts what the receiver says it wrote.
			samples, histograms, exemplars, err := countV2(body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(samples))
			w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", strconv.Itoa(histograms))
			w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", strconv.Itoa(exemplars))
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// countV2 counts the samples, histograms and exemplars of a snappy-framed
// io.prometheus.write.v2.Request:
//
//	message Request { repeated TimeSeries timeseries = 5; ... }
//	message TimeSeries { repeated Sample samples = 2; repeated Histogram histograms = 3;
//	  repeated Exemplar exemplars = 4; ... }
func countV2(body []byte) (samples, histograms, exemplars int, err error) {
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("snappy: %w", err)
	}
	bad := errors.New("malformed io.prometheus.write.v2.Request")
	fields := func(b []byte, fn func(protowire.Number, []byte)) error {
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return bad
			}
			b = b[n:]
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return bad
			}
			if typ == protowire.BytesType {
				v, _ := protowire.ConsumeBytes(b[:m])
				fn(num, v)
			}
			b = b[m:]
		}
		return nil
	}
	var inner error
	err = fields(raw, func(num protowire.Number, ts []byte) {
		if num != 5 {
			return
		}
		if e := fields(ts, func(num protowire.Number, _ []byte) {
			switch num {
			case 2:
				samples++
			case 3:
				histograms++
			case 4:
				exemplars++
			}
		}); e != nil {
			inner = e
		}
	})
	return samples, histograms, exemplars, errors.Join(err, inner)
}

func (m *Main) runSink(ctx context.Context, args []string) error {
	fs, lvl := m.newFlagSet("sink")
	listen := fs.String("listen", "127.0.0.1:9299", "address to listen on")
	if err := m.parse(fs, lvl, args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	s := &sink{}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	m.Logger.Info("discarding remote write and spans (/api/v2/spans answers 202, /v1/traces 200, other paths 204)", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	m.Logger.Info("sink stopped", "requests", s.requests.Load(), "bytes", s.bytes.Load())
	return nil
}
