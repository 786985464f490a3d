// Package ruletest runs Prometheus rule unit tests and checks rule files, the
// way `promtool test rules` and `promtool check rules` do, as a library: for
// `meshlens rules test`, `meshlens rules check` and for go tests of the
// embedded rule packs.
//
// Test files use promtool's format unchanged (rule_files,
// evaluation_interval, group_eval_order, fuzzy_compare and tests with
// input_series, alert_rule_test and promql_expr_test), and the report
// written for them is promtool's.
package ruletest

import (
	"io"
	"log/slog"
	"path/filepath"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
)

// Options configure Test and Check. The zero value reads rule files from disk.
type Options struct {
	// Loader loads the rule files named by a test file's rule_files (after
	// the name is resolved relative to the test file's directory, unless
	// Resolve is set) and the files given to Check.
	// nil means rules.FileLoader semantics (rulefmt.ParseFile).
	Loader rules.GroupLoader
	// Resolve maps a rule_files entry of a test file to the identifiers
	// passed to Loader; nil joins it to the test file's directory and expands
	// globs as promtool does. With nil Resolve and a non-nil Loader, an entry
	// that matches no file on disk is passed to Loader as joined, unexpanded,
	// since the Loader may serve names that are not files.
	Resolve func(testFile, ruleFile string) ([]string, error)
	// Run, when non-empty, runs only tests whose name matches this regexp
	// (like promtool --run; join several patterns with "|").
	Run string
	// Junit, when non-nil, receives a JUnit XML report of Test (like
	// promtool --junit).
	Junit io.Writer
	// Parser parses the expressions that Test evaluates (rules, as the
	// engine re-parses them, and promql_expr_test) and the rule files of the
	// default Loader, like the parser promtool builds from --enable-feature.
	// A custom Loader should parse with the same one. nil means
	// parser.NewParser(parser.Options{}), promtool without --enable-feature.
	Parser parser.Parser
}

// promqlParser is the parser of promtool without --enable-feature.
var promqlParser = parser.NewParser(parser.Options{})

func (o Options) parser() parser.Parser {
	if o.Parser != nil {
		return o.Parser
	}
	return promqlParser
}

// loader returns the GroupLoader of opts; the default one logs to logger.
func (o Options) loader(logger *slog.Logger) rules.GroupLoader {
	if o.Loader != nil {
		return o.Loader
	}
	return fileLoader{p: o.parser(), logger: logger}
}

// fileLoader is rules.FileLoader, whose fields are unexported: rule files are
// read from disk by rulefmt.ParseFile.
type fileLoader struct {
	p      parser.Parser
	logger *slog.Logger
}

func (l fileLoader) Load(identifier string, ignoreUnknownFields bool, scheme model.ValidationScheme) (*rulefmt.RuleGroups, []error) {
	return rulefmt.ParseFile(identifier, ignoreUnknownFields, scheme, l.p, l.logger)
}

func (l fileLoader) Parse(query string) (parser.Expr, error) {
	return l.p.ParseExpr(query)
}

// resolveRuleFile resolves one rule_files entry of testFile to the
// identifiers given to the Loader. pattern is what promtool names in its
// "no file match pattern" warning when nothing matches.
func (o Options) resolveRuleFile(testFile, ruleFile string) (pattern string, ids []string, err error) {
	if o.Resolve != nil {
		ids, err = o.Resolve(testFile, ruleFile)
		return ruleFile, ids, err
	}
	pattern = ruleFile
	if pattern != "" && !filepath.IsAbs(pattern) {
		pattern = filepath.Join(filepath.Dir(testFile), pattern)
	}
	ids, err = filepath.Glob(pattern)
	if err != nil {
		return pattern, nil, err
	}
	if len(ids) == 0 && o.Loader != nil && pattern != "" {
		ids = []string{pattern}
	}
	return pattern, ids, nil
}

// reportWriter keeps the first error of writing the report.
type reportWriter struct {
	w   io.Writer
	err error
}

func (r *reportWriter) Write(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.w.Write(p)
	if err != nil {
		r.err = err
	}
	return n, err
}
