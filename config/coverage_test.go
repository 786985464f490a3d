package config

import (
	"testing"
	"time"
)

// TestTraceCoverageConfig: the coverage series are on by default, and a
// file that turns them off or sets one field keeps the other defaults.
func TestTraceCoverageConfig(t *testing.T) {
	d := Default().Traces.Coverage
	if !d.Enabled || d.Interval != Duration(time.Minute) || d.Lag != Duration(time.Minute) || d.MaxTraces != 10000 || d.Selectors != nil {
		t.Errorf("defaults %+v", d)
	}
	off, err := Load([]byte("traces:\n  coverage:\n    enabled: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := off.Traces.Coverage; c.Enabled || c.Interval != d.Interval || c.Lag != d.Lag {
		t.Errorf("enabled: false: %+v", c)
	}
	full, err := LoadFile("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c := full.Traces.Coverage; c.Interval != Duration(30*time.Second) || c.Lag != Duration(2*time.Minute) || c.MaxTraces != 5000 || len(c.Selectors) != 1 {
		t.Errorf("full.good.yml: %+v", c)
	}
}
