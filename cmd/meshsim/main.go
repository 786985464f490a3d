// Command meshsim simulates a service mesh (Istio/Envoy across several
// Kubernetes clusters) and sends what its Prometheus servers and sidecars
// would send: remote-write metrics (through Prometheus's own remote-write
// queue) and spans (Zipkin v2 JSON or OTLP/HTTP). It is demo traffic, an
// end-to-end fixture and a load generator.
//
//	meshsim topology [--services N --clusters N --seed S] [--json]
//	meshsim load     --url URL --series N [--protocol 1.0|2.0] [--duration D | --requests N] [--json]
//	meshsim load     --traces-url URL [--traces-format zipkin|otlp] [--duration D | --requests N] [--json]
//	meshsim run      --url URL | --listen ADDR [--traces-url URL] [--scenario FILE] [--mesh istio|linkerd] [--ha]
//	meshsim backfill --url URL --hours H [--scenario FILE]
//	meshsim scenario FILE...   (validate scenario files)
//	meshsim sink     [--listen ADDR]   (discard what load sends, to measure meshsim)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr}
	err := m.Run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "meshsim:", err)
		os.Exit(1)
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
}

// Main is the program; tests run it with their own writers and arguments.
type Main struct {
	Stdout io.Writer
	Stderr io.Writer
	// Logger is set from --log-level by Run when nil.
	Logger *slog.Logger
}

const usage = `usage: meshsim COMMAND [flags]

commands:
  topology   print the simulated mesh (text or --json)
  load       remote-write (--url) or span (--traces-url) load generator for benchmarks
  run        real-time simulation: remote write (--url) and/or /metrics pages (--listen), spans (--traces-url)
  backfill   write --hours of history as fast as the receiver accepts
  scenario   validate scenario files
  sink       accept and discard remote write and spans (to measure meshsim)

Run "meshsim COMMAND -h" for the flags of a command.
`

// Run runs the command in args.
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return flag.ErrHelp
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "topology":
		return m.runTopology(ctx, rest)
	case "load":
		return m.runLoad(ctx, rest)
	case "run":
		return m.runRun(ctx, rest)
	case "backfill":
		return m.runBackfill(ctx, rest)
	case "scenario":
		return m.runScenario(ctx, rest)
	case "sink":
		return m.runSink(ctx, rest)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	}
	fmt.Fprint(m.Stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// newFlagSet returns a flag set that reports errors to Stderr and has
// --log-level.
func (m *Main) newFlagSet(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	lvl := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	return fs, lvl
}

func (m *Main) parse(fs *flag.FlagSet, lvl *string, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 && fs.Name() != "scenario" {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	if m.Logger == nil {
		var l slog.Level
		if err := l.UnmarshalText([]byte(*lvl)); err != nil {
			return fmt.Errorf("bad --log-level %q: %w", *lvl, err)
		}
		m.Logger = slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: l}))
	}
	return nil
}
