// Package packs holds the built-in mesh rule packs: Prometheus rule files
// embedded in the binary.
//
// A pack file (<name>.yml) is a Prometheus rule file written as a Go
// text/template with the delimiters [[ and ]], so that the {{ }} templates
// of Prometheus annotations pass through unchanged. Every threshold, window,
// `for` and minimum rate is a parameter ([[ .error_ratio ]]); params.yml
// holds the defaults of each pack. Every selector of an alerting rule ends
// with [[ .sel ]], a comma-separated list of extra label matchers that the
// rule engine fills to split a pack into per-service overrides
// (destination_service_name="checkout" for the override group,
// destination_service_name!~"checkout" for the default group); it is empty
// by default. Recording groups never use sel: they are evaluated once.
//
// The golden, edges and mtls packs read the series of the recording pack
// (mesh:istio_*), so they need it enabled.
package packs

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"text/template"

	"go.yaml.in/yaml/v3"
)

// Errors wrapped by Defaults and Render.
var (
	// ErrUnknownPack is returned for a pack name not in Names.
	ErrUnknownPack = errors.New("unknown rule pack")
	// ErrUnknownParam is returned by Render for a parameter the pack does not have.
	ErrUnknownParam = errors.New("unknown rule pack parameter")
	// ErrBadValue is returned by Render for a parameter or sel value that
	// would break the structure of the rule file (a line break).
	ErrBadValue = errors.New("bad rule pack parameter value")
)

// names lists the packs in the order Names returns them.
var names = []string{
	"recording",
	"golden",
	"edges",
	"traffic",
	"mtls",
	"controlplane",
	"config",
	"workload",
	"linkerd",
}

// selParam is the template name of the extra matchers.
const selParam = "sel"

//go:embed *.yml
var files embed.FS

// Names returns the pack names in a stable order.
func Names() []string { return slices.Clone(names) }

// loaded is the parsed content of the embedded files.
type loaded struct {
	defaults  map[string]map[string]string
	templates map[string]*template.Template
}

var load = sync.OnceValues(func() (*loaded, error) {
	b, err := files.ReadFile("params.yml")
	if err != nil {
		return nil, fmt.Errorf("read rule pack defaults: %w", err)
	}
	l := &loaded{templates: make(map[string]*template.Template, len(names))}
	if err := yaml.Unmarshal(b, &l.defaults); err != nil {
		return nil, fmt.Errorf("decode rule pack defaults params.yml: %w", err)
	}
	for _, name := range names {
		d, ok := l.defaults[name]
		if !ok {
			return nil, fmt.Errorf("params.yml: no entry for pack %q", name)
		}
		if _, ok := d[selParam]; ok {
			return nil, fmt.Errorf("params.yml: pack %q: parameter name %q is reserved for the extra matchers", name, selParam)
		}
		src, err := files.ReadFile(name + ".yml")
		if err != nil {
			return nil, fmt.Errorf("read rule pack %s: %w", name, err)
		}
		t, err := template.New(name+".yml").Delims("[[", "]]").Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("parse rule pack %s: %w", name, err)
		}
		l.templates[name] = t
	}
	for name := range l.defaults {
		if !slices.Contains(names, name) {
			return nil, fmt.Errorf("params.yml: entry for unknown pack %q", name)
		}
	}
	return l, nil
})

// Defaults returns a copy of the default parameters of pack.
func Defaults(pack string) (map[string]string, error) {
	l, err := load()
	if err != nil {
		return nil, err
	}
	d, ok := l.defaults[pack]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownPack, pack, strings.Join(names, ", "))
	}
	out := make(map[string]string, len(d))
	maps.Copy(out, d)
	return out, nil
}

// Render returns the pack's rule file with params over the defaults and sel as the
// extra matchers; an unknown pack or parameter is an error naming it.
func Render(pack string, params map[string]string, sel string) ([]byte, error) {
	l, err := load()
	if err != nil {
		return nil, err
	}
	data, err := Defaults(pack)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for k := range params {
		if _, ok := data[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		known := slices.Sorted(maps.Keys(data))
		return nil, fmt.Errorf("%w %s in pack %s (known: %s)", ErrUnknownParam,
			strings.Join(quoteAll(unknown), ", "), pack, strings.Join(known, ", "))
	}
	maps.Copy(data, params)
	for _, k := range slices.Sorted(maps.Keys(data)) {
		if strings.ContainsAny(data[k], "\r\n") {
			return nil, fmt.Errorf("%w: pack %s: parameter %q contains a line break", ErrBadValue, pack, k)
		}
	}
	if strings.ContainsAny(sel, "\r\n") {
		return nil, fmt.Errorf("%w: pack %s: matchers %q contain a line break", ErrBadValue, pack, sel)
	}
	data[selParam] = sel
	var buf bytes.Buffer
	if err := l.templates[pack].Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("render rule pack %s: %w", pack, err)
	}
	return buf.Bytes(), nil
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}
