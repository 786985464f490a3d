package remotewrite

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/meshlens/meshlens/remotewrite/decode"
	"github.com/meshlens/meshlens/remotewrite/internal/writetest"
)

var benchLimits = WriteOptions{Limits: decode.Limits{MaxBodyBytes: 32 << 20, MaxDecodedBytes: 32 << 20}, MaxInflight: 4}

// BenchmarkIngest measures the whole handler (decode, validate, append,
// commit to the WAL) per sample into a real TSDB whose head already holds
// the series, as in steady state: 100K active series, 2,000 per request.
// Run it with -benchtime 900x or less (20 prepared rounds).
func BenchmarkIngest(b *testing.B) {
	const nSeries, perReq = 100000, 2000
	series := writetest.IstioSeries(nSeries)
	for _, p := range []struct {
		name, ct string
		enc      func(testing.TB, []labels.Labels, int, int) [][]byte
	}{{"1.0", ctV1, writetest.RequestsV1}, {"2.0", ctV2, writetest.RequestsV2}} {
		b.Run(p.name, func(b *testing.B) {
			const rounds = 20
			reqs := p.enc(b, series, perReq, rounds)
			db := openDB(b)
			h := NewWriteHandler(slog.New(slog.DiscardHandler), db, NewMetadataStore(), benchLimits)
			perRound := nSeries / perReq
			for _, body := range reqs[:perRound] { // create the series
				if w := post(h, p.ct, "", body); w.Code != http.StatusNoContent {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			b.ReportAllocs()
			i := perRound
			for b.Loop() {
				if i == len(reqs) {
					b.Fatalf("ran past the %d prepared rounds; use -benchtime %dx or less", rounds, len(reqs)-perRound)
				}
				r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(reqs[i]))
				r.Header.Set("Content-Type", p.ct)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusNoContent {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perReq), "ns/sample")
		})
	}
}
