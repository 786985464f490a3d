package peers

import "testing"

// The build command and the cache rely on every peer having its own name,
// a version, and peers of one module sharing a module path.
func TestPeers(t *testing.T) {
	names := map[string]bool{}
	for _, p := range All {
		if names[p.Name] {
			t.Errorf("two peers named %q", p.Name)
		}
		names[p.Name] = true
		if p.Version() == "" || p.Version() == p.Package {
			t.Errorf("peer %s: no version in %q", p.Name, p.Package)
		}
	}
	cases := []struct {
		a, b Peer
		same bool
	}{
		{Prometheus, Promtool, true},
		{Alertmanager, Amtool, true},
		{Jaeger, Tracegen, true},
		{Prometheus, Alertmanager, false},
		{Jaeger, Versitygw, false},
	}
	for _, tc := range cases {
		if same := tc.a.ModulePath() == tc.b.ModulePath(); same != tc.same {
			t.Errorf("%s (%s) and %s (%s) in one module: %v, want %v", tc.a.Name, tc.a.ModulePath(), tc.b.Name, tc.b.ModulePath(), same, tc.same)
		}
	}
	if got, want := Jaeger.ModulePath(), "github.com/jaegertracing/jaeger"; got != want {
		t.Errorf("jaeger's module %q, want %q", got, want)
	}
}
