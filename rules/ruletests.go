package rules

import (
	"log/slog"
	"path/filepath"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/meshlens/meshlens/rules/packs"
	"github.com/meshlens/meshlens/rules/ruletest"
)

// TestOptions are the options of `meshlens rules test` and `meshlens rules
// check`. Rule files are read as promtool reads them; in addition a built-in
// pack is named "packs/<name>.yml", and a test file's rule_files entry
// "<name>.yml" that matches no file next to the test file names the pack too.
// Packs are rendered with their default parameters.
func TestOptions(p parser.Parser, logger *slog.Logger) ruletest.Options {
	src := &sources{packs: map[string]packSource{}}
	for _, name := range packs.Names() {
		src.packs[packPrefix+name+".yml"] = packSource{pack: name}
	}
	l := &loader{parser: p, logger: logger, src: src}
	return ruletest.Options{
		Loader: l,
		Parser: p,
		Resolve: func(testFile, ruleFile string) ([]string, error) {
			path := ruleFile
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(testFile), ruleFile)
			}
			m, err := filepath.Glob(path)
			if err != nil || len(m) > 0 {
				return m, err
			}
			for _, id := range []string{ruleFile, packPrefix + ruleFile} {
				if _, ok := src.packs[id]; ok {
					return []string{id}, nil
				}
			}
			return nil, nil
		},
	}
}
