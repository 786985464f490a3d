package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/meshlens/meshlens/tsdb"
	"github.com/meshlens/meshlens/tsdb/bucketstore"
)

const bucketUsage = `usage: meshlens bucket COMMAND [flags]

commands:
  ls        list the metric blocks in the bucket, one line each
  inspect   the same with every field of every block, as JSON

flags: --data-dir, --config (the bucket is storage.bucket, or <data-dir>/bucket)
`

// bucketCommand runs `meshlens bucket ls|inspect` and returns the exit code.
func bucketCommand(ctx context.Context, stdout, stderr io.Writer, args []string) int {
	if len(args) == 0 || (args[0] != "ls" && args[0] != "inspect") {
		fmt.Fprint(stderr, bucketUsage)
		return 2
	}
	m := NewMain()
	fs := flag.NewFlagSet("meshlens bucket "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&m.DataDir, "data-dir", m.DataDir, "directory of the default bucket (data-dir/bucket)")
	fs.StringVar(&m.ConfigFile, "config", m.ConfigFile, "optional YAML configuration file (storage.bucket)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if err := listBucket(ctx, m, stdout, stderr, args[0] == "inspect"); err != nil {
		fmt.Fprintln(stderr, "meshlens bucket:", err)
		return 1
	}
	return 0
}

func listBucket(ctx context.Context, m *Main, stdout, stderr io.Writer, asJSON bool) error {
	cfg, err := m.loadConfig()
	if err != nil {
		return err
	}
	b, err := bucketConfig(cfg.Storage, m.DataDir)
	if err != nil {
		return err
	}
	bkt, err := tsdb.OpenBucket(b, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
	if err != nil {
		return fmt.Errorf("storage.bucket: %w", err)
	}
	defer bkt.Close()
	blocks, err := bucketstore.ListBlocks(ctx, bkt)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(blocks)
	}
	return bucketstore.WriteTable(stdout, blocks)
}
