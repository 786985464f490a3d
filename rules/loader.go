package rules

import (
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/meshlens/meshlens/rules/packs"
)

// packPrefix starts the identifier of every rule source rendered from a
// built-in pack; /api/v1/rules shows it as the group's file.
const packPrefix = "packs/"

// packSource is one rendering of a built-in pack.
type packSource struct {
	pack   string
	params map[string]string
	sel    string
}

// sources is the resolved rule set of a Config: rule file paths and pack
// renderings, by identifier.
type sources struct {
	files    []string
	packs    map[string]packSource
	disabled map[string]bool
}

// identifiers returns every rule source in load order: files, then packs.
func (s *sources) identifiers() []string {
	return append(slices.Clone(s.files), slices.Sorted(maps.Keys(s.packs))...)
}

// resolve expands the file globs of c and renders the identifiers of its
// packs. Errors name the configuration field.
func resolve(c Config) (*sources, error) {
	s := &sources{packs: map[string]packSource{}, disabled: map[string]bool{}}
	for _, g := range c.DisabledGroups {
		s.disabled[g] = true
	}
	for _, pattern := range c.Files {
		m, err := filepath.Glob(pattern)
		if err != nil {
			return nil, fmt.Errorf("rules.files: %q: %w", pattern, err)
		}
		s.files = append(s.files, m...)
	}
	known := packs.Names()
	for name := range c.Packs {
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("rules.packs: unknown pack %q (packs: %s)", name, strings.Join(known, ", "))
		}
	}
	for _, name := range known {
		p, ok := c.Packs[name]
		if ok && p.Disabled {
			continue
		}
		id := packPrefix + name + ".yml"
		if len(p.Overrides) > 0 && name == "recording" {
			return nil, fmt.Errorf("rules.packs.recording.overrides: recording rules take params only; overrides apply to alerting packs")
		}
		if len(p.Overrides) == 0 {
			s.packs[id] = packSource{pack: name, params: p.Params}
			continue
		}
		// The default rendering skips the series of every override; each
		// override renders the pack for its series only.
		exclude := map[string][]string{}
		for i, o := range p.Overrides {
			exclude[o.Label] = append(exclude[o.Label], "(?:"+o.Matches+")")
			params := maps.Clone(p.Params)
			if params == nil {
				params = map[string]string{}
			}
			maps.Copy(params, o.Params)
			s.packs[fmt.Sprintf("%s#overrides[%d]", id, i)] = packSource{
				pack: name, params: params, sel: o.Label + "=~" + strconv.Quote(o.Matches),
			}
		}
		var sel []string
		for _, l := range slices.Sorted(maps.Keys(exclude)) {
			sel = append(sel, l+"!~"+strconv.Quote(strings.Join(exclude[l], "|")))
		}
		s.packs[id] = packSource{pack: name, params: p.Params, sel: strings.Join(sel, ",")}
	}
	for id, src := range s.packs {
		if _, err := packs.Render(src.pack, src.params, src.sel); err != nil {
			return nil, fmt.Errorf("rules.packs.%s (%s): %w", src.pack, id, err)
		}
	}
	return s, nil
}

// loader is the rules.GroupLoader of an Engine: it reads rule files from
// disk and renders built-in packs, and leaves out disabled groups.
type loader struct {
	parser parser.Parser
	logger *slog.Logger

	mu  sync.Mutex
	src *sources
}

func (l *loader) set(s *sources) {
	l.mu.Lock()
	l.src = s
	l.mu.Unlock()
}

func (l *loader) current() *sources {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.src
}

// Load implements rules.GroupLoader.
func (l *loader) Load(id string, ignoreUnknownFields bool, scheme model.ValidationScheme) (*rulefmt.RuleGroups, []error) {
	src := l.current()
	var (
		rgs  *rulefmt.RuleGroups
		errs []error
	)
	if p, ok := src.packs[id]; ok {
		b, err := packs.Render(p.pack, p.params, p.sel)
		if err != nil {
			return nil, []error{fmt.Errorf("%s: %w", id, err)}
		}
		rgs, errs = rulefmt.Parse(b, ignoreUnknownFields, scheme, l.parser, l.logger)
		for i := range errs {
			errs[i] = fmt.Errorf("%s: %w", id, errs[i])
		}
	} else {
		rgs, errs = rulefmt.ParseFile(id, ignoreUnknownFields, scheme, l.parser, l.logger)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	rgs.Groups = slices.DeleteFunc(rgs.Groups, func(g rulefmt.RuleGroup) bool { return src.disabled[g.Name] })
	return rgs, nil
}

// Parse implements rules.GroupLoader.
func (l *loader) Parse(query string) (parser.Expr, error) { return l.parser.ParseExpr(query) }
