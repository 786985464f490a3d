package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshlens/meshlens/tsdb"
)

// compactCommand runs `meshlens compact`: the bucket compactor on its own,
// for setups where several meshlens nodes share a bucket and one process
// compacts it. It returns the exit code.
func compactCommand(ctx context.Context, stderr io.Writer, args []string) int {
	m := NewMain()
	fs := flag.NewFlagSet("meshlens compact", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&m.DataDir, "data-dir", m.DataDir, "directory for the default bucket (data-dir/bucket) and the compactor's work (data-dir/compact)")
	fs.StringVar(&m.ConfigFile, "config", m.ConfigFile, "optional YAML configuration file (storage.bucket and compactor sections)")
	fs.StringVar(&m.LogLevel, "log.level", m.LogLevel, "log level: debug, info, warn, error")
	once := fs.Bool("once", false, "run one pass and exit instead of one pass every compactor.interval")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := runCompact(ctx, m, stderr, *once); err != nil {
		fmt.Fprintln(stderr, "meshlens compact:", err)
		return 1
	}
	return 0
}

func runCompact(ctx context.Context, m *Main, stderr io.Writer, once bool) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(m.LogLevel)); err != nil {
		return fmt.Errorf("--log.level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := m.loadConfig()
	if err != nil {
		return err
	}
	b, err := bucketConfig(cfg.Storage, m.DataDir)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	bkt, err := tsdb.OpenBucket(b, logger, reg)
	if err != nil {
		return fmt.Errorf("storage.bucket: %w", err)
	}
	defer bkt.Close()
	c, err := newCompactor(cfg, bkt, m.DataDir, logger, reg)
	if err != nil {
		return err
	}
	logger.Info("compactor started", "bucket", bkt.Name(), "once", once)
	if once {
		return c.Once(ctx)
	}
	err = c.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
