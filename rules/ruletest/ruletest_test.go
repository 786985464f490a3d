package ruletest

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func TestTestResults(t *testing.T) {
	for _, tc := range []struct {
		file    string
		failed  int
		wantErr bool
	}{
		{file: "pass.test.yml"},
		{file: "fuzzy.test.yml"},
		{file: "exact.test.yml", failed: 1},
		{file: "fail.test.yml", failed: 4},
		{file: "badrules.test.yml", failed: 2},
		{file: "unknownfield.test.yml", wantErr: true},
		{file: "missing.test.yml", wantErr: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var out bytes.Buffer
			file := filepath.Join("testdata", tc.file)
			failed, err := Test(t.Context(), &out, Options{}, file)
			if failed != tc.failed || (err != nil) != tc.wantErr {
				t.Fatalf("Test(%s) = %d, %v; want %d failed, error %v\n%s", file, failed, err, tc.failed, tc.wantErr, &out)
			}
			if !strings.HasPrefix(out.String(), "Processing test file: "+file+"\n") {
				t.Errorf("report does not start with the file name:\n%s", &out)
			}
			pass := tc.failed == 0 && !tc.wantErr
			if got := strings.Contains(out.String(), "  SUCCESS\n"); got != pass {
				t.Errorf("report says SUCCESS = %v, want %v:\n%s", got, pass, &out)
			}
		})
	}
}

func TestTestPassReport(t *testing.T) {
	var out bytes.Buffer
	failed, err := Test(t.Context(), &out, Options{}, "testdata/pass.test.yml")
	if failed != 0 || err != nil {
		t.Fatalf("Test = %d, %v\n%s", failed, err, &out)
	}
	if want := "Processing test file: testdata/pass.test.yml\n  SUCCESS\n\n"; out.String() != want {
		t.Errorf("report:\n%q\nwant\n%q", out.String(), want)
	}
}

// TestTestFailureReport checks the report of each kind of failure against
// promtool's text.
func TestTestFailureReport(t *testing.T) {
	var out bytes.Buffer
	failed, err := Test(t.Context(), &out, Options{}, "testdata/fail.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	if failed != 4 {
		t.Errorf("failed = %d, want 4", failed)
	}
	report := out.String()
	for _, want := range []string{
		"Processing test file: testdata/fail.test.yml\n  FAILED:\n",
		// Wrong expected alert.
		`    name: wrong expected alert,
    alertname: MeshHighErrorRate, time: 5m, 
        exp:[
            0:
              Labels:{alertname="MeshHighErrorRate", destination_service="reviews", severity="warning"}
              Annotations:{dashboard="/d/mesh", description="reviews in east answers 9.091% with 5xx.", summary="High 5xx ratio on reviews"}
            ], 
        got:[
            0:
              Labels:{alertname="MeshHighErrorRate", destination_service="reviews", severity="page"}
              Annotations:{dashboard="/d/mesh", description="reviews in east answers 9.091% with 5xx.", summary="High 5xx ratio on reviews"}
            ]
`,
		// Missing alert.
		`    name: missing alert,
    alertname: IstiodDown, time: 5m, 
        exp:[
            0:
              Labels:{alertname="IstiodDown", severity="page"}
              Annotations:{}
            ], 
        got:[]
`,
		// Alert that must not fire.
		`    name: alert must not fire,
    alertname: EnvoyUpstreamPendingOverflow, time: 4m, 
        exp:[], 
        got:[
            0:
              Labels:{alertname="EnvoyUpstreamPendingOverflow", cluster_name="outbound|9080||ratings", severity="warning"}
              Annotations:{summary="outbound|9080||ratings overflows its pending queue"}
            ]
`,
		// Wrong sample.
		`    expr: "envoy_server_days_until_first_cert_expiring", time: 1m,
        exp: {__name__="envoy_server_days_until_first_cert_expiring", pod="ratings-v1-0"} 3E+01
        got: {__name__="envoy_server_days_until_first_cert_expiring", pod="ratings-v1-0"} 2.9E+01
`,
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks\n%s\nreport:\n%s", want, report)
		}
	}
	for _, passing := range []string{"passing group", "CertExpiringSoon"} {
		if strings.Contains(report, passing) {
			t.Errorf("report names %q, which passes:\n%s", passing, report)
		}
	}
	if got := failingAlerts(report); !equalSets(got, []string{
		"alertname: MeshHighErrorRate, time: 5m",
		"alertname: IstiodDown, time: 5m",
		"alertname: EnvoyUpstreamPendingOverflow, time: 4m",
		`expr: "envoy_server_days_until_first_cert_expiring", time: 1m`,
	}) {
		t.Errorf("failing alerts and exprs = %q", got)
	}
}

func TestTestBadRuleFile(t *testing.T) {
	var out bytes.Buffer
	failed, err := Test(t.Context(), &out, Options{}, "testdata/badrules.test.yml")
	if failed != 2 || err != nil {
		t.Fatalf("Test = %d, %v, want 2 failed groups\n%s", failed, err, &out)
	}
	for _, want := range []string{
		"  WARNING: no file match pattern testdata/missing-*.rules.yml\n",
		`testdata/broken.rules.yml: 5:15: group "broken", rule 1, "Broken": could not parse expression: 1:35: parse error: unclosed left parenthesis`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, &out)
		}
	}
}

func TestTestFileErrors(t *testing.T) {
	var out bytes.Buffer
	failed, err := Test(t.Context(), &out, Options{},
		"testdata/unknownfield.test.yml", "testdata/pass.test.yml", "testdata/exact.test.yml")
	if failed != 1 {
		t.Errorf("failed = %d, want 1", failed)
	}
	if err == nil || !strings.Contains(err.Error(), "testdata/unknownfield.test.yml: ") ||
		!strings.Contains(err.Error(), "field input_seires not found") {
		t.Errorf("err = %v, want the unknown field of unknownfield.test.yml", err)
	}
	// The files after the broken one still ran.
	if !strings.Contains(out.String(), "Processing test file: testdata/pass.test.yml\n  SUCCESS\n") {
		t.Errorf("pass.test.yml did not run:\n%s", &out)
	}
	if _, err := Test(t.Context(), &out, Options{}); err == nil {
		t.Error("Test without files: no error")
	}
}

func TestTestRun(t *testing.T) {
	for _, tc := range []struct {
		run    string
		failed int
	}{
		{run: "", failed: 4},
		{run: "^passing group$", failed: 0},
		{run: "missing|must not", failed: 2},
		{run: "no such test", failed: 0},
	} {
		t.Run(tc.run, func(t *testing.T) {
			var out bytes.Buffer
			failed, err := Test(t.Context(), &out, Options{Run: tc.run}, "testdata/fail.test.yml")
			if failed != tc.failed || err != nil {
				t.Errorf("Test(Run: %q) = %d, %v, want %d failed\n%s", tc.run, failed, err, tc.failed, &out)
			}
		})
	}
	if _, err := Test(t.Context(), &bytes.Buffer{}, Options{Run: "("}, "testdata/pass.test.yml"); err == nil {
		t.Error("bad Run pattern: no error")
	}
}

func TestTestJunit(t *testing.T) {
	var out, junit bytes.Buffer
	_, err := Test(t.Context(), &out, Options{Junit: &junit}, "testdata/pass.test.yml", "testdata/fail.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	x := junit.String()
	for _, want := range []string{
		`<testsuite name="testdata/pass.test.yml" tests="4" failures="0" errors="0"`,
		`<testsuite name="testdata/fail.test.yml" tests="5" failures="4" errors="0"`,
		`<testcase name="missing alert">`,
		`alertname: IstiodDown, time: 5m`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("JUnit report lacks %q:\n%s", want, x)
		}
	}
}

func TestTestContextCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Test(ctx, &bytes.Buffer{}, Options{}, "testdata/pass.test.yml")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// memLoader serves rule files from memory and reads other names from disk.
type memLoader struct {
	files  map[string]string
	loaded []string
}

func (l *memLoader) Load(identifier string, ignoreUnknownFields bool, scheme model.ValidationScheme) (*rulefmt.RuleGroups, []error) {
	l.loaded = append(l.loaded, identifier)
	content, ok := l.files[identifier]
	if !ok {
		return rulefmt.ParseFile(identifier, ignoreUnknownFields, scheme, promqlParser, promslog.NewNopLogger())
	}
	rgs, errs := rulefmt.Parse([]byte(content), ignoreUnknownFields, scheme, promqlParser, promslog.NewNopLogger())
	for i, err := range errs {
		errs[i] = errors.New(identifier + ": " + err.Error())
	}
	return rgs, errs
}

func (l *memLoader) Parse(query string) (parser.Expr, error) { return promqlParser.ParseExpr(query) }

const memRules = `groups:
  - name: istiod
    rules:
      - alert: NoConnectedProxies
        expr: sum by (cluster) (pilot_xds) == 0
        for: 2m
        labels:
          severity: page
`

func TestLoader(t *testing.T) {
	identity := func(_, ruleFile string) ([]string, error) { return []string{ruleFile}, nil }
	for _, tc := range []struct {
		name    string
		resolve func(testFile, ruleFile string) ([]string, error)
		id      string
	}{
		{name: "resolve", resolve: identity, id: "mem.yml"},
		// Without Resolve the name is joined to the test file's directory
		// and, matching no file on disk, given to the Loader as joined.
		{name: "default resolve", id: filepath.Join("testdata", "mem.yml")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loader := &memLoader{files: map[string]string{tc.id: memRules}}
			var out bytes.Buffer
			failed, err := Test(t.Context(), &out, Options{Loader: loader, Resolve: tc.resolve}, "testdata/mem.test.yml")
			if failed != 0 || err != nil {
				t.Fatalf("Test = %d, %v\n%s", failed, err, &out)
			}
			if len(loader.loaded) != 1 || loader.loaded[0] != tc.id {
				t.Errorf("loaded %q, want [%q]", loader.loaded, tc.id)
			}
		})
	}

	// Without the Loader, mem.yml does not exist.
	var out bytes.Buffer
	failed, err := Test(t.Context(), &out, Options{}, "testdata/mem.test.yml")
	if failed != 1 || err != nil {
		t.Errorf("Test without the loader = %d, %v, want 1 failed group\n%s", failed, err, &out)
	}

	// Check reads through the Loader too.
	loader := &memLoader{files: map[string]string{
		"mem.yml": memRules,
		"bad.yml": strings.Replace(memRules, "== 0", "== ", 1),
	}}
	out.Reset()
	bad, err := Check(&out, Options{Loader: loader}, "mem.yml", "bad.yml", "testdata/check/good.rules.yml")
	if bad != 1 || err != nil {
		t.Fatalf("Check = %d, %v, want 1 bad file\n%s", bad, err, &out)
	}
	for _, want := range []string{
		"Checking mem.yml\n  SUCCESS: 1 rules found\n",
		"Checking bad.yml\n  FAILED:\nbad.yml: 5:15: group \"istiod\", rule 1, \"NoConnectedProxies\": could not parse expression",
		"Checking testdata/check/good.rules.yml\n  SUCCESS: 2 rules found\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Check report lacks %q:\n%s", want, &out)
		}
	}
}

// lenientLoader loads without validating, so Check must parse expressions
// through Loader.Parse itself.
type lenientLoader struct{}

func (lenientLoader) Load(identifier string, _ bool, _ model.ValidationScheme) (*rulefmt.RuleGroups, []error) {
	return &rulefmt.RuleGroups{Groups: []rulefmt.RuleGroup{{
		Name:  "lenient",
		Rules: []rulefmt.Rule{{Record: "x", Expr: "sum(("}},
	}}}, nil
}

func (lenientLoader) Parse(query string) (parser.Expr, error) { return promqlParser.ParseExpr(query) }

func TestCheckParsesWithLoader(t *testing.T) {
	var out bytes.Buffer
	bad, err := Check(&out, Options{Loader: lenientLoader{}}, "any")
	if bad != 1 || err != nil {
		t.Fatalf("Check = %d, %v, want 1 bad file\n%s", bad, err, &out)
	}
	if want := `any: group "lenient", rule 1, "x": could not parse expression: `; !strings.Contains(out.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, &out)
	}
}

// failingLine matches the line promtool writes for a failing alert_rule_test
// or promql_expr_test.
var failingLine = regexp.MustCompile(`(?m)^    ((?:alertname: .*|expr: ".*"), time: [^,]*),`)

// failingAlerts returns the "alertname: A, time: T" and "expr: E, time: T"
// of the failures in a report.
func failingAlerts(report string) []string {
	var s []string
	for _, m := range failingLine.FindAllStringSubmatch(report, -1) {
		s = append(s, m[1])
	}
	return s
}

func equalSets(a, b []string) bool {
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		count[s]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestParser(t *testing.T) {
	experimental := parser.NewParser(parser.Options{EnableExperimentalFunctions: true})
	for _, tc := range []struct {
		name   string
		parser parser.Parser
		failed int
	}{
		{name: "default", failed: 1},
		{name: "experimental functions", parser: experimental},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Parser: tc.parser}
			var out bytes.Buffer
			failed, err := Test(t.Context(), &out, opts, "testdata/experimental.test.yml")
			if failed != tc.failed || err != nil {
				t.Errorf("Test = %d, %v, want %d failed\n%s", failed, err, tc.failed, &out)
			}
			out.Reset()
			bad, err := Check(&out, opts, "testdata/experimental.rules.yml")
			if bad != tc.failed || err != nil {
				t.Errorf("Check = %d, %v, want %d bad\n%s", bad, err, tc.failed, &out)
			}
		})
	}
}
