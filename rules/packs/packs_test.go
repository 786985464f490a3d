package packs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// selMarker is a matcher that every selector of an alerting rule must
// carry when rendered with it as sel.
const (
	selMarkerName  = "zz_sel_marker"
	selMarkerValue = "x"
)

var (
	selMarker = selMarkerName + `="` + selMarkerValue + `"`
	alertName = regexp.MustCompile(`^[A-Z][A-Za-z0-9]+$`)
)

func parseRules(t *testing.T, pack string, data []byte) *rulefmt.RuleGroups {
	t.Helper()
	rgs, errs := rulefmt.Parse(data, false, model.UTF8Validation, parser.NewParser(parser.Options{}), promslog.NewNopLogger())
	for _, err := range errs {
		t.Errorf("pack %s: %v", pack, err)
	}
	if rgs == nil {
		t.Fatalf("pack %s: no rule groups", pack)
	}
	return rgs
}

func TestRenderParses(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	for _, pack := range Names() {
		for _, sel := range []string{"", selMarker, `destination_service_name="checkout"`, `destination_service_name!~"checkout|cart",cluster="east"`} {
			t.Run(fmt.Sprintf("%s/sel=%s", pack, sel), func(t *testing.T) {
				data, err := Render(pack, nil, sel)
				if err != nil {
					t.Fatal(err)
				}
				rgs := parseRules(t, pack, data)
				if len(rgs.Groups) == 0 {
					t.Fatal("no groups")
				}
				for _, g := range rgs.Groups {
					for _, r := range g.Rules {
						if _, err := p.ParseExpr(r.Expr); err != nil {
							t.Errorf("group %s rule %s%s: %v", g.Name, r.Alert, r.Record, err)
						}
					}
				}
			})
		}
	}
}

func TestRulesShape(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	groupName := regexp.MustCompile(`^mesh-[a-z]+(-[a-z]+)*$`)
	for _, pack := range Names() {
		t.Run(pack, func(t *testing.T) {
			data, err := Render(pack, nil, selMarker)
			if err != nil {
				t.Fatal(err)
			}
			rgs := parseRules(t, pack, data)
			seen := map[string]bool{}
			for _, g := range rgs.Groups {
				if !groupName.MatchString(g.Name) || (g.Name != "mesh-"+pack && !strings.HasPrefix(g.Name, "mesh-"+pack+"-")) {
					t.Errorf("group %q: want mesh-%s or mesh-%s-<area>", g.Name, pack, pack)
				}
				if seen[g.Name] {
					t.Errorf("group %q twice", g.Name)
				}
				seen[g.Name] = true
				for _, r := range g.Rules {
					expr, err := p.ParseExpr(r.Expr)
					if err != nil {
						t.Fatalf("group %s: %v", g.Name, err)
					}
					if r.Record != "" {
						if strings.Contains(r.Expr, selMarkerName) {
							t.Errorf("recording rule %s uses the extra matchers", r.Record)
						}
						if pack != "recording" {
							t.Errorf("recording rule %s outside the recording pack", r.Record)
						}
						continue
					}
					if pack == "recording" {
						t.Errorf("alert %s in the recording pack", r.Alert)
					}
					checkAlert(t, g.Name, r, expr)
				}
			}
		})
	}
}

func checkAlert(t *testing.T, group string, r rulefmt.Rule, expr parser.Expr) {
	t.Helper()
	name := group + "/" + r.Alert
	if !alertName.MatchString(r.Alert) {
		t.Errorf("%s: alert name not in CamelCase", name)
	}
	switch r.Labels["severity"] {
	case "warning", "critical":
	default:
		t.Errorf("%s: severity %q, want warning or critical", name, r.Labels["severity"])
	}
	for _, a := range []string{"summary", "description", "runbook"} {
		if strings.TrimSpace(r.Annotations[a]) == "" {
			t.Errorf("%s: no %s annotation", name, a)
		}
	}
	if !strings.Contains(r.Annotations["description"], "$value") {
		t.Errorf("%s: description does not show the value", name)
	}
	if strings.Contains(r.Annotations["runbook"], "[[") || strings.Contains(r.Expr, "[[") {
		t.Errorf("%s: template action left after rendering", name)
	}
	f := time.Duration(r.For)
	if f < time.Minute || f > 10*time.Minute {
		t.Errorf("%s: for %s outside [1m, 10m]", name, f)
	}
	// Every selector carries the extra matchers.
	n := 0
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		n++
		if !slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
			return m.Name == selMarkerName && m.Type == labels.MatchEqual && m.Value == selMarkerValue
		}) {
			t.Errorf("%s: selector %s without the extra matchers", name, vs)
		}
		return nil
	})
	if n == 0 {
		t.Errorf("%s: no selector", name)
	}
}

func TestEveryParameterUsed(t *testing.T) {
	for _, pack := range Names() {
		src, err := files.ReadFile(pack + ".yml")
		if err != nil {
			t.Fatal(err)
		}
		defs, err := Defaults(pack)
		if err != nil {
			t.Fatal(err)
		}
		for k := range defs {
			if !regexp.MustCompile(`\[\[ \.` + regexp.QuoteMeta(k) + ` \]\]`).Match(src) {
				t.Errorf("pack %s: parameter %s is not used", pack, k)
			}
		}
		// Numbers in expressions are parameters: a literal threshold after a
		// comparison is a mistake (0 and time constants excepted).
		for _, m := range regexp.MustCompile(`(?m)(>|<|>=|<=|==) ([0-9.]+)\s*$`).FindAllStringSubmatch(string(src), -1) {
			if m[2] != "0" {
				t.Errorf("pack %s: literal threshold %q", pack, m[0])
			}
		}
	}
}

func TestNamesAndFiles(t *testing.T) {
	want := []string{"recording", "golden", "edges", "traffic", "mtls", "controlplane", "config", "workload", "linkerd"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	Names()[0] = "changed"
	if Names()[0] != "recording" {
		t.Fatal("Names returns its internal slice")
	}
	entries, err := files.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := strings.TrimSuffix(e.Name(), ".yml")
		if n != "params" && !slices.Contains(want, n) {
			t.Errorf("embedded file %s is not a pack", e.Name())
		}
	}
	var params map[string]map[string]any
	b, _ := files.ReadFile("params.yml")
	if err := yaml.Unmarshal(b, &params); err != nil {
		t.Fatal(err)
	}
	for _, n := range want {
		if _, ok := params[n]; !ok {
			t.Errorf("params.yml: no entry for %s", n)
		}
		if _, err := os.Stat(filepath.Join("testdata", n+"_test.yml")); err != nil {
			t.Errorf("no rule tests for pack %s: %v", n, err)
		}
	}
}

func TestDefaultsCopy(t *testing.T) {
	d, err := Defaults("golden")
	if err != nil {
		t.Fatal(err)
	}
	if d["error_ratio"] != "0.05" || d["latency_for"] == "" {
		t.Fatalf("golden defaults: %v", d)
	}
	d["error_ratio"] = "changed"
	d2, _ := Defaults("golden")
	if d2["error_ratio"] != "0.05" {
		t.Fatal("Defaults returns its internal map")
	}
	if d, err := Defaults("recording"); err != nil || len(d) != 0 {
		t.Fatalf("recording defaults: %v, %v", d, err)
	}
}

func TestRenderParams(t *testing.T) {
	out, err := Render("golden", map[string]string{"error_ratio": "0.2", "error_for": "7m"}, `cluster="east"`)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"> 0.2\n", "for: 7m", `mesh:istio_requests:rate5m{reporter="source",response_code=~"5..",cluster="east"}`} {
		if !strings.Contains(s, want) {
			t.Errorf("rendered golden pack lacks %q", want)
		}
	}
	if strings.Contains(s, "[[") {
		t.Error("template action left after rendering")
	}
}

func TestRenderErrors(t *testing.T) {
	for _, tc := range []struct {
		pack   string
		params map[string]string
		sel    string
		is     error
		names  string
	}{
		{pack: "nosuch", is: ErrUnknownPack, names: `"nosuch"`},
		{pack: "golden", params: map[string]string{"eror_ratio": "0.1"}, is: ErrUnknownParam, names: `"eror_ratio"`},
		{pack: "golden", params: map[string]string{"sel": "a=\"b\""}, is: ErrUnknownParam, names: `"sel"`},
		{pack: "recording", params: map[string]string{"x": "1"}, is: ErrUnknownParam, names: `"x"`},
		{pack: "golden", params: map[string]string{"error_for": "5m\n  foo: bar"}, is: ErrBadValue, names: `"error_for"`},
		{pack: "golden", sel: "a=\"b\"\n", is: ErrBadValue, names: "matchers"},
	} {
		_, err := Render(tc.pack, tc.params, tc.sel)
		if !errors.Is(err, tc.is) {
			t.Errorf("Render(%s, %v, %q) = %v, want %v", tc.pack, tc.params, tc.sel, err, tc.is)
			continue
		}
		if !strings.Contains(err.Error(), tc.names) {
			t.Errorf("error %q does not name %s", err, tc.names)
		}
	}
	if _, err := Defaults("nosuch"); !errors.Is(err, ErrUnknownPack) || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("Defaults(nosuch) = %v", err)
	}
}

// ruleTests is the part of a promtool rule-test file the coverage check reads.
type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Alerts []struct {
			Alertname string `yaml:"alertname"`
			Exp       []struct {
				Labels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		Exprs []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

// TestEveryRuleTested checks that testdata/<pack>_test.yml expects every
// alerting rule of the pack to fire at least once (a rule is told apart from
// others of the same name by its static labels) and queries every recorded
// series.
func TestEveryRuleTested(t *testing.T) {
	for _, pack := range Names() {
		b, err := os.ReadFile(filepath.Join("testdata", pack+"_test.yml"))
		if err != nil {
			t.Fatal(err)
		}
		var rt ruleTests
		if err := yaml.Unmarshal(b, &rt); err != nil {
			t.Fatalf("%s_test.yml: %v", pack, err)
		}
		// Packs reading the latency quantiles of the recording pack test
		// with it: their inputs are the recorded buckets.
		if !slices.Equal(rt.RuleFiles, []string{pack + ".yml"}) && !slices.Equal(rt.RuleFiles, []string{"recording.yml", pack + ".yml"}) {
			t.Errorf("%s_test.yml: rule_files %v, want [%s.yml] or [recording.yml, %[1]s.yml]", pack, rt.RuleFiles, pack)
		}
		data, err := Render(pack, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range parseRules(t, pack, data).Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					found := false
					for _, tc := range rt.Tests {
						for _, e := range tc.Exprs {
							found = found || strings.Contains(e.Expr, r.Record)
						}
					}
					if !found {
						t.Errorf("%s_test.yml: no promql_expr_test of %s", pack, r.Record)
					}
					continue
				}
				found := false
				for _, tc := range rt.Tests {
					for _, a := range tc.Alerts {
						if a.Alertname != r.Alert {
							continue
						}
						for _, e := range a.Exp {
							ok := true
							for k, v := range r.Labels {
								ok = ok && e.Labels[k] == v
							}
							found = found || ok
						}
					}
				}
				if !found {
					t.Errorf("%s_test.yml: no test where %s %v fires", pack, r.Alert, r.Labels)
				}
			}
		}
	}
}
