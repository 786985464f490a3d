package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestPackageLayout keeps the import rules of DESIGN.md:
//   - only cmd imports tsdb and config (the trace and exemplar stores may
//     import tsdb/block, the one home of the bucket's block format), and the
//     component packages do not import each other;
//   - cmd holds commands only (package main: flags, wiring, subcommands),
//     a command imports no other command, and nothing outside cmd imports
//     cmd, in tests neither;
//   - the simulator (internal/meshsim/...) and the scenario format
//     (internal/scenario) import neither tsdb nor config, in tests neither:
//     they drive the server from outside.
func TestPackageLayout(t *testing.T) {
	const mod = "github.com/meshlens/meshlens/"
	// With -test, go list adds each package's test variants ("p [p.test]"
	// and "p_test [p.test]", ForTest p), whose Deps include what the test
	// files import, and the generated test mains ("p.test").
	out, err := exec.Command("go", "list", "-test", "-f", `{{.ImportPath}}|{{.ForTest}}|{{.Name}}|{{join .Deps " "}}`, mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	components := []string{"api", "remotewrite", "rules", "traces", "federation", "exemplars"}
	// What each component may import from the module (besides itself).
	allowed := map[string][]string{
		"api":       {"remotewrite", "rules", "traces", "federation"},
		"exemplars": {"traces"},
	}
	isCmd := func(p string) bool { return strings.HasPrefix(p, "cmd/") }
	isSim := func(p string) bool {
		return p == "internal/meshsim" || strings.HasPrefix(p, "internal/meshsim/") || p == "internal/scenario" || strings.HasPrefix(p, "internal/scenario/")
	}
	// command returns "cmd/X" for any package under cmd/X.
	command := func(p string) string {
		parts := strings.SplitN(p, "/", 3)
		return parts[0] + "/" + parts[1]
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, "|", 4)
		path, forTest, name := f[0], f[1], f[2]
		if strings.HasSuffix(path, ".test") {
			continue // a generated test main
		}
		var deps []string
		for _, dep := range strings.Fields(f[3]) {
			dep, _, _ = strings.Cut(dep, " [") // a dependency recompiled for a test
			if d, ok := strings.CutPrefix(dep, mod); ok {
				deps = append(deps, d)
			}
		}
		inTest := forTest != ""
		pkg, _, _ := strings.Cut(path, " [")
		pkg = strings.TrimSuffix(strings.TrimPrefix(pkg, mod), "_test")
		what := pkg
		if inTest {
			what = pkg + " (tests)"
		}

		if isCmd(pkg) && !inTest && name != "main" {
			t.Errorf("%s is package %s: cmd holds commands only, a library belongs outside cmd", pkg, name)
		}
		for _, d := range deps {
			switch {
			case isCmd(d) && !isCmd(pkg):
				t.Errorf("%s imports %s: nothing outside cmd imports cmd", what, d)
			case isCmd(d) && command(d) != command(pkg):
				t.Errorf("%s imports %s: a command does not import another command", what, d)
			}
			dtop := strings.SplitN(d, "/", 2)[0]
			if isSim(pkg) && (dtop == "tsdb" || dtop == "config") {
				t.Errorf("%s imports %s: the simulator and the scenario format import neither tsdb nor config", what, d)
			}
		}

		if inTest || isCmd(pkg) || strings.HasPrefix(pkg, "scripts/") || strings.HasPrefix(pkg, "internal/") {
			continue
		}
		top := strings.SplitN(pkg, "/", 2)[0]
		for _, d := range deps {
			dtop := strings.SplitN(d, "/", 2)[0]
			if dtop == top {
				continue
			}
			if (dtop == "tsdb" || dtop == "config") && !((top == "traces" || top == "exemplars") && (d == "tsdb/block" || strings.HasPrefix(d, "tsdb/block/"))) {
				t.Errorf("%s imports %s: only cmd may import tsdb and config", pkg, d)
			}
			for _, c := range components {
				if dtop == c && !slices.Contains(allowed[top], c) {
					t.Errorf("%s imports sibling %s", pkg, d)
				}
			}
		}
	}
}
