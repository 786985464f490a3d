package ruletest

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		file string
		bad  bool
		want []string
	}{
		{file: "good.rules.yml", want: []string{"  SUCCESS: 2 rules found\n\n"}},
		{file: "syntax.rules.yml", bad: true, want: []string{
			"  FAILED:\ntestdata/check/syntax.rules.yml: yaml: line 3: did not find expected '-' indicator\n",
		}},
		{file: "promql.rules.yml", bad: true, want: []string{
			`testdata/check/promql.rules.yml: 7:15: group "envoy", rule 2, "EnvoyRetryStorm": could not parse expression: 1:66: parse error: unexpected number "10" in grouping opts, expected "," or ")"`,
		}},
		{file: "duplicate.rules.yml", bad: true, want: []string{
			"  FAILED:\nlint error 1 duplicate rule(s) found.\nMetric: destination_service:istio_requests:rate5m\nLabel(s):\nMight cause inconsistency while recording expressions\n",
		}},
		{file: "template.rules.yml", bad: true, want: []string{
			`testdata/check/template.rules.yml: group "citadel", rule 1, "RootCertExpiring": annotation "summary": template: __alert_RootCertExpiring:1: unexpected "}" in operand`,
		}},
		{file: "missing.rules.yml", bad: true, want: []string{
			"testdata/check/missing.rules.yml: open testdata/check/missing.rules.yml: no such file or directory",
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			file := filepath.Join("testdata", "check", tc.file)
			var out bytes.Buffer
			bad, err := Check(&out, Options{}, file)
			if err != nil {
				t.Fatal(err)
			}
			if (bad == 1) != tc.bad || bad > 1 {
				t.Errorf("Check(%s) = %d bad files, want bad %v\n%s", file, bad, tc.bad, &out)
			}
			if !strings.HasPrefix(out.String(), "Checking "+file+"\n") {
				t.Errorf("report does not start with the file name:\n%s", &out)
			}
			for _, want := range tc.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("report lacks\n%s\nreport:\n%s", want, &out)
				}
			}
		})
	}
}

func TestCheckFiles(t *testing.T) {
	var out bytes.Buffer
	bad, err := Check(&out, Options{}, "testdata/check/good.rules.yml", "testdata/check/duplicate.rules.yml",
		"testdata/mesh.rules.yml", "testdata/check/template.rules.yml")
	if bad != 2 || err != nil {
		t.Errorf("Check = %d, %v, want 2 bad files\n%s", bad, err, &out)
	}
	if _, err := Check(&out, Options{}); err == nil {
		t.Error("Check without files: no error")
	}
}
