package ruletest

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/meshlens/meshlens/internal/peers"
)

// promtool runs the real promtool with args and returns its stdout and
// stderr interleaved, as a terminal shows them, and whether it exited 0.
func promtool(t *testing.T, bin string, args ...string) (string, bool) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.CommandContext(t.Context(), bin, args...)
	// One writer for both: the child gets a single pipe, so the order of
	// its writes survives.
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("promtool %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), err == nil
}

// normalize removes the differences between the reports that do not come
// from the rules: the Go package of the test file types in YAML errors and
// rulefmt's log lines.
func normalize(report string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(report, "\n") {
		if strings.Contains(line, "Multiple document yaml rules files are not supported") {
			continue
		}
		b.WriteString(strings.ReplaceAll(line, "in type main.", "in type ruletest."))
	}
	return b.String()
}

var testFiles = []string{
	"pass.test.yml",
	"fail.test.yml",
	"fuzzy.test.yml",
	"exact.test.yml",
	"badrules.test.yml",
	"unknownfield.test.yml",
	"experimental.test.yml",
}

// TestTestAgainstPromtool runs each test file through promtool and Test:
// both must agree on pass or fail, on the failing eval_time/alertname and
// expressions, and the reports must be the same text.
func TestTestAgainstPromtool(t *testing.T) {
	bin := peers.Need(t, peers.Promtool)
	for _, name := range testFiles {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", name)
			want, promtoolPass := promtool(t, bin, "test", "rules", file)

			var out bytes.Buffer
			failed, err := Test(t.Context(), &out, Options{}, file)
			pass := failed == 0 && err == nil
			if pass != promtoolPass {
				t.Errorf("Test: pass %v (%d failed, err %v); promtool: pass %v", pass, failed, err, promtoolPass)
			}
			if got, want := failingAlerts(out.String()), failingAlerts(want); !equalSets(got, want) {
				t.Errorf("failing tests: %q; promtool: %q", got, want)
			}
			if got, want := normalize(out.String()), normalize(want); got != want {
				t.Errorf("report differs from promtool's\n--- Test:\n%s\n--- promtool:\n%s", got, want)
			}
		})
	}

	t.Run("experimental functions enabled", func(t *testing.T) {
		file := "testdata/experimental.test.yml"
		want, promtoolPass := promtool(t, bin, "test", "rules", "--enable-feature=promql-experimental-functions", file)
		var out bytes.Buffer
		opts := Options{Parser: parser.NewParser(parser.Options{EnableExperimentalFunctions: true})}
		failed, err := Test(t.Context(), &out, opts, file)
		if pass := failed == 0 && err == nil; pass != promtoolPass || !pass {
			t.Errorf("Test: pass %v (%d failed, err %v); promtool: pass %v", pass, failed, err, promtoolPass)
		}
		if got, want := normalize(out.String()), normalize(want); got != want {
			t.Errorf("report differs from promtool's\n--- Test:\n%s\n--- promtool:\n%s", got, want)
		}
	})

	t.Run("all files and --run", func(t *testing.T) {
		var files []string
		for _, name := range testFiles {
			files = append(files, filepath.Join("testdata", name))
		}
		const run = "error ratio|missing alert|fuzzy|first"
		want, promtoolPass := promtool(t, bin, append([]string{"test", "rules", "--run", run}, files...)...)
		var out bytes.Buffer
		failed, err := Test(t.Context(), &out, Options{Run: run}, files...)
		if pass := failed == 0 && err == nil; pass != promtoolPass {
			t.Errorf("Test: pass %v (%d failed, err %v); promtool: pass %v", pass, failed, err, promtoolPass)
		}
		if got, want := normalize(out.String()), normalize(want); got != want {
			t.Errorf("report differs from promtool's\n--- Test:\n%s\n--- promtool:\n%s", got, want)
		}
	})
}

// TestCheckAgainstPromtool compares Check with `promtool check rules
// --lint-fatal`, which like Check fails on duplicate rules.
func TestCheckAgainstPromtool(t *testing.T) {
	bin := peers.Need(t, peers.Promtool)
	files, err := filepath.Glob("testdata/check/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files: %v", err)
	}
	files = append(files, "testdata/mesh.rules.yml", "testdata/broken.rules.yml", "testdata/experimental.rules.yml")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want, promtoolPass := promtool(t, bin, "check", "rules", "--lint-fatal", file)
			var out bytes.Buffer
			bad, err := Check(&out, Options{}, file)
			if err != nil {
				t.Fatal(err)
			}
			if pass := bad == 0; pass != promtoolPass {
				t.Errorf("Check: pass %v; promtool: pass %v\n%s", pass, promtoolPass, want)
			}
			if got, want := normalize(out.String()), normalize(want); got != want {
				t.Errorf("report differs from promtool's\n--- Check:\n%s\n--- promtool:\n%s", got, want)
			}
		})
	}
}
