package remotewrite

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/meshlens/meshlens/remotewrite/decode"
	"github.com/meshlens/meshlens/remotewrite/internal/writetest"
)

const (
	ctV1 = "application/x-protobuf;proto=prometheus.WriteRequest"
	ctV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
)

var testLimits = WriteOptions{Limits: decode.Limits{MaxBodyBytes: 1 << 20, MaxDecodedBytes: 1 << 20}, MaxInflight: 4}

func openDB(t testing.TB) *promtsdb.DB {
	t.Helper()
	db, err := promtsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, promtsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// series builds a 1.0 series from alternating names and values, unsorted and
// invalid ones included, with one sample per timestamp.
var series = writetest.Series

func v1Body(t testing.TB, ts ...prompb.TimeSeries) []byte {
	b, err := (&prompb.WriteRequest{Timeseries: ts}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

// v2Body encodes 1.0-style series as a 2.0 request, keeping label order.
func v2Body(t testing.TB, ts ...prompb.TimeSeries) []byte {
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for _, s := range ts {
		out := writev2.TimeSeries{}
		for _, l := range s.Labels {
			out.LabelsRefs = append(out.LabelsRefs, st.Symbolize(l.Name), st.Symbolize(l.Value))
		}
		for _, smp := range s.Samples {
			out.Samples = append(out.Samples, writev2.Sample{Timestamp: smp.Timestamp, Value: smp.Value})
		}
		req.Timeseries = append(req.Timeseries, out)
	}
	req.Symbols = st.Symbols()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

func post(h http.Handler, ct, enc string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
	r.Header.Set("Content-Type", ct)
	if enc != "" {
		r.Header.Set("Content-Encoding", enc)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// samples returns the float values stored for a metric name.
func samples(t testing.TB, db storage.Queryable, name string) []float64 {
	t.Helper()
	q, err := db.Querier(0, time.Now().Add(time.Hour).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", name))
	var out []float64
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			_, v := it.At()
			out = append(out, v)
		}
	}
	return out
}

func TestWriteStatusCodes(t *testing.T) {
	now := time.Now().UnixMilli()
	good := func(name string) prompb.TimeSeries { return series(1, []int64{now}, "__name__", name, "cluster", "c1") }
	type tc struct {
		name     string
		prior    []prompb.TimeSeries // written first, must succeed
		ct, enc  string
		body     func(t testing.TB) []byte
		want     int
		wantBody string
		kept     string // a metric name that must be stored afterwards
	}
	cases := []tc{
		{name: "valid", ct: ctV1, body: func(t testing.TB) []byte { return v1Body(t, good("ok")) }, want: 204, kept: "ok"},
		{name: "valid without proto parameter", ct: "application/x-protobuf", body: func(t testing.TB) []byte { return v1Body(t, good("ok")) }, want: 204, kept: "ok"},
		{name: "unsupported content type", ct: "application/json", body: func(t testing.TB) []byte { return v1Body(t, good("ok")) }, want: 415},
		{name: "unsupported proto message", ct: "application/x-protobuf;proto=io.prometheus.write.v3.Request", body: func(t testing.TB) []byte { return v1Body(t, good("ok")) }, want: 415},
		{name: "unsupported encoding", ct: ctV1, enc: "gzip", body: func(t testing.TB) []byte { return v1Body(t, good("ok")) }, want: 415},
		{name: "body too large", ct: ctV1, body: func(t testing.TB) []byte { return make([]byte, 2<<20) }, want: 413},
		{name: "declared decoded length too large", ct: ctV1, body: func(testing.TB) []byte {
			// A snappy block whose header claims 1 GiB.
			return append([]byte{0x80, 0x80, 0x80, 0x80, 0x04}, make([]byte, 16)...)
		}, want: 400, wantBody: "max_decoded_bytes"},
		{name: "not snappy", ct: ctV1, body: func(testing.TB) []byte { return []byte("plain text, not snappy") }, want: 400},
		{name: "not protobuf", ct: ctV1, body: func(testing.TB) []byte { return snappy.Encode(nil, []byte{0xff, 0xff, 0xff}) }, want: 400},
		{name: "out of order", prior: []prompb.TimeSeries{series(1, []int64{now}, "__name__", "ooo")}, ct: ctV1,
			body: func(t testing.TB) []byte {
				return v1Body(t, series(2, []int64{now - 1000}, "__name__", "ooo"), good("ok"))
			}, want: 400, wantBody: "out_of_order=1", kept: "ok"},
		{name: "duplicate timestamp", prior: []prompb.TimeSeries{series(1, []int64{now}, "__name__", "dup")}, ct: ctV1,
			body: func(t testing.TB) []byte {
				return v1Body(t, series(2, []int64{now}, "__name__", "dup"), good("ok"))
			}, want: 400, wantBody: "duplicate_timestamp=1", kept: "ok"},
		{name: "too old", prior: []prompb.TimeSeries{series(1, []int64{now}, "__name__", "old")}, ct: ctV1,
			body: func(t testing.TB) []byte {
				return v1Body(t, series(1, []int64{now - 3*3600*1000, now - 3*3600*1000 + 1}, "__name__", "old2"), good("ok"))
			}, want: 400, wantBody: "too_old=2", kept: "ok"},
		{name: "too far in future", ct: ctV1,
			body: func(t testing.TB) []byte {
				return v1Body(t, series(1, []int64{now + 3600*1000}, "__name__", "future"), good("ok"))
			}, want: 400, wantBody: "too_far_in_future=1", kept: "ok"},
	}
	invalid := []struct {
		name, want string
		labels     []string
	}{
		{"no metric name", "no metric name", []string{"job", "x"}},
		{"empty label name", "empty label name", []string{"__name__", "bad", "", "x"}},
		{"duplicate label name", `duplicate label name "job"`, []string{"__name__", "bad", "job", "a", "job", "b"}},
		{"unsorted label names", `label names not sorted: "a" after "job"`, []string{"__name__", "bad", "job", "a", "a", "b"}},
		{"invalid UTF-8", "invalid UTF-8", []string{"__name__", "bad", "job", "\xff\xfe"}},
	}
	for _, inv := range invalid {
		for _, proto := range []struct {
			name, ct string
			enc      func(testing.TB, ...prompb.TimeSeries) []byte
		}{{"1.0", ctV1, v1Body}, {"2.0", ctV2, v2Body}} {
			inv, proto := inv, proto
			cases = append(cases, tc{
				name: proto.name + " " + inv.name, ct: proto.ct,
				body: func(t testing.TB) []byte {
					return proto.enc(t, good("before"), series(1, []int64{now}, inv.labels...), good("ok"))
				},
				want: 400, wantBody: inv.want, kept: "ok",
			})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openDB(t)
			h := NewWriteHandler(slog.New(slog.DiscardHandler), db, NewMetadataStore(), testLimits)
			if c.prior != nil {
				if w := post(h, ctV1, "", v1Body(t, c.prior...)); w.Code != 204 {
					t.Fatalf("prior write: %d %s", w.Code, w.Body)
				}
			}
			w := post(h, c.ct, c.enc, c.body(t))
			if w.Code != c.want {
				t.Fatalf("status = %d (%s), want %d", w.Code, strings.TrimSpace(w.Body.String()), c.want)
			}
			if !strings.Contains(w.Body.String(), c.wantBody) {
				t.Errorf("body %q does not contain %q", w.Body.String(), c.wantBody)
			}
			if c.kept != "" {
				if got := samples(t, db, c.kept); len(got) != 1 {
					t.Errorf("valid series %q: %d samples stored, want 1", c.kept, len(got))
				}
			}
			if c.want >= 400 && c.prior == nil && c.kept == "" {
				if got := samples(t, db, "ok"); len(got) != 0 {
					t.Errorf("refused request stored %d samples", len(got))
				}
			}
		})
	}
}

func TestWriteV2Headers(t *testing.T) {
	db := openDB(t)
	h := NewWriteHandler(slog.New(slog.DiscardHandler), db, NewMetadataStore(), testLimits)
	now := time.Now().UnixMilli()
	w := post(h, ctV2, "snappy", v2Body(t, series(1, []int64{now, now + 1}, "__name__", "a"), series(1, []int64{now}, "job", "no-name")))
	if w.Code != 400 {
		t.Fatalf("status %d, want 400", w.Code)
	}
	if got := w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"); got != "2" {
		t.Errorf("samples written header = %q, want 2", got)
	}
	if got := w.Header().Get("X-Prometheus-Remote-Write-Histograms-Written"); got != "0" {
		t.Errorf("histograms written header = %q, want 0", got)
	}
}

// failingDB fails every commit, as a full disk or a broken WAL would.
type failingDB struct{ storage.AppendableV2 }

func (f failingDB) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return failingApp{f.AppendableV2.AppenderV2(ctx).(storage.ExemplarAppenderV2)}
}

type failingApp struct{ storage.ExemplarAppenderV2 }

func (a failingApp) Commit() error {
	_ = a.ExemplarAppenderV2.Rollback()
	return errors.New("write to WAL: no space left on device")
}

func TestWriteStorageFailureIs5xx(t *testing.T) {
	db := openDB(t)
	h := NewWriteHandler(slog.New(slog.DiscardHandler), failingDB{db}, NewMetadataStore(), testLimits)
	w := post(h, ctV1, "snappy", v1Body(t, series(1, []int64{time.Now().UnixMilli()}, "__name__", "a")))
	if w.Code/100 != 5 {
		t.Fatalf("status %d, want 5xx so the sender retries", w.Code)
	}
	if !strings.Contains(w.Body.String(), "no space left") {
		t.Errorf("body %q does not say why", w.Body)
	}
}

// blockingDB holds appenders until released, to keep requests in flight.
type blockingDB struct {
	storage.AppendableV2
	entered chan struct{}
	release chan struct{}
}

func (b blockingDB) AppenderV2(ctx context.Context) storage.AppenderV2 {
	b.entered <- struct{}{}
	<-b.release
	return b.AppendableV2.AppenderV2(ctx)
}

func TestWriteOverloadIs429(t *testing.T) {
	db := blockingDB{AppendableV2: openDB(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	opts := testLimits
	opts.MaxInflight = 1
	h := NewWriteHandler(slog.New(slog.DiscardHandler), db, NewMetadataStore(), opts)
	body := v1Body(t, series(1, []int64{time.Now().UnixMilli()}, "__name__", "a"))
	first := make(chan int)
	go func() { first <- post(h, ctV1, "", body).Code }()
	<-db.entered
	w := post(h, ctV1, "", body)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Errorf("second request: status %d Retry-After %q, want 429 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
	close(db.release)
	if code := <-first; code != 204 {
		t.Errorf("first request: %d, want 204", code)
	}
	if w := post(h, ctV1, "", v1Body(t, series(1, []int64{time.Now().UnixMilli() + 1}, "__name__", "a"))); w.Code != 204 {
		t.Errorf("after the load passed: %d, want 204", w.Code)
	}
}

func TestWriteMethodNotAllowed(t *testing.T) {
	h := NewWriteHandler(slog.New(slog.DiscardHandler), openDB(t), NewMetadataStore(), testLimits)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/write", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", w.Code)
	}
}

// TestExemplarsInTheirOwnSeriesEntry sends what Prometheus's remote-write
// queue sends: a series' samples in one entry and its exemplars in another
// entry with the same labels and no samples. Both are stored.
func TestExemplarsInTheirOwnSeriesEntry(t *testing.T) {
	opts := promtsdb.DefaultOptions()
	opts.EnableExemplarStorage, opts.MaxExemplars = true, 100
	db, err := promtsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := NewWriteHandler(slog.New(slog.DiscardHandler), db, NewMetadataStore(), testLimits)
	now := time.Now().UnixMilli()
	withSamples := series(3, []int64{now}, "__name__", "latency_bucket", "le", "100")
	exemplarOnly := prompb.TimeSeries{
		Labels:    withSamples.Labels,
		Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "4bf92f3577b34da6a3ce929d0e0e4736"}}, Value: 87, Timestamp: now}},
	}
	orphan := series(0, nil, "__name__", "never_sampled")
	orphan.Exemplars = exemplarOnly.Exemplars

	if w := post(h, ctV1, "", v1Body(t, withSamples, exemplarOnly, orphan)); w.Code != http.StatusNoContent {
		t.Fatalf("status %d %s, want 204", w.Code, w.Body)
	}
	if got := samples(t, db, "latency_bucket"); len(got) != 1 || got[0] != 3 {
		t.Errorf("samples = %v, want [3]", got)
	}
	eq, err := db.ExemplarQuerier(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	res, err := eq.Select(0, now+1, []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].SeriesLabels.Get("__name__") != "latency_bucket" || len(res[0].Exemplars) != 1 || res[0].Exemplars[0].Value != 87 {
		t.Errorf("exemplars = %+v, want the one of latency_bucket (none for a series without samples)", res)
	}
}
