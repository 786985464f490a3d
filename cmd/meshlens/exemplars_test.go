package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// exemplarResult is one series of /api/v1/query_exemplars.
type exemplarResult struct {
	SeriesLabels map[string]string `json:"seriesLabels"`
	Exemplars    []struct {
		Labels    map[string]string `json:"labels"`
		Value     string            `json:"value"`
		Timestamp float64           `json:"timestamp"`
	} `json:"exemplars"`
}

// TestExemplarsOutliveTheRing writes 3 hours of latency buckets with
// exemplars, some with a trace id and some without, some in series entries
// without samples as Prometheus sends them, to a node whose TSDB exemplar
// ring holds 20. /api/v1/query_exemplars over the whole range answers
// every exemplar with a trace id (and the ring's last ones without), and
// the same after a restart, after the exemplar blocks are cut and
// shipped, and from another node that has only the bucket (which holds
// the exemplars with a trace id).
func TestExemplarsOutliveTheRing(t *testing.T) {
	dir := t.TempDir()
	bucketDir := filepath.Join(dir, "a", "bucket")
	// A ring of 20 exemplars holds the last 20 only.
	const small = "storage:\n  tsdb:\n    max_exemplars: 20\n"
	if err := os.MkdirAll(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, small, filepath.Join(dir, "a"))

	end := time.Now().Truncate(time.Minute)
	start := end.Add(-3 * time.Hour)
	var series []prompb.TimeSeries
	withTrace := 0
	for i, le := range []string{"100", "+Inf"} {
		ls := []prompb.Label{{Name: "__name__", Value: "istio_request_duration_milliseconds_bucket"}, {Name: "destination_service_name", Value: "reviews"}, {Name: "le", Value: le}}
		var samples []prompb.Sample
		var inline, apart []prompb.Exemplar
		for k, at := 0, start; !at.After(end); k, at = k+1, at.Add(time.Minute) {
			samples = append(samples, prompb.Sample{Value: float64(k), Timestamp: at.UnixMilli()})
			e := prompb.Exemplar{Value: float64(10*i + k%50), Timestamp: at.UnixMilli()}
			switch k % 3 {
			case 0:
				e.Labels = []prompb.Label{{Name: "trace_id", Value: fmt.Sprintf("%032x", 1000*i+k)}}
				inline = append(inline, e)
				withTrace++
			case 1:
				e.Labels = []prompb.Label{{Name: "traceID", Value: fmt.Sprintf("%032x", 1000*i+k)}}
				apart = append(apart, e)
				withTrace++
			case 2:
				e.Labels = []prompb.Label{{Name: "pod", Value: "reviews-1"}}
				inline = append(inline, e)
			}
		}
		series = append(series, prompb.TimeSeries{Labels: ls, Samples: samples, Exemplars: inline})
		// Prometheus's queue sends exemplars in entries of their own.
		series = append(series, prompb.TimeSeries{Labels: ls, Exemplars: apart})
	}
	if code := postRaw(t, s.URL+"/api/v1/write", v1BodyFor(t, series...)); code != http.StatusNoContent {
		t.Fatalf("remote write: %d", code)
	}

	q := url.Values{"query": {`istio_request_duration_milliseconds_bucket{destination_service_name="reviews"}`},
		"start": {fmt.Sprint(start.Add(-time.Minute).Unix())}, "end": {fmt.Sprint(end.Add(time.Minute).Unix())}}
	path := "/api/v1/query_exemplars?" + q.Encode()
	var before []exemplarResult
	apiData(t, s, path, &before)
	if n := countExemplars(before, true); n != withTrace {
		t.Fatalf("%d exemplars with a trace id answered, %d written", n, withTrace)
	}
	if n := countExemplars(before, false) - withTrace; n == 0 || n > 20 {
		t.Fatalf("%d exemplars without a trace id answered, want the ring's (at most 20)", n)
	}
	check := func(s *testServer, when string, traceOnly bool) {
		t.Helper()
		var got []exemplarResult
		apiData(t, s, path, &got)
		want := before
		if traceOnly {
			want = onlyTraced(before)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %d exemplars (%d with a trace id), want %d (%d)", when,
				countExemplars(got, false), countExemplars(got, true), countExemplars(want, false), countExemplars(want, true))
		}
	}

	s.stop(t)
	s = startServer(t, small, filepath.Join(dir, "a"))
	check(s, "after a restart", false)

	if err := s.exemplars.Maintain(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	check(s, "after the cut and shipping", false)
	s.stop(t)
	s = startServer(t, small, filepath.Join(dir, "a"))
	check(s, "after the cut and a restart", false)
	s.stop(t)

	// Another node on the same bucket reads them from there.
	if err := os.MkdirAll(filepath.Join(dir, "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	b := startServer(t, fmt.Sprintf("storage:\n  bucket:\n    type: FILESYSTEM\n    config:\n      directory: %q\n", bucketDir), filepath.Join(dir, "b"))
	eventually(t, 30*time.Second, "exemplar blocks downloaded from the bucket", func() bool {
		var got []exemplarResult
		apiData(t, b, path, &got)
		return countExemplars(got, true) == withTrace
	})
	check(b, "from the bucket", true)
}

func traced(labels map[string]string) bool {
	return labels["trace_id"] != "" || labels["traceID"] != "" || labels["traceId"] != ""
}

func countExemplars(rs []exemplarResult, traceOnly bool) int {
	n := 0
	for _, r := range rs {
		for _, e := range r.Exemplars {
			if !traceOnly || traced(e.Labels) {
				n++
			}
		}
	}
	return n
}

func onlyTraced(rs []exemplarResult) []exemplarResult {
	var out []exemplarResult
	for _, r := range rs {
		c := r
		c.Exemplars = nil
		for _, e := range r.Exemplars {
			if traced(e.Labels) {
				c.Exemplars = append(c.Exemplars, e)
			}
		}
		if len(c.Exemplars) > 0 {
			out = append(out, c)
		}
	}
	return out
}
