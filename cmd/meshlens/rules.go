package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/meshlens/meshlens/config"
	"github.com/meshlens/meshlens/rules"
	"github.com/meshlens/meshlens/rules/ruletest"
)

const rulesUsage = `usage: meshlens rules COMMAND [flags] FILE...

commands:
  test    run rule unit tests in promtool's test format
  check   check rule files for errors, like promtool check rules

A rule file may be a built-in pack, named packs/<name>.yml; in a test file's
rule_files, <name>.yml names the pack when no such file is next to the test.
`

// rulesCommand runs `meshlens rules ...` and returns the exit code: 0 when
// everything passed, 1 on failures, 2 on usage errors.
func rulesCommand(ctx context.Context, stdout, stderr io.Writer, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return 2
	}
	fs := flag.NewFlagSet("meshlens rules "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	run := fs.String("run", "", "run only tests whose name matches this regular expression (test)")
	experimental := fs.Bool("experimental-promql", false, "enable experimental PromQL, as query.experimental_promql")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintf(stderr, "meshlens rules %s: no files given\n", args[0])
		return 2
	}
	q := config.Default().Query
	q.ExperimentalPromQL = *experimental
	opts := rules.TestOptions(newParser(q), slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	opts.Run = *run
	var (
		failed int
		err    error
	)
	switch args[0] {
	case "test":
		failed, err = ruletest.Test(ctx, stdout, opts, fs.Args()...)
	case "check":
		failed, err = ruletest.Check(stdout, opts, fs.Args()...)
	default:
		fmt.Fprint(stderr, rulesUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "meshlens rules:", err)
		return 1
	}
	if failed > 0 {
		return 1
	}
	return 0
}
