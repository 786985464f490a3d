package main

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestAPIMetrics checks /metrics: meshlens's own metrics with HELP and TYPE,
// then the TSDB's; gauges typed as gauges; the request duration as a
// histogram with le buckets; each family once, although two servers run in
// this process.
func TestAPIMetrics(t *testing.T) {
	s := startServer(t, "", "")
	other := startServer(t, "", "")
	for _, srv := range []*testServer{s, other} {
		if code, _ := srv.get(t, "/api/v1/query?query=1"); code != 200 {
			t.Fatalf("query: %d", code)
		}
	}
	code, body := s.get(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err) // a family twice is an error too
	}
	for name, want := range map[string]string{
		"meshlens_build_info":                     "GAUGE",
		"meshlens_remote_write_requests_inflight": "GAUGE",
		"meshlens_remote_write_received_total":    "COUNTER",
		"meshlens_http_requests_total":            "COUNTER",
		"meshlens_http_request_duration_seconds":  "HISTOGRAM",
		"meshlens_traces_received_spans_total":    "COUNTER",
		"prometheus_tsdb_head_series":             "GAUGE",
		"go_goroutines":                           "GAUGE",
	} {
		f, ok := families[name]
		if !ok {
			t.Errorf("/metrics lacks %s", name)
			continue
		}
		if got := f.GetType().String(); got != want {
			t.Errorf("%s has type %s, want %s", name, got, want)
		}
	}
	if bi := families["meshlens_build_info"]; bi != nil {
		labels := map[string]string{}
		for _, l := range bi.Metric[0].Label {
			labels[l.GetName()] = l.GetValue()
		}
		if len(bi.Metric) != 1 || labels["version"] != Version || labels["goversion"] == "" {
			t.Errorf("meshlens_build_info = %v", bi.Metric)
		}
	}
	if h := families["meshlens_http_request_duration_seconds"]; h != nil {
		for _, m := range h.Metric {
			if len(m.GetHistogram().GetBucket()) == 0 {
				t.Errorf("meshlens_http_request_duration_seconds%v has no le buckets", m.Label)
			}
		}
	}
	if strings.Contains(body, "vmrange") {
		t.Errorf("/metrics still has vmrange buckets")
	}
	// meshlens's own come first, the Prometheus client's after.
	if own, tsdb := strings.Index(body, "meshlens_build_info"), strings.Index(body, "prometheus_tsdb_head_series"); own < 0 || tsdb < own {
		t.Errorf("meshlens's metrics at %d, the TSDB's at %d: want meshlens's first", own, tsdb)
	}
}
