// Command build installs the pinned test peers into the peers cache, so CI
// builds them once, up front, with progress on stderr.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/meshlens/meshlens/internal/peers"
)

func main() {
	failed := false
	for _, p := range peers.All {
		start := time.Now()
		fmt.Fprintf(os.Stderr, "building %s (%s)...\n", p.Name, p.Package)
		bin, err := peers.Build(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
			continue
		}
		fmt.Fprintf(os.Stderr, "  %s in %s\n", bin, time.Since(start).Round(time.Second))
	}
	if failed {
		os.Exit(1)
	}
}
