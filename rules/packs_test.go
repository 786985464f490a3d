package rules

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/meshlens/meshlens/rules/packs"
	"github.com/meshlens/meshlens/rules/ruletest"
)

// TestPackUnitTests runs the unit tests of every built-in pack (promtool's
// rule-test format, rules/packs/testdata) as `meshlens rules test` runs them.
func TestPackUnitTests(t *testing.T) {
	files, err := filepath.Glob("packs/testdata/*_test.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no pack tests: %v", err)
	}
	opts := TestOptions(parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var out bytes.Buffer
			failed, err := ruletest.Test(context.Background(), &out, opts, f)
			if err != nil || failed > 0 {
				t.Errorf("%d failed, err %v:\n%s", failed, err, out.String())
			}
		})
	}
}

// TestEveryPackIsTested checks each pack has a unit-test file and passes
// `meshlens rules check`.
func TestEveryPackIsTested(t *testing.T) {
	opts := TestOptions(parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, name := range packs.Names() {
		if m, _ := filepath.Glob(filepath.Join("packs", "testdata", name+"_test.yml")); len(m) == 0 {
			t.Errorf("pack %s has no packs/testdata/%s_test.yml", name, name)
		}
		var out bytes.Buffer
		if bad, err := ruletest.Check(&out, opts, "packs/"+name+".yml"); bad > 0 || err != nil {
			t.Errorf("check packs/%s.yml: %d bad, %v:\n%s", name, bad, err, out.String())
		}
	}
}
