package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestRulesCommand runs `meshlens rules test` and `meshlens rules check` on a
// pack's unit tests, a user's rule file and a broken one.
func TestRulesCommand(t *testing.T) {
	dir := t.TempDir()
	good := writeRuleFile(t, dir, "good.rules.yml", testRules)
	bad := writeRuleFile(t, dir, "bad.rules.yml", "groups:\n  - name: bad\n    rules:\n      - alert: Bad\n        expr: rate(x[5m]\n")
	failing := writeRuleFile(t, dir, "failing_test.yml", `rule_files: [good.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: test_errors{job="checkout"}
        values: 9x10
    alert_rule_test:
      - eval_time: 5m
        alertname: TestErrors
        exp_alerts: []
`)
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"test", filepath.Join("..", "..", "rules", "packs", "testdata", "golden_test.yml")}, 0, "SUCCESS"},
		{[]string{"test", failing}, 1, "alertname: TestErrors"},
		{[]string{"check", good, "packs/golden.yml"}, 0, "SUCCESS"},
		{[]string{"check", bad}, 1, bad},
		{[]string{"check"}, 2, ""},
		{[]string{"frobnicate", good}, 2, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := rulesCommand(context.Background(), &out, &errOut, tc.args)
			if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.out) {
				t.Errorf("exit %d, want %d; output does not contain %q:\n%s%s", code, tc.code, tc.out, out.String(), errOut.String())
			}
		})
	}
}
