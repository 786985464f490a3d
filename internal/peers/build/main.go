// Command build builds the pinned test peers into the peers cache, so CI
// builds them once, up front, with progress on stderr.
//
// Usage: build [name ...]; no names: every peer in peers.All.
//
// Two builds run at a time (each go command compiles in parallel itself);
// peers of one module are built one after the other, so the second reuses
// the first one's compiled packages from the Go build cache.
package main

import (
	"fmt"
	"os"
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

	start := time.Now()
	var (
		mu     sync.Mutex
		failed []string
		wg     sync.WaitGroup
		sem    = make(chan struct{}, parallel)
	)
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stderr, "[%4ds] "+format+"\n", append([]any{int(time.Since(start).Seconds())}, args...)...)
	}
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			for _, p := range g {
				t0 := time.Now()
				logf("building %s (%s)...", p.Name, p.Package)
				bin, err := peers.Build(p)
				if err != nil {
					logf("FAILED %s after %s: %v", p.Name, time.Since(t0).Round(time.Second), err)
					mu.Lock()
					failed = append(failed, p.Name)
					mu.Unlock()
					continue
				}
				logf("built %s in %s: %s", p.Name, time.Since(t0).Round(time.Second), bin)
			}
		}()
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
			logf("still building...")
		}
	}
	if len(failed) > 0 {
		logf("peers not built: %v", failed)
		os.Exit(1)
	}
	logf("all %d peers built", len(todo))
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
			return nil, fmt.Errorf("unknown peer %q", a)
		}
		ps = append(ps, p)
	}
	return ps, nil
}
