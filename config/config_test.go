package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yml")
	if len(files) == 0 {
		t.Fatal("no good fixtures")
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			if _, err := LoadFile(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBadFiles checks each bad fixture is refused with the message its first
// line names, and that the message names the file.
func TestBadFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) == 0 {
		t.Fatal("no bad fixtures")
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(b), "\n")
			want, ok := strings.CutPrefix(first, "# error: ")
			if !ok {
				t.Fatalf("first line must be '# error: <expected message>'")
			}
			_, err = LoadFile(f)
			if err == nil {
				t.Fatal("loaded without error")
			}
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), f) {
				t.Errorf("error %q does not contain %q and the file name", err, want)
			}
		})
	}
}

func TestFileOverridesDefaults(t *testing.T) {
	cfg, err := LoadFile("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.TSDB.Retention != Duration(30*24*time.Hour) || cfg.RemoteWrite.MaxDecodedBytes != 64<<20 || cfg.Storage.TSDB.RetentionSize != 100<<30 ||
		cfg.Traces.Retention != Duration(3*24*time.Hour) || cfg.Traces.Forward.Headers["X-Scope-OrgID"] != "mesh" || cfg.Traces.OTLPGRPC.Address != "0.0.0.0:4317" ||
		cfg.Rules.AlertTraces != 3 || !slices.Equal(cfg.Traces.ExemplarTraceIDLabels, []string{"traceID"}) {
		t.Errorf("file values not applied: %+v", cfg)
	}
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	partial, err := Load([]byte("query:\n  timeout: 30s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if partial.Query.MaxSamples != d.Query.MaxSamples || partial.Query.Timeout != Duration(30*time.Second) {
		t.Errorf("a partial file must keep the other defaults: %+v", partial.Query)
	}
}
