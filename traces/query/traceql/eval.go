package traceql

import (
	"cmp"
	"strconv"

	"github.com/meshlens/meshlens/traces"
)

// Eval evaluates the query over the spans of one trace and returns the
// indexes, ascending, of the spans in the resulting spanset; none when the
// trace does not match.
func (q *Query) Eval(spans []traces.Span) []int {
	if len(spans) == 0 {
		return nil
	}
	e := evaluator{spans: spans, sum: traces.Summarize(spans)}
	return e.spanset(q.root)
}

type evaluator struct {
	spans []traces.Span
	sum   traces.Summary
}

func (e *evaluator) spanset(x spansetExpr) []int {
	switch x := x.(type) {
	case *spansetFilter:
		var out []int
		for i := range e.spans {
			if x.cond == nil || e.cond(x.cond, &e.spans[i]) {
				out = append(out, i)
			}
		}
		return out
	case *spansetOp:
		l := e.spanset(x.l)
		if x.and && len(l) == 0 {
			return nil
		}
		r := e.spanset(x.r)
		if x.and && len(r) == 0 {
			return nil
		}
		return union(l, r)
	}
	return nil
}

// union merges two ascending index lists.
func union(a, b []int) []int {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]int, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

func (e *evaluator) cond(x fieldExpr, s *traces.Span) bool {
	switch x := x.(type) {
	case *boolOp:
		if x.and {
			return e.cond(x.l, s) && e.cond(x.r, s)
		}
		return e.cond(x.l, s) || e.cond(x.r, s)
	case *staticCond:
		return x.v
	case *comparison:
		return compare(x, e.value(x.l, s), e.value(x.r, s))
	}
	return false
}

func (e *evaluator) value(o operand, s *traces.Span) Value {
	if o.static {
		return o.val
	}
	return SpanValue(o.attr, s, e.sum)
}

// SpanValue is the value of an attribute or intrinsic for span s of the
// trace summarized by sum; TypeNil when the span has no such attribute.
// An unscoped attribute is the span's, else the resource's.
func SpanValue(a Attribute, s *traces.Span, sum traces.Summary) Value {
	switch a.Scope {
	case ScopeIntrinsic:
		switch a.Intrinsic {
		case IntrinsicName:
			return Value{Type: TypeString, Str: s.Name}
		case IntrinsicStatus:
			return Value{Type: TypeStatus, Int: int64(s.StatusCode)}
		case IntrinsicStatusMessage:
			return Value{Type: TypeString, Str: s.StatusMessage}
		case IntrinsicKind:
			return Value{Type: TypeKind, Int: int64(s.Kind)}
		case IntrinsicDuration:
			return Value{Type: TypeDuration, Int: int64(s.DurationNanos())}
		case IntrinsicRootServiceName:
			return Value{Type: TypeString, Str: sum.RootService}
		case IntrinsicRootName:
			return Value{Type: TypeString, Str: sum.RootName}
		case IntrinsicTraceDuration:
			d := int64(0)
			if sum.EndUnixNano > sum.StartUnixNano {
				d = int64(sum.EndUnixNano - sum.StartUnixNano)
			}
			return Value{Type: TypeDuration, Int: d}
		}
		return Value{}
	case ScopeSpan:
		if at, ok := s.Attr(a.Name); ok {
			return attrValue(at)
		}
		return Value{}
	case ScopeResource:
		return resourceValue(a.Name, s)
	}
	if at, ok := s.Attr(a.Name); ok {
		return attrValue(at)
	}
	return resourceValue(a.Name, s)
}

func resourceValue(key string, s *traces.Span) Value {
	if at, ok := s.ResourceAttr(key); ok {
		return attrValue(at)
	}
	if key == traces.ServiceNameKey && s.Service != "" {
		return Value{Type: TypeString, Str: s.Service}
	}
	return Value{}
}

func attrValue(a traces.Attr) Value {
	switch a.Type {
	case traces.TypeInt:
		return Value{Type: TypeInt, Int: a.Int}
	case traces.TypeFloat:
		return Value{Type: TypeFloat, Flt: a.Float}
	case traces.TypeBool:
		return Value{Type: TypeBool, Bool: a.Bool}
	}
	return Value{Type: TypeString, Str: a.Str}
}

// compare applies a comparison. A missing attribute matches only "= nil";
// values of different types never match, except that integers, floats and
// durations compare as numbers, and a string attribute holding a number
// (as Envoy's Zipkin tags do) compares with a number literal as a number.
func compare(c *comparison, l, r Value) bool {
	switch c.op {
	case tRe:
		return l.Type == TypeString && c.re.MatchString(l.Str)
	case tNre:
		return l.Type == TypeString && !c.re.MatchString(l.Str)
	}
	if c.r.static && r.Type == TypeNil || c.l.static && l.Type == TypeNil {
		// x = nil: x is missing; x != nil: x is present.
		v := l
		if c.l.static && l.Type == TypeNil {
			v = r
		}
		present := v.Type != TypeNil
		switch c.op {
		case tEq:
			return !present
		case tNeq:
			return present
		}
		return false
	}
	if l.Type == TypeNil || r.Type == TypeNil {
		return false
	}
	l, r = coerce(l, r, c.l.static, c.r.static)
	var order int
	switch {
	case isNumber(l.Type) && isNumber(r.Type):
		if l.Type == TypeFloat || r.Type == TypeFloat {
			order = cmp.Compare(l.float(), r.float())
		} else {
			order = cmp.Compare(l.Int, r.Int)
		}
	case l.Type != r.Type:
		return false
	case l.Type == TypeString:
		order = cmp.Compare(l.Str, r.Str)
	case l.Type == TypeBool:
		if c.op != tEq && c.op != tNeq {
			return false
		}
		order = 1
		if l.Bool == r.Bool {
			order = 0
		}
	default: // status, kind
		if c.op != tEq && c.op != tNeq {
			return false
		}
		order = cmp.Compare(l.Int, r.Int)
	}
	switch c.op {
	case tEq:
		return order == 0
	case tNeq:
		return order != 0
	case tGt:
		return order > 0
	case tGte:
		return order >= 0
	case tLt:
		return order < 0
	case tLte:
		return order <= 0
	}
	return false
}

func isNumber(t Type) bool { return t == TypeInt || t == TypeFloat || t == TypeDuration }

func (v Value) float() float64 {
	if v.Type == TypeFloat {
		return v.Flt
	}
	return float64(v.Int)
}

// coerce turns a string attribute into a number when the other side is a
// number literal and the string parses as one.
func coerce(l, r Value, lStatic, rStatic bool) (Value, Value) {
	if !lStatic && l.Type == TypeString && rStatic && (r.Type == TypeInt || r.Type == TypeFloat) {
		if n, ok := parseNumber(l.Str); ok {
			l = n
		}
	}
	if !rStatic && r.Type == TypeString && lStatic && (l.Type == TypeInt || l.Type == TypeFloat) {
		if n, ok := parseNumber(r.Str); ok {
			r = n
		}
	}
	return l, r
}

func parseNumber(s string) (Value, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return Value{Type: TypeInt, Int: n}, true
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return Value{Type: TypeFloat, Flt: f}, true
	}
	return Value{}, false
}
