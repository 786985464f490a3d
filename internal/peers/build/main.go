// Command build builds the pinned test peers into the peers cache, so CI
// builds them once, up front, with progress on stderr.
//
// Usage: build [name ...]; no names: every peer in peers.All.
//
// Two modules build at a time (each go command compiles in parallel
// itself), taken in the order of peers.All; peers of one module are built
// one after the other, so the second reuses the first one's compiled
// packages from the Go build cache.
package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshlens/meshlens/internal/peers"
)

// parallel is the number of modules built at once.
const parallel = 2

func main() {
	todo, err := selectPeers(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if !build(todo) {
		os.Exit(1)
	}
}

// build builds the peers and reports whether all of them were built.
func build(todo []peers.Peer) bool {
	// One group per module, in the order of first appearance.
	var groups [][]peers.Peer
	index := map[string]int{}
	for _, p := range todo {
		m := p.ModulePath()
		i, ok := index[m]
		if !ok {
			i = len(groups)
			index[m] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], p)
	}
	queue := make(chan []peers.Peer, len(groups))
	for _, g := range groups {
		queue <- g
	}
	close(queue)

	start := time.Now()
	var (
		mu       sync.Mutex // guards stderr, failed and building
		failed   []string
		building []string
	)
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%4ds] "+format+"\n", append([]any{int(time.Since(start).Seconds())}, args...)...)
	}
	buildOne := func(p peers.Peer) {
		mu.Lock()
		logf("building %s (%s)...", p.Name, p.Package)
		building = append(building, p.Name)
		mu.Unlock()
		t0 := time.Now()
		bin, err := peers.Build(p)
		mu.Lock()
		defer mu.Unlock()
		building = slices.DeleteFunc(building, func(n string) bool { return n == p.Name })
		if err != nil {
			logf("FAILED %s after %s: %v", p.Name, time.Since(t0).Round(time.Second), err)
			failed = append(failed, p.Name)
			return
		}
		logf("built %s in %s: %s", p.Name, time.Since(t0).Round(time.Second), bin)
	}

	// Workers take the groups in order.
	var wg sync.WaitGroup
	for range min(parallel, len(groups)) {
		wg.Go(func() {
			for g := range queue {
				for _, p := range g {
					buildOne(p)
				}
			}
		})
	}
	// Progress while long builds run, so CI's log shows the step is alive.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			mu.Lock()
			logf("still building %s...", strings.Join(building, ", "))
			mu.Unlock()
		}
	}
	if len(failed) > 0 {
		logf("peers not built: %s", strings.Join(failed, ", "))
		return false
	}
	logf("all %d peers built", len(todo))
	return true
}

// selectPeers returns the peers named in args, or all of them.
func selectPeers(args []string) ([]peers.Peer, error) {
	if len(args) == 0 {
		return peers.All, nil
	}
	byName := map[string]peers.Peer{}
	for _, p := range peers.All {
		byName[p.Name] = p
	}
	var ps []peers.Peer
	for _, a := range args {
		p, ok := byName[a]
		if !ok {
			return nil, fmt.Errorf("unknown peer %q; peers: %s", a, names(peers.All))
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func names(ps []peers.Peer) string {
	var ns []string
	for _, p := range ps {
		ns = append(ns, p.Name)
	}
	return strings.Join(ns, ", ")
}
