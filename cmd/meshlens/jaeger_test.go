package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/meshlens/meshlens/internal/peers"
)

// teeOTLP passes every OTLP/HTTP request to meshlens and to Jaeger and
// records the trace ids both accepted.
type teeOTLP struct {
	targets []string

	mu  sync.Mutex
	ids map[string]bool
}

func (tee *teeOTLP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, target := range tee.targets {
		resp, err := http.Post(target, r.Header.Get("Content-Type"), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			http.Error(w, fmt.Sprintf("%s: %d %s", target, resp.StatusCode, msg), resp.StatusCode)
			return
		}
	}
	tee.mu.Lock()
	rss := req.Traces().ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				tee.ids[spans.At(k).TraceID().String()] = true
			}
		}
	}
	tee.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	b, _ := ptraceotlp.NewExportResponse().MarshalProto()
	w.Write(b)
}

// jaegerTrace is the part of Jaeger's trace JSON both must agree on.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		TraceID       string `json:"traceID"`
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		StartTime int64 `json:"startTime"`
		Duration  int64 `json:"duration"`
		Tags      []struct {
			Key   string `json:"key"`
			Type  string `json:"type"`
			Value any    `json:"value"`
		} `json:"tags"`
		ProcessID string `json:"processID"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// spanFacts renders each span of a trace as one comparable line: id,
// operation, references, times, service and tags.
func (jt jaegerTrace) spanFacts() []string {
	var out []string
	for _, s := range jt.Spans {
		refs, _ := json.Marshal(s.References)
		tags, _ := json.Marshal(s.Tags)
		out = append(out, fmt.Sprintf("%s %q refs=%s start=%d dur=%d service=%q tags=%s",
			s.SpanID, s.OperationName, refs, s.StartTime, s.Duration, jt.Processes[s.ProcessID].ServiceName, tags))
	}
	sort.Strings(out)
	return out
}

// getJaeger decodes the data of a Jaeger query API answer at url.
func getJaeger(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("GET %s: %v %s", url, err, body)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		t.Fatalf("GET %s data: %v", url, err)
	}
}

// TestSameAnswersAsJaeger sends the same simulated Istio spans (OTLP/HTTP)
// to meshlens and to a real Jaeger v1.75.0 with memory storage: Jaeger's
// query API must answer the same from both — every trace by id with the
// same spans, parents, times, services and tags, and the same service and
// operation lists — so Grafana's Jaeger data source shows the same.
func TestSameAnswersAsJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Jaeger and meshsim; not in -short")
	}
	jaeger := peers.StartJaeger(t)
	meshsim := buildMeshsim(t)
	s := startServer(t, "", "")
	tee := &teeOTLP{targets: []string{s.URL + "/v1/traces", jaeger.OTLPHTTP}, ids: map[string]bool{}}
	proxy := httptest.NewServer(tee)
	defer proxy.Close()

	cmd := exec.Command(meshsim, "backfill", "--traces-url", proxy.URL+"/v1/traces", "--traces-format", "otlp",
		"--services", "4", "--clusters", "1", "--hours", "0.1", "--interval", "30s", "--trace-sampling", "0.02",
		"--end", time.Now().Format(time.RFC3339), "--progress", "0")
	cmd.Stdout, cmd.Stderr = testLog{t}, testLog{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshsim backfill: %v", err)
	}
	if len(tee.ids) < 10 {
		t.Fatalf("meshsim sent %d traces; the comparison needs more", len(tee.ids))
	}

	var ours, theirs []string
	getJaeger(t, s.URL+"/jaeger/api/services", &ours)
	getJaeger(t, jaeger.Query+"/api/services", &theirs)
	slices.Sort(ours)
	slices.Sort(theirs)
	if !slices.Equal(ours, theirs) {
		t.Errorf("services:\nmeshlens %v\njaeger   %v", ours, theirs)
	}
	for _, svc := range theirs {
		var o, j []string
		getJaeger(t, s.URL+"/jaeger/api/services/"+svc+"/operations", &o)
		getJaeger(t, jaeger.Query+"/api/services/"+svc+"/operations", &j)
		slices.Sort(o)
		slices.Sort(j)
		if !slices.Equal(o, j) {
			t.Errorf("operations of %s:\nmeshlens %v\njaeger   %v", svc, o, j)
		}
	}

	compared := 0
	for id := range tee.ids {
		var o, j []jaegerTrace
		getJaeger(t, s.URL+"/jaeger/api/traces/"+id, &o)
		getJaeger(t, jaeger.Query+"/api/traces/"+id, &j)
		if len(o) != 1 || len(j) != 1 {
			t.Fatalf("trace %s: meshlens answered %d traces, Jaeger %d", id, len(o), len(j))
		}
		if o[0].TraceID != j[0].TraceID {
			t.Errorf("trace id printed %s by meshlens, %s by Jaeger", o[0].TraceID, j[0].TraceID)
		}
		of, jf := o[0].spanFacts(), j[0].spanFacts()
		if !slices.Equal(of, jf) {
			t.Errorf("trace %s differs:\nmeshlens:\n  %s\njaeger:\n  %s", id, bytes.Join(toBytes(of), []byte("\n  ")), bytes.Join(toBytes(jf), []byte("\n  ")))
			if compared++; compared > 3 {
				t.FailNow()
			}
			continue
		}
		compared++
	}
	t.Logf("%d traces compared, %d services", compared, len(theirs))
}

func toBytes(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}
