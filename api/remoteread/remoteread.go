// Package remoteread serves Prometheus remote read (POST /api/v1/read), a
// query-side handler beside the HTTP API: SAMPLES and STREAMED_XOR_CHUNKS
// answers over any storage.SampleAndChunkQueryable.
package remoteread

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
)

// Options configures remote read. Zero SampleLimit or ConcurrentLimit
// means no limit; MaxBytesInFrame must be positive.
type Options struct {
	// SampleLimit is the most samples a SAMPLES-type answer may hold.
	SampleLimit int
	// ConcurrentLimit is how many remote read requests run at once.
	ConcurrentLimit int
	// MaxBytesInFrame bounds each frame of a STREAMED_XOR_CHUNKS answer.
	MaxBytesInFrame int
}

// NewHandler returns the handler for POST /api/v1/read. It is Prometheus's
// own remote-read handler, so both response types (SAMPLES and
// STREAMED_XOR_CHUNKS), content negotiation, limits and errors are exactly
// Prometheus's. The request body is bounded (32 MiB compressed and decoded)
// before anything is allocated for it.
func NewHandler(logger *slog.Logger, reg prometheus.Registerer, q storage.SampleAndChunkQueryable, o Options) http.Handler {
	noExternalLabels := func() promconfig.Config { return promconfig.Config{} }
	limit := o.ConcurrentLimit
	if limit <= 0 {
		limit = 1 << 30
	}
	return checkMatchers(remote.NewReadHandler(logger, reg, q, noExternalLabels, o.SampleLimit, limit, o.MaxBytesInFrame))
}

// maxBody is the most bytes Prometheus's handler reads of a request.
const maxBody = 32 << 20

// checkMatchers answers 400 for a request whose queries hold a matcher
// that is not one (an unknown type, a regular expression that does not
// compile), which Prometheus's handler finds only while querying and
// answers 500; other requests go on to next with their body as it came.
func checkMatchers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		req, err := remote.DecodeReadRequest(r)
		if err == nil {
			for _, q := range req.Queries {
				if _, err := remote.FromLabelMatchers(q.Matchers); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
			}
		}
		// Undecodable bodies get Prometheus's own answer.
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}
