package remoteread

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	promtsdb "github.com/prometheus/prometheus/tsdb"
)

func openDB(t testing.TB) *promtsdb.DB {
	t.Helper()
	db, err := promtsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, promtsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// FuzzRead feeds arbitrary bodies to the remote-read handler: no panic, and
// an undecodable request is a 400.
func FuzzRead(f *testing.F) {
	q := &prompb.ReadRequest{Queries: []*prompb.Query{{StartTimestampMs: 0, EndTimestampMs: 1000,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "a"}}}},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS}}
	b, err := q.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snappy.Encode(nil, b))
	f.Add([]byte{})
	f.Add(append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 1, 2, 3))

	db := openDB(f)
	h := NewHandler(slog.New(slog.DiscardHandler), nil, db, Options{SampleLimit: 1000, ConcurrentLimit: 2, MaxBytesInFrame: 1 << 20})
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/read", bytes.NewReader(body))
		r.Header.Set("Content-Encoding", "snappy")
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { defer close(done); h.ServeHTTP(w, r) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("no answer after 5s for body %x", body)
		}
		if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
			t.Fatalf("status %d (%s) for a %d-byte body", w.Code, w.Body, len(body))
		}
	})
}
