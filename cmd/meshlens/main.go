// Command meshlens is the observability backend of a service mesh: a
// Prometheus remote-write receiver with an embedded TSDB that serves the
// Prometheus HTTP API and evaluates the mesh alert rules.
//
//	meshlens [flags]              run the server
//	meshlens rules test FILE...   run rule unit tests (promtool's format)
//	meshlens rules check FILE...  check rule files (like promtool check rules)
//	meshlens compact [--once]     compact, downsample and apply retention to the bucket
//	meshlens bucket ls|inspect    list the blocks in the bucket
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(75) // Prometheus's default: less memory for a little more CPU
	}
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "rules":
			os.Exit(rulesCommand(context.Background(), os.Stdout, os.Stderr, os.Args[2:]))
		case "bucket":
			os.Exit(bucketCommand(context.Background(), os.Stdout, os.Stderr, os.Args[2:]))
		case "compact":
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			code := compactCommand(ctx, os.Stderr, os.Args[2:])
			stop()
			os.Exit(code)
		}
	}
	m := NewMain()
	if err := m.ParseFlags(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "meshlens:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "meshlens:", err)
		os.Exit(1)
	}
}
