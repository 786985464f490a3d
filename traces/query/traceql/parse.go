// Package traceql parses and evaluates the subset of TraceQL that meshlens
// serves through its Tempo API.
//
// Supported: spansets { ... } holding comparisons of span, resource and
// unscoped attributes (span.x, resource.x, .x) and of the intrinsics name,
// status, statusMessage, kind, duration, rootServiceName, rootName and
// traceDuration (also span:name, span:status, span:statusMessage,
// span:kind, span:duration, trace:rootService, trace:rootName and
// trace:duration) with = != =~ !~ > >= < <=, joined by && and || with
// parentheses; string, integer, float, boolean, duration, nil, status and
// kind literals; and && and || between spansets. {} selects every span.
//
// Everything else TraceQL has (pipelines, aggregates, structural operators,
// select, arithmetic, other scopes and intrinsics) is a ParseError naming
// the construct, so that no query is answered with a silently wrong result.
package traceql

import (
	"fmt"
	"strings"

	"github.com/grafana/regexp"
)

// ParseError is a query that is not valid TraceQL or uses a construct
// meshlens does not support.
type ParseError struct {
	Pos int // byte offset in the query
	Msg string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("traceql: at position %d: %s", e.Pos+1, e.Msg)
}

// Scope is where an attribute is looked up.
type Scope uint8

// Attribute scopes.
const (
	ScopeNone      Scope = iota // .x: the span's attribute, else the resource's
	ScopeSpan                   // span.x
	ScopeResource               // resource.x
	ScopeIntrinsic              // name, status, duration, ...
)

// Intrinsic is a field of every span or trace.
type Intrinsic uint8

// Supported intrinsics.
const (
	IntrinsicNone Intrinsic = iota
	IntrinsicName
	IntrinsicStatus
	IntrinsicStatusMessage
	IntrinsicKind
	IntrinsicDuration
	IntrinsicRootServiceName
	IntrinsicRootName
	IntrinsicTraceDuration
)

// intrinsics maps each spelling to its intrinsic.
var intrinsics = map[string]Intrinsic{
	"name":               IntrinsicName,
	"span:name":          IntrinsicName,
	"status":             IntrinsicStatus,
	"span:status":        IntrinsicStatus,
	"statusMessage":      IntrinsicStatusMessage,
	"span:statusMessage": IntrinsicStatusMessage,
	"kind":               IntrinsicKind,
	"span:kind":          IntrinsicKind,
	"duration":           IntrinsicDuration,
	"span:duration":      IntrinsicDuration,
	"rootServiceName":    IntrinsicRootServiceName,
	"trace:rootService":  IntrinsicRootServiceName,
	"rootName":           IntrinsicRootName,
	"trace:rootName":     IntrinsicRootName,
	"traceDuration":      IntrinsicTraceDuration,
	"trace:duration":     IntrinsicTraceDuration,
}

// intrinsicNames is the name each intrinsic is shown with.
var intrinsicNames = [...]string{
	IntrinsicName:            "name",
	IntrinsicStatus:          "status",
	IntrinsicStatusMessage:   "statusMessage",
	IntrinsicKind:            "kind",
	IntrinsicDuration:        "duration",
	IntrinsicRootServiceName: "rootServiceName",
	IntrinsicRootName:        "rootName",
	IntrinsicTraceDuration:   "traceDuration",
}

// IntrinsicNames lists the supported intrinsics in their short spelling.
func IntrinsicNames() []string {
	return append([]string(nil), intrinsicNames[1:]...)
}

// Attribute is a reference to a span's attribute or intrinsic.
type Attribute struct {
	Scope     Scope
	Name      string    // the attribute key; the intrinsic's name for ScopeIntrinsic
	Intrinsic Intrinsic // for ScopeIntrinsic
}

func (a Attribute) String() string {
	switch a.Scope {
	case ScopeSpan:
		return "span." + a.Name
	case ScopeResource:
		return "resource." + a.Name
	case ScopeIntrinsic:
		return a.Name
	}
	return "." + a.Name
}

// ParseAttribute parses a scoped attribute name as Tempo's tag APIs take
// it: span.x, resource.x, .x, an unscoped x, or an intrinsic.
func ParseAttribute(s string) (Attribute, error) {
	if in, ok := intrinsics[s]; ok {
		return Attribute{Scope: ScopeIntrinsic, Name: intrinsicNames[in], Intrinsic: in}, nil
	}
	for _, p := range []struct {
		prefix string
		scope  Scope
	}{{"span.", ScopeSpan}, {"resource.", ScopeResource}, {".", ScopeNone}} {
		if name, ok := strings.CutPrefix(s, p.prefix); ok {
			if name == "" {
				return Attribute{}, fmt.Errorf("attribute %q has no name", s)
			}
			return Attribute{Scope: p.scope, Name: name}, nil
		}
	}
	if s == "" {
		return Attribute{}, fmt.Errorf("empty attribute name")
	}
	return Attribute{Scope: ScopeNone, Name: s}, nil
}

// Type is the type of a value.
type Type uint8

// Value types. TypeNil is a missing attribute or the nil literal.
const (
	TypeNil Type = iota
	TypeString
	TypeInt
	TypeFloat
	TypeBool
	TypeDuration
	TypeStatus
	TypeKind
)

var typeNames = [...]string{"nil", "string", "int", "float", "bool", "duration", "status", "kind"}

func (t Type) String() string { return typeNames[t] }

// Value is a typed value: a literal or a span's attribute or intrinsic.
type Value struct {
	Type Type
	Str  string  // TypeString
	Int  int64   // TypeInt, TypeDuration (nanoseconds), TypeStatus, TypeKind
	Flt  float64 // TypeFloat
	Bool bool    // TypeBool
}

// Query is a parsed TraceQL query. It is safe for concurrent use.
type Query struct {
	root  spansetExpr
	attrs []Attribute
}

// Attributes lists the attributes and intrinsics the query compares, in
// order of first appearance, each once.
func (q *Query) Attributes() []Attribute { return q.attrs }

// MatchesAll reports whether the query is {} (every span of every trace).
func (q *Query) MatchesAll() bool {
	f, ok := q.root.(*spansetFilter)
	return ok && f.cond == nil
}

type spansetExpr interface{ spanset() }

type spansetFilter struct{ cond fieldExpr } // nil cond: {}

type spansetOp struct {
	and  bool
	l, r spansetExpr
}

func (*spansetFilter) spanset() {}
func (*spansetOp) spanset()     {}

type fieldExpr interface{ field() }

type boolOp struct {
	and  bool
	l, r fieldExpr
}

type comparison struct {
	op   tokenKind
	l, r operand
	re   *regexp.Regexp // for =~ and !~
}

// staticCond is a boolean literal used as a condition: { true }.
type staticCond struct{ v bool }

func (*boolOp) field()     {}
func (*comparison) field() {}
func (*staticCond) field() {}

// operand is a literal or an attribute.
type operand struct {
	static bool
	val    Value
	attr   Attribute
}

// staticType is the operand's type when known before evaluation: a
// literal's or an intrinsic's; TypeNil (unknown) for attributes.
func (o operand) staticType() (Type, bool) {
	if o.static {
		return o.val.Type, true
	}
	switch o.attr.Intrinsic {
	case IntrinsicName, IntrinsicStatusMessage, IntrinsicRootServiceName, IntrinsicRootName:
		return TypeString, true
	case IntrinsicStatus:
		return TypeStatus, true
	case IntrinsicKind:
		return TypeKind, true
	case IntrinsicDuration, IntrinsicTraceDuration:
		return TypeDuration, true
	}
	return TypeNil, false
}

// functions are TraceQL's aggregates and pipeline stages, named in errors.
var functions = map[string]bool{
	"count": true, "avg": true, "max": true, "min": true, "sum": true, "select": true, "by": true,
	"coalesce": true, "rate": true, "count_over_time": true, "quantile_over_time": true,
	"histogram_over_time": true, "compare": true, "topk": true, "bottomk": true,
	"min_over_time": true, "max_over_time": true, "avg_over_time": true, "sum_over_time": true,
}

// Parse parses a TraceQL query. An empty query is {}.
func Parse(s string) (*Query, error) {
	p := &parser{lex: lexer{in: s}}
	if strings.TrimSpace(s) == "" {
		return &Query{root: &spansetFilter{}}, nil
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	root, err := p.spansetOr()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.unexpected("after a spanset")
	}
	return &Query{root: root, attrs: p.attrs}, nil
}

type parser struct {
	lex   lexer
	tok   token
	attrs []Attribute
}

func (p *parser) advance() error {
	t, err := p.lex.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) errorf(pos int, format string, args ...any) error {
	return &ParseError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// unexpected describes the current token, naming unsupported constructs.
func (p *parser) unexpected(where string) error {
	t := p.tok
	switch t.kind {
	case tPipe:
		return p.errorf(t.pos, "pipelines (|) are not supported")
	case tStructural, tGt, tLt, tNre:
		return p.errorf(t.pos, "structural operator %s between spansets is not supported", t.text)
	case tArith:
		return p.errorf(t.pos, "arithmetic (%s) is not supported", t.text)
	case tIdent:
		if functions[t.text] {
			return p.errorf(t.pos, "%s() is not supported", t.text)
		}
	case tNot:
		return p.errorf(t.pos, "negation (!) is not supported")
	case tBracket:
		return p.errorf(t.pos, "arrays are not supported")
	}
	return p.errorf(t.pos, "unexpected %s %s", t, where)
}

func (p *parser) expect(k tokenKind, what, where string) error {
	if p.tok.kind != k {
		if p.tok.kind == tEOF || p.tok.kind == tIdent || p.tok.kind == tString || p.tok.kind == tAttr ||
			p.tok.kind == tInt || p.tok.kind == tFloat || p.tok.kind == tDuration {
			return p.errorf(p.tok.pos, "expected %s %s, got %s", what, where, p.tok)
		}
		return p.unexpected(where)
	}
	return p.advance()
}

// spansetOr := spansetAnd { "||" spansetAnd }
func (p *parser) spansetOr() (spansetExpr, error) {
	l, err := p.spansetAnd()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tOr {
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.spansetAnd()
		if err != nil {
			return nil, err
		}
		l = &spansetOp{and: false, l: l, r: r}
	}
	return l, nil
}

// spansetAnd := spansetPrimary { "&&" spansetPrimary }
func (p *parser) spansetAnd() (spansetExpr, error) {
	l, err := p.spansetPrimary()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tAnd {
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.spansetPrimary()
		if err != nil {
			return nil, err
		}
		l = &spansetOp{and: true, l: l, r: r}
	}
	return l, nil
}

// spansetPrimary := "{" [ fieldOr ] "}" | "(" spansetOr ")"
func (p *parser) spansetPrimary() (spansetExpr, error) {
	switch p.tok.kind {
	case tLBrace:
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tRBrace {
			return &spansetFilter{}, p.advance()
		}
		cond, err := p.fieldOr()
		if err != nil {
			return nil, err
		}
		if err := p.expect(tRBrace, "}", "to close the spanset"); err != nil {
			return nil, err
		}
		return &spansetFilter{cond: cond}, nil
	case tLParen:
		if err := p.advance(); err != nil {
			return nil, err
		}
		e, err := p.spansetOr()
		if err != nil {
			return nil, err
		}
		if err := p.expect(tRParen, ")", "to close the parenthesis"); err != nil {
			return nil, err
		}
		return e, nil
	case tEOF:
		return nil, p.errorf(p.tok.pos, "expected a spanset { ... }, got end of query")
	}
	switch p.tok.kind {
	case tPipe, tStructural, tArith, tNot, tBracket:
		return nil, p.unexpected("")
	case tIdent:
		if functions[p.tok.text] {
			return nil, p.unexpected("")
		}
	}
	return nil, p.errorf(p.tok.pos, "expected a spanset { ... }, got %s", p.tok)
}

// fieldOr := fieldAnd { "||" fieldAnd }
func (p *parser) fieldOr() (fieldExpr, error) {
	l, err := p.fieldAnd()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tOr {
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.fieldAnd()
		if err != nil {
			return nil, err
		}
		l = &boolOp{and: false, l: l, r: r}
	}
	return l, nil
}

// fieldAnd := fieldPrimary { "&&" fieldPrimary }
func (p *parser) fieldAnd() (fieldExpr, error) {
	l, err := p.fieldPrimary()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tAnd {
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.fieldPrimary()
		if err != nil {
			return nil, err
		}
		l = &boolOp{and: true, l: l, r: r}
	}
	return l, nil
}

// fieldPrimary := "(" fieldOr ")" | operand op operand | "true" | "false"
func (p *parser) fieldPrimary() (fieldExpr, error) {
	if p.tok.kind == tLParen {
		if err := p.advance(); err != nil {
			return nil, err
		}
		e, err := p.fieldOr()
		if err != nil {
			return nil, err
		}
		if err := p.expect(tRParen, ")", "to close the parenthesis"); err != nil {
			return nil, err
		}
		return e, nil
	}
	start := p.tok
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	switch p.tok.kind {
	case tEq, tNeq, tRe, tNre, tGt, tGte, tLt, tLte:
	case tArith:
		return nil, p.unexpected("")
	default:
		if l.static && l.val.Type == TypeBool {
			return &staticCond{v: l.val.Bool}, nil
		}
		if p.tok.kind == tStructural {
			return nil, p.errorf(p.tok.pos, "unexpected %s after %s: expected a comparison", p.tok, start)
		}
		return nil, p.errorf(p.tok.pos, "expected a comparison operator after %s, got %s", start.text, p.tok)
	}
	opTok := p.tok
	if err := p.advance(); err != nil {
		return nil, err
	}
	r, err := p.operand()
	if err != nil {
		return nil, err
	}
	if p.tok.kind == tArith {
		return nil, p.unexpected("")
	}
	return p.comparison(opTok, l, r)
}

// comparison checks the operand types it can know and compiles regexes.
func (p *parser) comparison(opTok token, l, r operand) (fieldExpr, error) {
	c := &comparison{op: opTok.kind, l: l, r: r}
	lt, lok := l.staticType()
	rt, rok := r.staticType()
	switch c.op {
	case tRe, tNre:
		if !r.static || r.val.Type != TypeString {
			return nil, p.errorf(opTok.pos, "%s needs a string regular expression on its right", opTok.text)
		}
		if lok && lt != TypeString {
			return nil, p.errorf(opTok.pos, "%s needs a string on its left, not %s", opTok.text, lt)
		}
		re, err := regexp.Compile("^(?s:" + r.val.Str + ")$")
		if err != nil {
			return nil, p.errorf(opTok.pos, "invalid regular expression %q: %v", r.val.Str, err)
		}
		c.re = re
		return c, nil
	case tGt, tGte, tLt, tLte:
		for _, t := range []struct {
			t  Type
			ok bool
		}{{lt, lok}, {rt, rok}} {
			if t.ok && (t.t == TypeBool || t.t == TypeNil || t.t == TypeStatus || t.t == TypeKind) {
				return nil, p.errorf(opTok.pos, "%s cannot compare %s values", opTok.text, t.t)
			}
		}
	}
	if lok && rok && lt != TypeNil && rt != TypeNil && !comparableTypes(lt, rt) {
		return nil, p.errorf(opTok.pos, "cannot compare %s with %s", lt, rt)
	}
	return c, nil
}

func comparableTypes(a, b Type) bool {
	if a == b {
		return true
	}
	num := func(t Type) bool { return t == TypeInt || t == TypeFloat }
	return num(a) && num(b)
}

// operand := string | number | duration | true | false | nil | status |
// kind | intrinsic | attribute
func (p *parser) operand() (operand, error) {
	t := p.tok
	var o operand
	switch t.kind {
	case tString:
		o = operand{static: true, val: Value{Type: TypeString, Str: t.str}}
	case tInt:
		o = operand{static: true, val: Value{Type: TypeInt, Int: t.num}}
	case tFloat:
		o = operand{static: true, val: Value{Type: TypeFloat, Flt: t.flt}}
	case tDuration:
		o = operand{static: true, val: Value{Type: TypeDuration, Int: t.num}}
	case tAttr:
		a, err := p.attribute(t)
		if err != nil {
			return operand{}, err
		}
		o = operand{attr: a}
	case tIdent:
		v, a, err := p.ident(t)
		if err != nil {
			return operand{}, err
		}
		if a != nil {
			o = operand{attr: *a}
		} else {
			o = operand{static: true, val: v}
		}
	default:
		if t.kind == tEOF {
			return operand{}, p.errorf(t.pos, "expected a value or an attribute, got end of query")
		}
		if t.kind == tRBrace {
			return operand{}, p.errorf(t.pos, "expected a value or an attribute, got %s", t)
		}
		return operand{}, p.unexpected("where a value or an attribute belongs")
	}
	if !o.static {
		p.note(o.attr)
	}
	return o, p.advance()
}

func (p *parser) note(a Attribute) {
	for _, b := range p.attrs {
		if a == b {
			return
		}
	}
	p.attrs = append(p.attrs, a)
}

func (p *parser) attribute(t token) (Attribute, error) {
	switch t.scope {
	case "":
		return Attribute{Scope: ScopeNone, Name: t.str}, nil
	case "span":
		return Attribute{Scope: ScopeSpan, Name: t.str}, nil
	case "resource":
		return Attribute{Scope: ScopeResource, Name: t.str}, nil
	case "event", "link", "instrumentation", "parent", "trace":
		return Attribute{}, p.errorf(t.pos, "%s-scoped attributes (%s) are not supported", t.scope, t.text)
	}
	return Attribute{}, p.errorf(t.pos, "unknown attribute scope %q in %s", t.scope, t.text)
}

var kindLiterals = map[string]int64{
	"unspecified": 0, "internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5,
}

var statusLiterals = map[string]int64{"unset": 0, "ok": 1, "error": 2}

// ident resolves a bare word: a literal or an intrinsic.
func (p *parser) ident(t token) (Value, *Attribute, error) {
	switch t.text {
	case "true", "false":
		return Value{Type: TypeBool, Bool: t.text == "true"}, nil, nil
	case "nil":
		return Value{Type: TypeNil}, nil, nil
	}
	if n, ok := statusLiterals[t.text]; ok {
		return Value{Type: TypeStatus, Int: n}, nil, nil
	}
	if n, ok := kindLiterals[t.text]; ok {
		return Value{Type: TypeKind, Int: n}, nil, nil
	}
	if in, ok := intrinsics[t.text]; ok {
		return Value{}, &Attribute{Scope: ScopeIntrinsic, Name: intrinsicNames[in], Intrinsic: in}, nil
	}
	if functions[t.text] {
		return Value{}, nil, p.errorf(t.pos, "%s() is not supported", t.text)
	}
	if strings.Contains(t.text, ":") || unsupportedIntrinsics[t.text] {
		return Value{}, nil, p.errorf(t.pos, "intrinsic %s is not supported", t.text)
	}
	return Value{}, nil, p.errorf(t.pos, "unknown identifier %s (attributes are written .name, span.name or resource.name; strings are quoted)", t.text)
}

var unsupportedIntrinsics = map[string]bool{
	"childCount": true, "parent": true, "nestedSetLeft": true, "nestedSetRight": true,
	"nestedSetParent": true, "traceID": true, "spanID": true, "parentID": true,
}
