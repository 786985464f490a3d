package scenario

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
)

const good = `
name: t
topology: {seed: 1, services: 30, clusters: 2}
faults:
  - kind: latency
    service: config
    start: 5m
    factor: 3
expect:
  alerts:
    - alertname: IstioHighRequestLatency
      labels: {destination_service_name: config}
`

func TestParse(t *testing.T) {
	s, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s.Interval.D().Seconds() != 15 || s.Duration.D().Minutes() != 30 || s.Faults[0].Factor != 3 {
		t.Fatalf("%+v", s)
	}
	f := &s.Faults[0]
	if f.Active(0) || !f.Active(f.Start.D()) {
		t.Fatal("Active")
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", strings.Replace(good, "factor: 3", "factr: 3", 1), "field factr not found"},
		{"unknown kind", strings.Replace(good, "kind: latency", "kind: slowness", 1), `unknown kind "slowness"`},
		{"missing service", strings.Replace(good, "service: config", "", 1), "service is required"},
		{"field of another kind", strings.Replace(good, "factor: 3", "factor: 3\n    days: 2", 1), "days does not apply"},
		{"bad duration", strings.Replace(good, "start: 5m", "start: 5 minutes", 1), `unknown unit " minutes"`},
		{"start after end", strings.Replace(good, "start: 5m", "start: 2h", 1), "not before the end"},
		{"no expectation", strings.Split(good, "expect:")[0], "list the alerts"},
		{"rate out of range", strings.Replace(good, "kind: latency\n    service: config\n    start: 5m\n    factor: 3", "kind: error_rate\n    service: config\n    rate: 2", 1), "rate 2 out of range"},
		{"two documents", good + "---\nname: x\n", "more than one YAML document"},
		{"empty", "", "empty file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestBind(t *testing.T) {
	topo, err := topology.Generate(topology.Options{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"service: config", "service: nosuch", `service "nosuch" not in the topology`},
		{"service: config", "service: config\n    from: user", "user does not call config"},
		{"service: config", "service: config\n    cluster: mars", `cluster "mars" not in the topology`},
	} {
		s, err := Parse([]byte(strings.Replace(good, tc.from, tc.to, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Bind(topo); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("err %v, want %q", err, tc.want)
		}
	}
}
