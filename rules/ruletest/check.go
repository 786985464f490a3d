// Adapted from Prometheus's cmd/promtool/main.go (checkRules, checkRuleGroups,
// checkDuplicates). Copyright The Prometheus Authors. Licensed under the
// Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).

package ruletest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/rules"
)

// Check validates rule files like `promtool check rules` (syntax, expression
// parse, duplicate rules, templates of labels/annotations), writing
// promtool's report to w; it returns the number of files with problems.
//
// Duplicate rules count as a problem, as with `promtool check rules
// --lint-fatal` (without it promtool reports them but exits 0). A file that
// cannot be read is a problem of that file; err is for no files given and for
// failing to write w.
func Check(w io.Writer, opts Options, files ...string) (bad int, err error) {
	if len(files) == 0 {
		return 0, errors.New("no rule files given")
	}
	rw := &reportWriter{w: w}
	loader := opts.loader(slog.New(&warnHandler{w: rw}))
	for _, f := range files {
		fmt.Fprintln(rw, "Checking", f)
		rgs, errs := loader.Load(f, false, model.UTF8Validation)
		if errs == nil && opts.Loader != nil {
			// A custom Loader need not validate what it loads.
			errs = parseExprs(loader, f, rgs)
		}
		if errs != nil {
			bad++
			fmt.Fprintln(rw, "  FAILED:")
			for _, e := range errs {
				fmt.Fprintln(rw, e.Error())
			}
			continue
		}
		if n, errs := checkRuleGroups(rgs); errs != nil {
			bad++
			fmt.Fprintln(rw, "  FAILED:")
			for _, e := range errs {
				fmt.Fprintln(rw, e.Error())
			}
		} else {
			fmt.Fprintf(rw, "  SUCCESS: %d rules found\n", n)
		}
		fmt.Fprintln(rw)
	}
	if rw.err != nil {
		return bad, fmt.Errorf("write check report: %w", rw.err)
	}
	return bad, nil
}

// parseExprs parses the expression of every rule in rgs with the loader.
func parseExprs(loader rules.GroupLoader, file string, rgs *rulefmt.RuleGroups) []error {
	if rgs == nil {
		return nil
	}
	var errs []error
	for _, g := range rgs.Groups {
		for i, r := range g.Rules {
			if _, err := loader.Parse(r.Expr); err != nil {
				errs = append(errs, fmt.Errorf("%s: group %q, rule %d, %q: could not parse expression: %w",
					file, g.Name, i+1, ruleMetric(r), err))
			}
		}
	}
	return errs
}

// errLint marks problems that promtool reports as lint issues.
var errLint = errors.New("lint error")

func checkRuleGroups(rgs *rulefmt.RuleGroups) (int, []error) {
	if rgs == nil {
		return 0, nil
	}
	numRules := 0
	for _, rg := range rgs.Groups {
		numRules += len(rg.Rules)
	}

	dRules := checkDuplicates(rgs.Groups)
	if len(dRules) != 0 {
		var errMessage strings.Builder
		fmt.Fprintf(&errMessage, "%d duplicate rule(s) found.\n", len(dRules))
		for _, n := range dRules {
			fmt.Fprintf(&errMessage, "Metric: %s\nLabel(s):\n", n.metric)
			n.label.Range(func(l labels.Label) {
				fmt.Fprintf(&errMessage, "\t%s: %s\n", l.Name, l.Value)
			})
		}
		errMessage.WriteString("Might cause inconsistency while recording expressions")
		return 0, []error{fmt.Errorf("%w %s", errLint, errMessage.String())}
	}

	return numRules, nil
}

type compareRuleType struct {
	metric string
	label  labels.Labels
}

type compareRuleTypes []compareRuleType

func (c compareRuleTypes) Len() int           { return len(c) }
func (c compareRuleTypes) Swap(i, j int)      { c[i], c[j] = c[j], c[i] }
func (c compareRuleTypes) Less(i, j int) bool { return compare(c[i], c[j]) < 0 }

func compare(a, b compareRuleType) int {
	if res := strings.Compare(a.metric, b.metric); res != 0 {
		return res
	}

	return labels.Compare(a.label, b.label)
}

func checkDuplicates(groups []rulefmt.RuleGroup) []compareRuleType {
	var duplicates []compareRuleType
	var cRules compareRuleTypes

	for _, group := range groups {
		for _, rule := range group.Rules {
			cRules = append(cRules, compareRuleType{
				metric: ruleMetric(rule),
				label:  rules.FromMaps(group.Labels, rule.Labels),
			})
		}
	}
	if len(cRules) < 2 {
		return duplicates
	}
	sort.Sort(cRules)

	last := cRules[0]
	for i := 1; i < len(cRules); i++ {
		if compare(last, cRules[i]) == 0 {
			// Don't add a duplicated rule multiple times.
			if len(duplicates) == 0 || compare(last, duplicates[len(duplicates)-1]) != 0 {
				duplicates = append(duplicates, cRules[i])
			}
		}
		last = cRules[i]
	}

	return duplicates
}

func ruleMetric(rule rulefmt.Rule) string {
	if rule.Alert != "" {
		return rule.Alert
	}
	return rule.Record
}

// warnHandler writes the warnings of rulefmt (a multi-document rule file) to
// the report as promtool's "  WARNING:" lines.
type warnHandler struct {
	w     io.Writer
	attrs []slog.Attr
}

func (h *warnHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("  WARNING: ")
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	b.WriteByte('\n')
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *warnHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &warnHandler{w: h.w, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h *warnHandler) WithGroup(string) slog.Handler { return h }
