package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshlens/meshlens/internal/meshsim/topology"
	"github.com/meshlens/meshlens/internal/scenario"
)

// runScenario validates scenario files: syntax, fields, and the services
// and clusters they name against their topology.
func (m *Main) runScenario(_ context.Context, args []string) error {
	fs, lvl := m.newFlagSet("scenario")
	if err := m.parse(fs, lvl, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("scenario: name one or more scenario files")
	}
	var errs []error
	for _, path := range fs.Args() {
		sc, err := scenario.Load(path)
		if err == nil {
			var t *topology.Topology
			if t, err = topology.Generate(sc.TopologyOptions()); err == nil {
				err = sc.Bind(t)
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(m.Stdout, "%s: ok (%s, %d faults, %d expected alerts)\n", path, sc.Name, len(sc.Faults), len(sc.Expect.Alerts))
	}
	return errors.Join(errs...)
}
