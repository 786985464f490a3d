package traceql

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

type tokenKind uint8

const (
	tEOF tokenKind = iota
	tLBrace
	tRBrace
	tLParen
	tRParen
	tAnd   // &&
	tOr    // ||
	tNot   // !
	tEq    // =
	tNeq   // !=
	tRe    // =~
	tNre   // !~
	tGt    // >
	tGte   // >=
	tLt    // <
	tLte   // <=
	tPipe  // |
	tComma // ,
	// Structural operators between spansets (>> << ~ and their negated
	// and union forms); > < !~ double as comparisons inside a spanset.
	tStructural
	tArith // + - * / % ^
	tBracket
	tString
	tInt
	tFloat
	tDuration
	tIdent
	tAttr // .name, span.name, resource.name, or another scope's attribute
)

type token struct {
	kind tokenKind
	pos  int    // byte offset in the query
	text string // the token as written
	// For tString and tAttr: the unquoted string or attribute name.
	str string
	// For tAttr: the scope as written before the dot ("" when unscoped).
	scope string
	num   int64
	flt   float64
}

func (t token) String() string {
	if t.kind == tEOF {
		return "end of query"
	}
	return fmt.Sprintf("%q", t.text)
}

// operators, longest first where one is a prefix of another.
var operators = []struct {
	text string
	kind tokenKind
}{
	{"&>>", tStructural}, {"&<<", tStructural}, {"!>>", tStructural}, {"!<<", tStructural},
	{"&>", tStructural}, {"&<", tStructural}, {"&~", tStructural}, {"!>", tStructural}, {"!<", tStructural},
	{">>", tStructural}, {"<<", tStructural},
	{"&&", tAnd}, {"||", tOr}, {"!=", tNeq}, {"!~", tNre}, {"=~", tRe}, {">=", tGte}, {"<=", tLte},
	{"=", tEq}, {">", tGt}, {"<", tLt}, {"~", tStructural}, {"!", tNot}, {"|", tPipe},
	{"{", tLBrace}, {"}", tRBrace}, {"(", tLParen}, {")", tRParen}, {",", tComma},
	{"[", tBracket}, {"]", tBracket},
	{"+", tArith}, {"-", tArith}, {"*", tArith}, {"/", tArith}, {"%", tArith}, {"^", tArith},
}

// attrStop are the characters that end an attribute name, besides space.
const attrStop = "{}()=!<>&|~^,+*%\"`[]"

type lexer struct {
	in  string
	pos int
}

func (l *lexer) errorf(pos int, format string, args ...any) error {
	return &ParseError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// next returns the next token.
func (l *lexer) next() (token, error) {
	for l.pos < len(l.in) && isSpace(l.in[l.pos]) {
		l.pos++
	}
	start := l.pos
	if l.pos >= len(l.in) {
		return token{kind: tEOF, pos: start}, nil
	}
	c := l.in[l.pos]
	switch {
	case c == '"' || c == '`':
		s, err := l.quoted()
		if err != nil {
			return token{}, err
		}
		return token{kind: tString, pos: start, text: l.in[start:l.pos], str: s}, nil
	case c == '.' && l.pos+1 < len(l.in) && !isDigit(l.in[l.pos+1]):
		l.pos++
		name, err := l.attrName(start)
		if err != nil {
			return token{}, err
		}
		return token{kind: tAttr, pos: start, text: l.in[start:l.pos], str: name}, nil
	case isDigit(c) || c == '.' || c == '-' && l.pos+1 < len(l.in) && (isDigit(l.in[l.pos+1]) || l.in[l.pos+1] == '.'):
		return l.number()
	case isIdentStart(c):
		l.pos++
		for l.pos < len(l.in) && isIdentChar(l.in[l.pos]) {
			l.pos++
		}
		// Colon forms of intrinsics: span:name, trace:rootService, ...
		if l.pos+1 < len(l.in) && l.in[l.pos] == ':' && isIdentStart(l.in[l.pos+1]) {
			l.pos += 2
			for l.pos < len(l.in) && isIdentChar(l.in[l.pos]) {
				l.pos++
			}
		}
		word := l.in[start:l.pos]
		// A scoped attribute: span.x, resource.x, event.x, ...
		if l.pos < len(l.in) && l.in[l.pos] == '.' && !strings.Contains(word, ":") {
			l.pos++
			name, err := l.attrName(start)
			if err != nil {
				return token{}, err
			}
			return token{kind: tAttr, pos: start, text: l.in[start:l.pos], str: name, scope: word}, nil
		}
		return token{kind: tIdent, pos: start, text: word}, nil
	}
	for _, op := range operators {
		if strings.HasPrefix(l.in[l.pos:], op.text) {
			l.pos += len(op.text)
			return token{kind: op.kind, pos: start, text: op.text}, nil
		}
	}
	r, _ := utf8.DecodeRuneInString(l.in[l.pos:])
	return token{}, l.errorf(start, "unexpected character %q", r)
}

// attrName reads an attribute name after its dot: either quoted or up to
// a space or an operator character.
func (l *lexer) attrName(start int) (string, error) {
	if l.pos < len(l.in) && l.in[l.pos] == '"' {
		return l.quoted()
	}
	from := l.pos
	for l.pos < len(l.in) && !isSpace(l.in[l.pos]) && strings.IndexByte(attrStop, l.in[l.pos]) < 0 {
		l.pos++
	}
	if l.pos == from {
		return "", l.errorf(start, "attribute %q has no name", l.in[start:l.pos])
	}
	return l.in[from:l.pos], nil
}

// quoted reads a double-quoted string with Go escapes or a back-quoted raw
// string.
func (l *lexer) quoted() (string, error) {
	start := l.pos
	q := l.in[l.pos]
	l.pos++
	if q == '`' {
		end := strings.IndexByte(l.in[l.pos:], '`')
		if end < 0 {
			return "", l.errorf(start, "unterminated string")
		}
		s := l.in[l.pos : l.pos+end]
		l.pos += end + 1
		return s, nil
	}
	for l.pos < len(l.in) {
		switch l.in[l.pos] {
		case '\\':
			l.pos += 2
			continue
		case '"':
			l.pos++
			s, err := strconv.Unquote(l.in[start:l.pos])
			if err != nil {
				return "", l.errorf(start, "invalid string %s", l.in[start:l.pos])
			}
			return s, nil
		}
		l.pos++
	}
	return "", l.errorf(start, "unterminated string")
}

// number reads an integer, a float or a duration (100ms, 1.5s, 1h30m).
func (l *lexer) number() (token, error) {
	start := l.pos
	if l.in[l.pos] == '-' {
		l.pos++
	}
	for l.pos < len(l.in) && (isDigit(l.in[l.pos]) || l.in[l.pos] == '.') {
		l.pos++
	}
	isFloat := strings.Contains(l.in[start:l.pos], ".")
	if l.pos < len(l.in) && (l.in[l.pos] == 'e' || l.in[l.pos] == 'E') && l.pos+1 < len(l.in) &&
		(isDigit(l.in[l.pos+1]) || (l.in[l.pos+1] == '-' || l.in[l.pos+1] == '+') && l.pos+2 < len(l.in) && isDigit(l.in[l.pos+2])) {
		isFloat = true
		l.pos += 2
		for l.pos < len(l.in) && isDigit(l.in[l.pos]) {
			l.pos++
		}
	}
	if l.pos < len(l.in) && (isIdentStart(l.in[l.pos]) || strings.HasPrefix(l.in[l.pos:], "µ")) {
		// A duration: units and further number-unit pairs.
		for l.pos < len(l.in) && (isIdentChar(l.in[l.pos]) || l.in[l.pos] == '.' || strings.HasPrefix(l.in[l.pos:], "µ")) {
			if strings.HasPrefix(l.in[l.pos:], "µ") {
				l.pos += len("µ")
				continue
			}
			l.pos++
		}
		text := l.in[start:l.pos]
		d, err := time.ParseDuration(text)
		if err != nil {
			return token{}, l.errorf(start, "invalid duration %q", text)
		}
		return token{kind: tDuration, pos: start, text: text, num: int64(d)}, nil
	}
	text := l.in[start:l.pos]
	if isFloat {
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return token{}, l.errorf(start, "invalid number %q", text)
		}
		return token{kind: tFloat, pos: start, text: text, flt: f}, nil
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return token{}, l.errorf(start, "invalid integer %q", text)
	}
	return token{kind: tInt, pos: start, text: text, num: n}, nil
}
