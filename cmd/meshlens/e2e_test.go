package main

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/golang/snappy"
	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// The fixture every protocol version writes: a counter with an exemplar, an
// integer native histogram and a float native histogram, two samples each.
var (
	counterLabels = labels.FromStrings("__name__", "istio_requests_total", "cluster", "c1", "destination_service", "reviews.default.svc.cluster.local", "response_code", "200", "reporter", "destination")
	intHistLabels = labels.FromStrings("__name__", "istio_request_duration_native", "cluster", "c1")
	fltHistLabels = labels.FromStrings("__name__", "istio_request_bytes_native", "cluster", "c1")
	intHist       = &histogram.Histogram{
		Count: 12, ZeroCount: 2, ZeroThreshold: 0.001, Sum: 18.4, Schema: 1,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}, {Offset: 1, Length: 2}},
		PositiveBuckets: []int64{1, 1, -1, 0},
		NegativeSpans:   []histogram.Span{{Offset: 0, Length: 2}},
		NegativeBuckets: []int64{2, 1},
	}
	fltHist = &histogram.FloatHistogram{
		Count: 10.5, ZeroCount: 0.5, ZeroThreshold: 0.001, Sum: 33.2, Schema: 0,
		PositiveSpans:   []histogram.Span{{Offset: 1, Length: 3}},
		PositiveBuckets: []float64{2, 5, 3},
	}
	traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
)

func TestRemoteWriteRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proto remoteapi.WriteMessageType
	}{
		{"1.0", remoteapi.WriteV1MessageType},
		{"2.0", remoteapi.WriteV2MessageType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, "", "")
			t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
			ts := []int64{t0.UnixMilli(), t0.Add(15 * time.Second).UnixMilli()}

			var body []byte
			if tc.proto == remoteapi.WriteV1MessageType {
				body = fixtureV1(t, ts)
			} else {
				body = fixtureV2(t, ts)
			}
			client, err := remote.NewWriteClient("test", &remote.ClientConfig{
				URL:           mustURL(t, s.URL+"/api/v1/write"),
				Timeout:       model.Duration(10 * time.Second),
				WriteProtoMsg: tc.proto,
			})
			if err != nil {
				t.Fatal(err)
			}
			stats, err := client.Store(context.Background(), body, 0)
			if err != nil {
				t.Fatalf("store: %v", err)
			}
			if tc.proto == remoteapi.WriteV2MessageType {
				if stats.Samples != 2 || stats.Histograms != 4 || stats.Exemplars != 1 {
					t.Errorf("2.0 written stats = %+v, want 2 samples, 4 histograms, 1 exemplar", stats)
				}
			}

			assertQueryAPI(t, s, t0, ts)
			for _, rt := range []prompb.ReadRequest_ResponseType{prompb.ReadRequest_SAMPLES, prompb.ReadRequest_STREAMED_XOR_CHUNKS} {
				assertRemoteRead(t, s, rt, ts)
			}
		})
	}
}

func fixtureV1(t *testing.T, ts []int64) []byte {
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{
				Labels:    prompb.FromLabels(counterLabels, nil),
				Samples:   []prompb.Sample{{Timestamp: ts[0], Value: 10}, {Timestamp: ts[1], Value: 25}},
				Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: traceID}}, Value: 0.25, Timestamp: ts[1]}},
			},
			{
				Labels:     prompb.FromLabels(intHistLabels, nil),
				Histograms: []prompb.Histogram{prompb.FromIntHistogram(ts[0], intHist), prompb.FromIntHistogram(ts[1], intHist)},
			},
			{
				Labels:     prompb.FromLabels(fltHistLabels, nil),
				Histograms: []prompb.Histogram{prompb.FromFloatHistogram(ts[0], fltHist), prompb.FromFloatHistogram(ts[1], fltHist)},
			},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "istio_requests_total", Help: "Requests.", Unit: ""}},
	}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

func fixtureV2(t *testing.T, ts []int64) []byte {
	st := writev2.NewSymbolTable()
	req := &writev2.Request{
		Timeseries: []writev2.TimeSeries{
			{
				LabelsRefs: st.SymbolizeLabels(counterLabels, nil),
				Samples:    []writev2.Sample{{Timestamp: ts[0], Value: 10}, {Timestamp: ts[1], Value: 25}},
				Exemplars:  []writev2.Exemplar{{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("trace_id", traceID), nil), Value: 0.25, Timestamp: ts[1]}},
				Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: st.Symbolize("Requests.")},
			},
			{
				LabelsRefs: st.SymbolizeLabels(intHistLabels, nil),
				Histograms: []writev2.Histogram{writev2.FromIntHistogram(0, ts[0], intHist), writev2.FromIntHistogram(0, ts[1], intHist)},
			},
			{
				LabelsRefs: st.SymbolizeLabels(fltHistLabels, nil),
				Histograms: []writev2.Histogram{writev2.FromFloatHistogram(0, ts[0], fltHist), writev2.FromFloatHistogram(0, ts[1], fltHist)},
			},
		},
	}
	req.Symbols = st.Symbols()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

// assertQueryAPI reads the fixture back through client_golang's API client.
func assertQueryAPI(t *testing.T, s *testServer, t0 time.Time, ts []int64) {
	t.Helper()
	c, err := promapi.NewClient(promapi.Config{Address: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	api := promv1.NewAPI(c)
	ctx := context.Background()
	at := time.UnixMilli(ts[1])

	v, _, _, err := api.Query(ctx, `istio_requests_total{cluster="c1"}`, at)
	if err != nil {
		t.Fatal(err)
	}
	vec := v.(model.Vector)
	if len(vec) != 1 || vec[0].Value != 25 || vec[0].Metric["destination_service"] != "reviews.default.svc.cluster.local" || len(vec[0].Metric) != counterLabels.Len() {
		t.Errorf("instant query = %v, want the counter at 25 with all its labels", vec)
	}

	r, _, _, err := api.QueryRange(ctx, `istio_requests_total`, promv1.Range{Start: t0, End: at, Step: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := r.(model.Matrix)
	if len(m) != 1 || len(m[0].Values) != 2 || m[0].Values[0].Value != 10 || m[0].Values[1].Value != 25 {
		t.Errorf("range query = %v, want [10 25]", m)
	}

	v, _, _, err = api.Query(ctx, `istio_request_duration_native`, at)
	if err != nil {
		t.Fatal(err)
	}
	vec = v.(model.Vector)
	if len(vec) != 1 || vec[0].Histogram == nil || vec[0].Histogram.Count != 12 || vec[0].Histogram.Sum != 18.4 {
		t.Errorf("integer histogram = %v, want count 12 sum 18.4", vec)
	}
	v, _, _, err = api.Query(ctx, `histogram_count(istio_request_bytes_native)`, at)
	if err != nil {
		t.Fatal(err)
	}
	if vec = v.(model.Vector); len(vec) != 1 || vec[0].Value != 10.5 {
		t.Errorf("histogram_count(float histogram) = %v, want 10.5", vec)
	}

	ex, err := api.QueryExemplars(ctx, `istio_requests_total`, t0, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 1 || len(ex[0].Exemplars) != 1 || ex[0].Exemplars[0].Labels["trace_id"] != model.LabelValue(traceID) || ex[0].Exemplars[0].Value != 0.25 {
		t.Errorf("exemplars = %+v, want one with trace_id %s", ex, traceID)
	}

	series, _, _, err := api.Series(ctx, []string{`{cluster="c1"}`}, t0, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 3 {
		t.Errorf("series = %v, want 3", series)
	}
	vals, _, _, err := api.LabelValues(ctx, "__name__", nil, t0, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 3 {
		t.Errorf("__name__ values = %v, want 3 names", vals)
	}
	md, err := api.Metadata(ctx, "istio_requests_total", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := md["istio_requests_total"]; len(got) != 1 || got[0].Type != promv1.MetricTypeCounter || got[0].Help != "Requests." {
		t.Errorf("metadata = %+v, want counter \"Requests.\"", md)
	}
}

// assertRemoteRead reads the fixture back with Prometheus's remote-read client.
func assertRemoteRead(t *testing.T, s *testServer, rt prompb.ReadRequest_ResponseType, ts []int64) {
	t.Helper()
	c, err := remote.NewReadClient("test", &remote.ClientConfig{
		URL:                   mustURL(t, s.URL+"/api/v1/read"),
		Timeout:               model.Duration(10 * time.Second),
		ChunkedReadLimit:      1 << 20,
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{rt},
	})
	if err != nil {
		t.Fatal(err)
	}
	q, err := remote.ToQuery(ts[0], ts[1], []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "cluster", "c1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := c.Read(context.Background(), q, true)
	if err != nil {
		t.Fatalf("remote read %s: %v", rt, err)
	}
	got := map[string][]string{}
	for ss.Next() {
		series := ss.At()
		it := series.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			var v string
			switch vt {
			case chunkenc.ValFloat:
				_, f := it.At()
				v = model.SampleValue(f).String()
			case chunkenc.ValHistogram:
				_, h := it.AtHistogram(nil)
				v = h.String()
			case chunkenc.ValFloatHistogram:
				_, h := it.AtFloatHistogram(nil)
				v = h.String()
			}
			got[series.Labels().Get("__name__")] = append(got[series.Labels().Get("__name__")], v)
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"istio_requests_total":          {"10", "25"},
		"istio_request_duration_native": {intHist.String(), intHist.String()},
		"istio_request_bytes_native":    {fltHist.String(), fltHist.String()},
	}
	for name, w := range want {
		if g := got[name]; len(g) != len(w) || g[0] != w[0] || g[1] != w[1] {
			t.Errorf("remote read %s %s = %v, want %v", rt, name, g, w)
		}
	}
}

func mustURL(t *testing.T, s string) *config_util.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return &config_util.URL{URL: u}
}

func v1BodyFor(t *testing.T, ts ...prompb.TimeSeries) []byte {
	b, err := (&prompb.WriteRequest{Timeseries: ts}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}
