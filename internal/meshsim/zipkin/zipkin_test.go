package zipkin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/meshlens/meshlens/internal/meshsim/sim"
	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

func TestSendSpans(t *testing.T) {
	topo, err := topology.Generate(topology.Options{Seed: 1, Services: 10})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sim.New(sim.Options{Topology: topo, TraceSampling: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	spans := s.Step().Spans
	if len(spans) == 0 {
		t.Fatal("no spans")
	}
	var got []map[string]any
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // retried
			return
		}
		if r.URL.Path != "/api/v2/spans" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s", r.URL.Path, r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Error(err)
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	if err := (&Sender{URL: srv.URL + "/api/v2/spans"}).Send(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(spans) || calls != 2 {
		t.Fatalf("%d spans received of %d, %d calls", len(got), len(spans), calls)
	}
	hex32, hex16 := regexp.MustCompile(`^[0-9a-f]{32}$`), regexp.MustCompile(`^[0-9a-f]{16}$`)
	for _, sp := range got {
		if !hex32.MatchString(sp["traceId"].(string)) || !hex16.MatchString(sp["id"].(string)) {
			t.Fatalf("ids %v %v", sp["traceId"], sp["id"])
		}
		tags := sp["tags"].(map[string]any)
		for _, k := range []string{"istio.canonical_service", "istio.namespace", "istio.mesh_id", "http.status_code", "upstream_cluster", "response_flags"} {
			if _, ok := tags[k]; !ok {
				t.Fatalf("span without tag %s: %v", k, tags)
			}
		}
	}

	// 4xx is not retried.
	calls = 0
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.WriteHeader(http.StatusBadRequest)
	}))
	defer bad.Close()
	if err := (&Sender{URL: bad.URL}).Send(context.Background(), spans); err == nil || calls != 1 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}
