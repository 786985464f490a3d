package remotewrite

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// FuzzWrite feeds arbitrary bodies to the write handler under both protocol
// versions: it must never panic and must answer with one of the documented
// status codes.
func FuzzWrite(f *testing.F) {
	now := time.Now().UnixMilli()
	valid := []prompb.TimeSeries{series(1, []int64{now}, "__name__", "a", "job", "x"), series(1, []int64{now}, "b", "y")}
	f.Add(false, v1Body(f, valid...))
	f.Add(true, v2Body(f, valid...))
	f.Add(false, []byte{})
	f.Add(true, snappy.Encode(nil, []byte{0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0x61}))
	f.Add(false, append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 1, 2, 3))

	db := openDB(f)
	h := NewWriteHandler(slog.New(slog.DiscardHandler), db, NewMetadataStore(), testLimits)
	f.Fuzz(func(t *testing.T, v2 bool, body []byte) {
		ct := ctV1
		if v2 {
			ct = ctV2
		}
		switch code := post(h, ct, "snappy", body).Code; code {
		case http.StatusNoContent, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d for a %d-byte body", code, len(body))
		}
	})
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
	h := NewReadHandler(slog.New(slog.DiscardHandler), nil, db, ReadOptions{SampleLimit: 1000, ConcurrentLimit: 2, MaxBytesInFrame: 1 << 20})
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
