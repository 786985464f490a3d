package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestPackageLayout keeps the import rules of DESIGN.md: only cmd imports
// tsdb and config (the trace store may import tsdb/block, the one home of
// the bucket's block format), and the component packages do not import
// each other.
func TestPackageLayout(t *testing.T) {
	const mod = "github.com/meshlens/meshlens/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	components := []string{"api", "remotewrite", "rules", "traces", "federation"}
	// What each component may import from the module (besides itself).
	allowed := map[string][]string{
		"api": {"remotewrite", "rules", "traces", "federation"},
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], mod)
		if strings.HasPrefix(pkg, "cmd/") || strings.HasPrefix(pkg, "scripts/") || strings.HasPrefix(pkg, "internal/") {
			continue
		}
		top := strings.SplitN(pkg, "/", 2)[0]
		for _, dep := range fields[1:] {
			d, ok := strings.CutPrefix(dep, mod)
			if !ok {
				continue
			}
			dtop := strings.SplitN(d, "/", 2)[0]
			if dtop == top {
				continue
			}
			if (dtop == "tsdb" || dtop == "config") && !(top == "traces" && (d == "tsdb/block" || strings.HasPrefix(d, "tsdb/block/"))) {
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
