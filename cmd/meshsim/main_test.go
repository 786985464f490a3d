package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/golang/snappy"

	"github.com/meshlens/meshlens/cmd/meshsim/rw"
)

func runMain(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errOut}
	err := m.Run(context.Background(), args)
	return out.String(), errOut.String(), err
}

type receiver struct {
	mu        sync.Mutex
	status    int
	calls     int
	samples   int
	exemplars int
	last      map[string]int64
	bad       string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls++
	if rc.status != 0 {
		w.WriteHeader(rc.status)
		return
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		rc.bad = err.Error()
		return
	}
	series, err := rw.Decode(raw, r.Header.Get("Content-Type"))
	if err != nil {
		rc.bad = err.Error()
		return
	}
	for _, s := range series {
		for _, ts := range s.T {
			if prev, ok := rc.last[s.Labels]; ok && ts <= prev {
				rc.bad = "out of order: " + s.Labels
			}
			rc.last[s.Labels] = ts
			rc.samples++
		}
		for _, e := range s.Exemplars {
			if !strings.Contains(e, "trace_id=") {
				rc.bad = "exemplar without trace_id: " + e
			}
			rc.exemplars++
		}
	}
	w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", "1")
	w.WriteHeader(http.StatusNoContent)
}

func TestBackfill(t *testing.T) {
	for _, proto := range []string{"1.0", "2.0"} {
		t.Run(proto, func(t *testing.T) {
			rc := &receiver{last: map[string]int64{}}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			_, _, err := runMain(t, "backfill", "--url", srv.URL+"/api/v1/write", "--protocol", proto, "--hours", "0.05",
				"--services", "10", "--progress", "0", "--trace-sampling", "0.05")
			if err != nil {
				t.Fatal(err)
			}
			if rc.bad != "" {
				t.Fatal(rc.bad)
			}
			if rc.samples < 10000 || rc.exemplars == 0 {
				t.Fatalf("%d samples, %d exemplars", rc.samples, rc.exemplars)
			}
		})
	}
}

func TestBackfillNoRetryOn4xx(t *testing.T) {
	rc := &receiver{status: http.StatusBadRequest}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	_, _, err := runMain(t, "backfill", "--url", srv.URL, "--hours", "0.01", "--services", "5", "--progress", "0",
		"--shards", "1", "--max-samples-per-send", "100000", "--log-level", "error")
	if err == nil || !strings.Contains(err.Error(), "dropped") {
		t.Fatalf("err %v", err)
	}
	// 0.01h = 2 steps, 2 clusters, one request each: no retries.
	if rc.calls != 4 {
		t.Fatalf("%d calls, want 4", rc.calls)
	}
}

func TestTopologyJSON(t *testing.T) {
	out, _, err := runMain(t, "topology", "--json", "--services", "12", "--seed", "5")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Services []struct{ Name string }  `json:"services"`
		Edges    []struct{ From, To int } `json:"edges"`
		Series   []struct {
			Total int `json:"total_series"`
		} `json:"series_per_cluster"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Services) != 13 || len(v.Edges) == 0 || len(v.Series) != 2 || v.Series[0].Total == 0 {
		t.Fatalf("%+v", v)
	}
	text, _, err := runMain(t, "topology", "--services", "12", "--seed", "5")
	if err != nil || !strings.Contains(text, "longest call chain") {
		t.Fatalf("%v\n%s", err, text)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"load"}, "--url"},
		{[]string{"load", "--url", "http://x", "--protocol", "3"}, "unknown remote-write protocol"},
		{[]string{"backfill", "--url", "http://x"}, "--hours must be positive"},
		{[]string{"topology", "--services", "20000"}, "services 20000 out of range"},
		{[]string{"run"}, "give --url, --listen or --traces-url"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"scenario", "testdata/nosuch.yaml"}, "no such file"},
		{[]string{"backfill", "--url", "http://x", "--hours", "1", "--scenario", "../../testdata/scenarios/latency.yaml", "--services", "5"}, "conflict with --scenario"},
	} {
		_, _, err := runMain(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestScenarioLibraryValid(t *testing.T) {
	out, _, err := runMain(t, "scenario", "../../testdata/scenarios/healthy-baseline.yaml", "../../testdata/scenarios/istiod-down.yaml")
	if err != nil || strings.Count(out, ": ok") != 2 {
		t.Fatalf("%v\n%s", err, out)
	}
}
