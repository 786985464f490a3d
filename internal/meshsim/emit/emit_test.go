package emit

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func TestRemoveStale(t *testing.T) {
	// A pid that is gone: a process that has exited and been waited for.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	base := t.TempDir()
	names := map[string]bool{ // name: kept
		walDirPrefix + strconv.Itoa(dead) + "-east-1":        false,
		walDirPrefix + strconv.Itoa(os.Getpid()) + "-east-2": true,
		walDirPrefix + "1-west-3":                            true, // init is alive
		"meshsim-other":                                      true,
	}
	for n := range names {
		if err := os.MkdirAll(filepath.Join(base, n, "wal"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removeStale(base, slog.New(slog.DiscardHandler))
	for n, kept := range names {
		_, err := os.Stat(filepath.Join(base, n))
		if (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", n, err == nil, kept)
		}
	}
}
