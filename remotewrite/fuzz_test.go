package remotewrite

import (
	"log/slog"
	"net/http"
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
