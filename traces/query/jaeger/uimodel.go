package jaeger

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshlens/meshlens/traces"
)

// The JSON model of Jaeger's UI (jaeger internal/uimodel), as Jaeger's
// query service shows spans it received over OTLP: the OTLP-to-Jaeger
// translation of the OpenTelemetry Collector (span.kind, otel.status_code,
// error, otel.status_description, otel.scope.name, otel.scope.version,
// w3c.tracestate tags; the resource as the process) followed by the query
// service's adjusters (tags sorted, telemetry.sdk.* moved to the process,
// ip tags as dotted quads, the parent reference first, clock skew
// warnings).

type uiTrace struct {
	TraceID   string               `json:"traceID"`
	Spans     []uiSpan             `json:"spans"`
	Processes map[string]uiProcess `json:"processes"`
	Warnings  []string             `json:"warnings"`
}

type uiSpan struct {
	TraceID       string        `json:"traceID"`
	SpanID        string        `json:"spanID"`
	Flags         uint32        `json:"flags,omitempty"`
	OperationName string        `json:"operationName"`
	References    []uiReference `json:"references"`
	StartTime     uint64        `json:"startTime"` // µs since the epoch
	Duration      uint64        `json:"duration"`  // µs
	Tags          []keyValue    `json:"tags"`
	Logs          []uiLog       `json:"logs"`
	ProcessID     string        `json:"processID,omitempty"`
	Warnings      []string      `json:"warnings"`
}

type uiReference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type uiProcess struct {
	ServiceName string     `json:"serviceName"`
	Tags        []keyValue `json:"tags"`
}

type uiLog struct {
	Timestamp uint64     `json:"timestamp"`
	Fields    []keyValue `json:"fields"`
}

// keyValue is a typed tag. Value is a string, bool, int64 (a string
// beyond JavaScript's safe integers), float64, or for binary the base64
// text.
type keyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type,omitempty"`
	Value any    `json:"value"`
}

// Jaeger's value types, in the order Jaeger sorts them.
const (
	typeString  = "string"
	typeBool    = "bool"
	typeInt64   = "int64"
	typeFloat64 = "float64"
	typeBinary  = "binary"
)

var typeOrder = map[string]int{typeString: 0, typeBool: 1, typeInt64: 2, typeFloat64: 3, typeBinary: 4}

const (
	refChildOf     = "CHILD_OF"
	refFollowsFrom = "FOLLOWS_FROM"

	noServiceName = "OTLPResourceNoServiceName"
	jsMaxSafeInt  = int64(1)<<53 - 1
)

// libraryKeys are span attributes Jaeger shows among the process tags.
var libraryKeys = map[string]bool{
	"telemetry.sdk.language": true, "telemetry.sdk.name": true, "telemetry.sdk.version": true,
	"telemetry.distro.name": true, "telemetry.distro.version": true,
}

// traceIDString prints a trace id as Jaeger does: 16 hex digits when its
// high half is zero, else 32.
func traceIDString(id traces.TraceID) string {
	if [8]byte(id[:8]) == [8]byte{} {
		return hex.EncodeToString(id[8:])
	}
	return id.String()
}

func micros(ns uint64) uint64 { return ns / 1000 }

func attrKeyValue(a traces.Attr) keyValue {
	switch a.Type {
	case traces.TypeInt:
		if a.Int > jsMaxSafeInt || a.Int < -jsMaxSafeInt {
			return keyValue{Key: a.Key, Type: typeInt64, Value: strconv.FormatInt(a.Int, 10)}
		}
		return keyValue{Key: a.Key, Type: typeInt64, Value: a.Int}
	case traces.TypeFloat:
		return keyValue{Key: a.Key, Type: typeFloat64, Value: a.Float}
	case traces.TypeBool:
		return keyValue{Key: a.Key, Type: typeBool, Value: a.Bool}
	case traces.TypeBytes:
		return keyValue{Key: a.Key, Type: typeBinary, Value: a.Str}
	}
	return keyValue{Key: a.Key, Type: typeString, Value: a.Str}
}

func str(k, v string) keyValue { return keyValue{Key: k, Type: typeString, Value: v} }

// compareKV orders tags as Jaeger's KeyValues.Sort: key, type, value.
func compareKV(a, b keyValue) int {
	if c := cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(typeOrder[a.Type], typeOrder[b.Type])); c != 0 {
		return c
	}
	switch av := a.Value.(type) {
	case string:
		bv, _ := b.Value.(string)
		return cmp.Compare(av, bv)
	case bool:
		bv, _ := b.Value.(bool)
		if av == bv {
			return 0
		}
		if !av {
			return -1
		}
		return 1
	case int64:
		bv, _ := b.Value.(int64)
		return cmp.Compare(av, bv)
	case float64:
		bv, _ := b.Value.(float64)
		return cmp.Compare(av, bv)
	}
	return 0
}

func sortKVs(kvs []keyValue) { slices.SortStableFunc(kvs, compareKV) }

// ipTags converts integer ip and peer.ipv4 tags to dotted quads.
func ipTags(kvs []keyValue) {
	for i, kv := range kvs {
		if kv.Key != "ip" && kv.Key != "peer.ipv4" {
			continue
		}
		var v uint32
		switch x := kv.Value.(type) {
		case int64:
			v = uint32(x)
		case float64:
			v = uint32(x)
		default:
			continue
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], v)
		kvs[i] = str(kv.Key, fmt.Sprintf("%d.%d.%d.%d", b[0], b[1], b[2], b[3]))
	}
}

// spanTags are the span's tags as Jaeger shows them, and the library
// attributes Jaeger moves to the process.
func spanTags(s *traces.Span) (tags, library []keyValue) {
	tags = make([]keyValue, 0, len(s.Attrs)+6)
	if s.ScopeName != "" {
		tags = append(tags, str("otel.scope.name", s.ScopeName))
	}
	if s.ScopeVersion != "" {
		tags = append(tags, str("otel.scope.version", s.ScopeVersion))
	}
	for _, a := range s.Attrs {
		kv := attrKeyValue(a)
		if libraryKeys[a.Key] {
			library = append(library, kv)
			continue
		}
		tags = append(tags, kv)
	}
	if s.Kind != traces.KindUnspecified {
		tags = append(tags, str("span.kind", s.Kind.String()))
	}
	switch s.StatusCode {
	case traces.StatusOK:
		tags = append(tags, str("otel.status_code", "OK"))
	case traces.StatusError:
		tags = append(tags, str("otel.status_code", "ERROR"), keyValue{Key: "error", Type: typeBool, Value: true})
	}
	if s.StatusMessage != "" {
		tags = append(tags, str("otel.status_description", s.StatusMessage))
	}
	if s.TraceState != "" {
		tags = append(tags, str("w3c.tracestate", s.TraceState))
	}
	sortKVs(tags)
	ipTags(tags)
	return tags, library
}

func process(s *traces.Span, library []keyValue) uiProcess {
	p := uiProcess{Tags: []keyValue{}}
	switch {
	case len(s.Resource) == 0 && s.Service == "":
		p.ServiceName = noServiceName
	case len(s.Resource) == 0:
		p.ServiceName = s.Service
	default:
		if a, ok := s.ResourceAttr(traces.ServiceNameKey); ok {
			p.ServiceName = a.Str
		} else {
			p.ServiceName = s.Service
		}
	}
	for _, a := range s.Resource {
		if a.Key != traces.ServiceNameKey {
			p.Tags = append(p.Tags, attrKeyValue(a))
		}
	}
	p.Tags = append(p.Tags, library...)
	sortKVs(p.Tags)
	ipTags(p.Tags)
	sortKVs(p.Tags)
	return p
}

func processKey(p uiProcess) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q", p.ServiceName)
	for _, t := range p.Tags {
		fmt.Fprintf(&b, "|%q:%s:%v", t.Key, t.Type, t.Value)
	}
	return b.String()
}

func logs(s *traces.Span) []uiLog {
	out := make([]uiLog, 0, len(s.Events))
	for _, e := range s.Events {
		fields := make([]keyValue, 0, len(e.Attrs)+1)
		hasEvent := slices.ContainsFunc(e.Attrs, func(a traces.Attr) bool { return a.Key == "event" })
		if e.Name != "" && !hasEvent {
			fields = append(fields, str("event", e.Name))
		}
		for _, a := range e.Attrs {
			fields = append(fields, attrKeyValue(a))
		}
		// "event" first, the rest sorted.
		off := 0
		for i, f := range fields {
			if f.Key == "event" && f.Type == typeString {
				fields[0], fields[i] = fields[i], fields[0]
				off = 1
				break
			}
		}
		sortKVs(fields[off:])
		out = append(out, uiLog{Timestamp: micros(e.TimeUnixNano), Fields: fields})
	}
	return out
}

func references(s *traces.Span) []uiReference {
	refs := make([]uiReference, 0, len(s.Links)+1)
	tid := traceIDString(s.TraceID)
	if !s.ParentSpanID.IsZero() {
		refs = append(refs, uiReference{RefType: refChildOf, TraceID: tid, SpanID: s.ParentSpanID.String()})
	}
	for _, l := range s.Links {
		typ := refFollowsFrom
		for _, a := range l.Attrs {
			if a.Key == "opentracing.ref_type" && a.Str == "child_of" {
				typ = refChildOf
			}
		}
		if !s.ParentSpanID.IsZero() && l.TraceID == s.TraceID && l.SpanID == s.ParentSpanID {
			refs[0].RefType = typ
			continue
		}
		refs = append(refs, uiReference{RefType: typ, TraceID: traceIDString(l.TraceID), SpanID: l.SpanID.String()})
	}
	// The first CHILD_OF reference within the trace goes first, else the
	// first reference within the trace.
	first, other := -1, -1
	for i, r := range refs {
		if r.TraceID == tid {
			if r.RefType == refChildOf {
				first = i
				break
			}
			if other < 0 {
				other = i
			}
		}
	}
	if first < 0 {
		first = other
	}
	if first > 0 {
		refs[0], refs[first] = refs[first], refs[0]
	}
	return refs
}

// toUITrace converts the spans of one trace, in their order.
func toUITrace(spans []traces.Span) uiTrace {
	t := uiTrace{Spans: make([]uiSpan, len(spans)), Processes: map[string]uiProcess{}}
	if len(spans) > 0 {
		t.TraceID = traceIDString(spans[0].TraceID)
	}
	keys := map[string]string{}
	warnings := clockSkewWarnings(spans)
	for i := range spans {
		s := &spans[i]
		tags, library := spanTags(s)
		p := process(s, library)
		pk := processKey(p)
		pid, ok := keys[pk]
		if !ok {
			pid = "p" + strconv.Itoa(len(keys)+1)
			keys[pk] = pid
			t.Processes[pid] = p
		}
		t.Spans[i] = uiSpan{
			TraceID:       traceIDString(s.TraceID),
			SpanID:        s.SpanID.String(),
			OperationName: s.Name,
			References:    references(s),
			StartTime:     micros(s.StartUnixNano),
			Duration:      micros(s.DurationNanos()),
			Tags:          tags,
			Logs:          logs(s),
			ProcessID:     pid,
			Warnings:      warnings[i],
		}
	}
	return t
}

// clockSkewWarnings are the warnings Jaeger's clock skew adjuster adds
// when adjustment is disabled (its default): for duplicate span ids,
// parents that are not in the trace, and children that do not fit in
// their parent on another (or an unknown) host.
func clockSkewWarnings(spans []traces.Span) [][]string {
	warnings := make([][]string, len(spans))
	type node struct {
		i        int
		host     string
		children []*node
	}
	nodes := map[traces.SpanID]*node{}
	for i := range spans {
		if _, dup := nodes[spans[i].SpanID]; dup {
			warnings[i] = append(warnings[i], "duplicate span IDs; skipping clock skew adjustment")
			continue
		}
		nodes[spans[i].SpanID] = &node{i: i, host: hostKey(&spans[i])}
	}
	var roots []*node
	for i := range spans {
		n := nodes[spans[i].SpanID]
		if n.i != i {
			continue
		}
		s := &spans[i]
		if s.ParentSpanID.IsZero() {
			roots = append(roots, n)
			continue
		}
		if p, ok := nodes[s.ParentSpanID]; ok {
			p.children = append(p.children, n)
			continue
		}
		warnings[i] = append(warnings[i], fmt.Sprintf("invalid parent span IDs=%s; skipping clock skew adjustment", s.ParentSpanID))
		roots = append(roots, n)
	}
	type skew struct {
		host  string
		delta time.Duration
	}
	var walk func(n, parent *node, sk skew, depth int)
	walk = func(n, parent *node, sk skew, depth int) {
		if depth > len(spans) {
			return // a cycle
		}
		if parent != nil && (n.host != sk.host || n.host == "") {
			sk = skew{host: n.host, delta: skewDelta(&spans[n.i], &spans[parent.i])}
		}
		if sk.delta != 0 {
			warnings[n.i] = append(warnings[n.i], fmt.Sprintf("clock skew adjustment disabled; not applying calculated delta of %v", sk.delta))
		}
		for _, c := range n.children {
			walk(c, n, sk, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, nil, skew{host: r.host}, 0)
	}
	return warnings
}

func skewDelta(child, parent *traces.Span) time.Duration {
	pStart, cStart := int64(parent.StartUnixNano), int64(child.StartUnixNano)
	pDur, cDur := int64(parent.EndUnixNano)-pStart, int64(child.EndUnixNano)-cStart
	if cDur > pDur {
		if cStart < pStart {
			return time.Duration(pStart - cStart)
		}
		return 0
	}
	if cStart >= pStart && cStart+cDur <= pStart+pDur {
		return 0
	}
	latency := (pDur - cDur) / 2
	return time.Duration(pStart + latency - cStart)
}

// hostKey is the process's ip tag, which tells Jaeger two spans ran on
// the same host.
func hostKey(s *traces.Span) string {
	a, ok := s.ResourceAttr("ip")
	if !ok {
		return ""
	}
	switch a.Type {
	case traces.TypeString:
		return a.Str
	case traces.TypeInt:
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(a.Int))
		return net.IP(b[:]).String()
	}
	return ""
}
