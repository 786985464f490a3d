package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// envelope is the Prometheus HTTP API answer.
type envelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

func TestAPIStatusCodesAndErrorTypes(t *testing.T) {
	s := startServer(t, "query:\n  max_samples: 1000\n", "")
	now := time.Now().UnixMilli()
	body := v1BodyFor(t, prompb.TimeSeries{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "mesh"}},
		Samples: []prompb.Sample{{Timestamp: now, Value: 1}},
	})
	resp, err := http.Post(s.URL+"/api/v1/write", "application/x-protobuf", strings.NewReader(string(body)))
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("write: %v %v", err, resp)
	}

	for _, c := range []struct {
		name, method, path string
		form               url.Values
		code               int
		errorType          string
	}{
		{"query GET", "GET", "/api/v1/query?query=up", nil, 200, ""},
		{"query form POST", "POST", "/api/v1/query", url.Values{"query": {"up"}}, 200, ""},
		{"query_range form POST", "POST", "/api/v1/query_range", url.Values{"query": {"up"}, "start": {"0"}, "end": {"60"}, "step": {"15"}}, 200, ""},
		{"series form POST", "POST", "/api/v1/series", url.Values{"match[]": {"up"}}, 200, ""},
		{"labels form POST", "POST", "/api/v1/labels", url.Values{"match[]": {"up"}}, 200, ""},
		{"label values with match and limit", "GET", "/api/v1/label/job/values?match[]=up&limit=1", nil, 200, ""},
		{"format_query", "GET", "/api/v1/format_query?query=sum(rate(x[5m]))by(job)", nil, 200, ""},
		{"runtimeinfo", "GET", "/api/v1/status/runtimeinfo", nil, 200, ""},
		{"tsdb status", "GET", "/api/v1/status/tsdb", nil, 200, ""},
		{"query_exemplars", "GET", "/api/v1/query_exemplars?query=up", nil, 200, ""},
		{"metadata", "GET", "/api/v1/metadata?limit=5", nil, 200, ""},
		{"parse error is bad_data", "GET", "/api/v1/query?query=up(", nil, 400, "bad_data"},
		{"missing step is bad_data", "GET", "/api/v1/query_range?query=up&start=0&end=1", nil, 400, "bad_data"},
		{"bad metadata limit is bad_data", "GET", "/api/v1/metadata?limit=x", nil, 400, "bad_data"},
		{"too many samples is execution", "GET", "/api/v1/query?query=count_over_time(vector(1)[1h:1s])", nil, 422, "execution"},
		{"flags are not served", "GET", "/api/v1/status/flags", nil, 404, ""},
		{"unknown endpoint", "GET", "/api/v1/nope", nil, 404, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var resp *http.Response
			var err error
			if c.method == "POST" {
				resp, err = http.PostForm(s.URL+c.path, c.form)
			} else {
				resp, err = http.Get(s.URL + c.path)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.code)
			}
			if c.code == 404 {
				return
			}
			var e envelope
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("not the API envelope: %v", err)
			}
			if c.code == 200 && e.Status != "success" {
				t.Errorf("status %q, want success", e.Status)
			}
			if c.errorType != "" && (e.Status != "error" || e.ErrorType != c.errorType || e.Error == "") {
				t.Errorf("got %+v, want errorType %s with a message", e, c.errorType)
			}
		})
	}

	t.Run("buildinfo has no features key", func(t *testing.T) {
		code, b := s.get(t, "/api/v1/status/buildinfo")
		var e envelope
		if err := json.Unmarshal([]byte(b), &e); code != 200 || err != nil {
			t.Fatalf("%d %s", code, b)
		}
		var data map[string]any
		json.Unmarshal(e.Data, &data)
		if _, ok := data["features"]; ok || data["version"] == "" {
			t.Errorf("buildinfo = %s, want a version and no features key", e.Data)
		}
	})
}

func TestQueryTimeoutIs503(t *testing.T) {
	s := startServer(t, "query:\n  timeout: 1ms\n", "")
	code, b := s.get(t, "/api/v1/query?query="+url.QueryEscape("count_over_time(vector(1)[30d:1s])"))
	var e envelope
	json.Unmarshal([]byte(b), &e)
	if code != 503 || e.ErrorType != "timeout" {
		t.Errorf("got %d %s, want 503 timeout", code, b)
	}
}

func TestLifecycleEndpoints(t *testing.T) {
	s := startServer(t, "remote_write:\n  max_request_bytes: 1MiB\n", "")
	for _, p := range []string{"/-/healthy", "/-/ready"} {
		if code, _ := s.get(t, p); code != 200 {
			t.Errorf("%s: %d, want 200", p, code)
		}
	}
	if code, b := s.get(t, "/metrics"); code != 200 || !strings.Contains(b, "meshlens_remote_write_rejected_samples_total") || !strings.Contains(b, "prometheus_tsdb_head_series") {
		t.Errorf("/metrics lacks meshlens's or the TSDB's metrics")
	}
	if code, b := s.get(t, "/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(b, "heap profile") {
		t.Errorf("/debug/pprof/heap: %d", code)
	}

	// A valid reload applies remote_write limits at once.
	big := make([]byte, 2<<20)
	if code := postRaw(t, s.URL+"/api/v1/write", big); code != 413 {
		t.Fatalf("2 MiB body under a 1 MiB limit: %d, want 413", code)
	}
	if err := os.WriteFile(s.ConfigFile, []byte("remote_write:\n  max_request_bytes: 4MiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Post(s.URL+"/-/reload", "", nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("reload: %v %v", err, resp)
	}
	if code := postRaw(t, s.URL+"/api/v1/write", big); code == 413 {
		t.Errorf("after raising the limit by reload a 2 MiB body still gets 413")
	}

	// An invalid file is refused and the running configuration stays.
	if err := os.WriteFile(s.ConfigFile, []byte("remote_write:\n  max_request_bytez: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(s.URL+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 500 {
		t.Errorf("bad reload: %d, want 500", resp.StatusCode)
	}
	if code := postRaw(t, s.URL+"/api/v1/write", big); code == 413 {
		t.Errorf("a refused reload changed the running limits")
	}
	var e envelope
	_, b := s.get(t, "/api/v1/status/runtimeinfo")
	json.Unmarshal([]byte(b), &e)
	if !strings.Contains(string(e.Data), `"reloadConfigSuccess":false`) {
		t.Errorf("runtimeinfo after a failed reload = %s", e.Data)
	}
}

func TestBadConfigStopsStartup(t *testing.T) {
	m := NewMain()
	m.Listen = "127.0.0.1:0"
	m.DataDir = t.TempDir()
	m.ConfigFile = m.DataDir + "/bad.yml"
	os.WriteFile(m.ConfigFile, []byte("query:\n  max_concurrency: -1\n"), 0o644)
	err := m.Open()
	if err == nil {
		m.Close()
		t.Fatal("started with an invalid configuration")
	}
	if !strings.Contains(err.Error(), "query.max_concurrency") || !strings.Contains(err.Error(), "bad.yml") {
		t.Errorf("error %q names neither the field nor the file", err)
	}
}

func postRaw(t *testing.T, url string, body []byte) int {
	t.Helper()
	resp, err := http.Post(url, "application/x-protobuf", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
