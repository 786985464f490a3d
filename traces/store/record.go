package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/meshlens/meshlens/traces"
)

// WAL records. The first byte of a record is its type, which also carries
// the version of its encoding; a reader refuses types it does not know.
//
//	spans record: 0x01 | seq uint64 (little endian) | uvarint span count | spans
//	cut record:   0x02 | seq uint64 (little endian) | uvarint trace count | trace ids (16 bytes each)
//
// A spans record holds one Append batch; seq numbers the records in the
// order they were logged. A cut record says that the spans of the listed
// traces logged in records up to seq are in a block, so replay drops them
// from the head.
//
// A span is encoded as
//
//	trace id [16] | span id [8] | parent span id [8] | trace state str |
//	name str | kind byte | start uint64 | end uint64 | status code byte |
//	status message str | service str | resource | scope name str |
//	scope version str | attrs | uvarint event count | events |
//	uvarint link count | links
//
// where str is a uvarint length and the bytes, attrs is a uvarint count and
// for each attribute key str | type byte | value (str for strings, bytes
// and JSON, zigzag varint for ints, 8 bytes for floats, a byte for bools),
// an event is time uint64 | name str | attrs and a link is trace id [16] |
// span id [8] | trace state str | attrs. resource is a uvarint: 0 followed
// by the resource's attrs when it is new in the record, or k to share the
// k-th resource of the record (spans of one ingested resource share it, so
// a batch writes it once and replay shares one slice again).
const (
	recSpans byte = 0x01
	recCut   byte = 0x02
)

// recordHeaderSize is the type byte and the sequence number.
const recordHeaderSize = 1 + 8

var errShortRecord = errors.New("record too short")

// encoder appends records to a buffer.
type encoder struct {
	buf  []byte
	ress [][]traces.Attr // Resources written in the current record.
}

// spans encodes a spans record with sequence number 0; setSeq sets it.
func (e *encoder) spans(spans []traces.Span) []byte {
	e.buf = append(e.buf[:0], recSpans)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, 0)
	e.buf = binary.AppendUvarint(e.buf, uint64(len(spans)))
	e.ress = e.ress[:0]
	for i := range spans {
		e.span(&spans[i])
	}
	clear(e.ress)
	return e.buf
}

func setSeq(rec []byte, seq uint64) { binary.LittleEndian.PutUint64(rec[1:], seq) }

func cutRecord(seq uint64, ids []traces.TraceID) []byte {
	b := make([]byte, 0, recordHeaderSize+binary.MaxVarintLen64+16*len(ids))
	b = append(b, recCut)
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

func (e *encoder) span(s *traces.Span) {
	e.buf = append(e.buf, s.TraceID[:]...)
	e.buf = append(e.buf, s.SpanID[:]...)
	e.buf = append(e.buf, s.ParentSpanID[:]...)
	e.str(s.TraceState)
	e.str(s.Name)
	e.buf = append(e.buf, byte(s.Kind))
	e.buf = binary.LittleEndian.AppendUint64(e.buf, s.StartUnixNano)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, s.EndUnixNano)
	e.buf = append(e.buf, byte(s.StatusCode))
	e.str(s.StatusMessage)
	e.str(s.Service)
	e.resource(s.Resource)
	e.str(s.ScopeName)
	e.str(s.ScopeVersion)
	e.attrs(s.Attrs)
	e.buf = binary.AppendUvarint(e.buf, uint64(len(s.Events)))
	for i := range s.Events {
		ev := &s.Events[i]
		e.buf = binary.LittleEndian.AppendUint64(e.buf, ev.TimeUnixNano)
		e.str(ev.Name)
		e.attrs(ev.Attrs)
	}
	e.buf = binary.AppendUvarint(e.buf, uint64(len(s.Links)))
	for i := range s.Links {
		l := &s.Links[i]
		e.buf = append(e.buf, l.TraceID[:]...)
		e.buf = append(e.buf, l.SpanID[:]...)
		e.str(l.TraceState)
		e.attrs(l.Attrs)
	}
}

func (e *encoder) resource(res []traces.Attr) {
	if len(res) > 0 {
		for k, r := range e.ress {
			if len(r) == len(res) && &r[0] == &res[0] {
				e.buf = binary.AppendUvarint(e.buf, uint64(k+1))
				return
			}
		}
		e.ress = append(e.ress, res)
	}
	e.buf = append(e.buf, 0)
	e.attrs(res)
}

func (e *encoder) str(s string) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) attrs(as []traces.Attr) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(as)))
	for i := range as {
		a := &as[i]
		e.str(a.Key)
		e.buf = append(e.buf, byte(a.Type))
		switch a.Type {
		case traces.TypeInt:
			e.buf = binary.AppendVarint(e.buf, a.Int)
		case traces.TypeFloat:
			e.buf = binary.LittleEndian.AppendUint64(e.buf, math.Float64bits(a.Float))
		case traces.TypeBool:
			b := byte(0)
			if a.Bool {
				b = 1
			}
			e.buf = append(e.buf, b)
		default:
			e.str(a.Str)
		}
	}
}

// record is a decoded WAL record.
type record struct {
	typ    byte
	seq    uint64
	spans  []traces.Span    // recSpans
	traces []traces.TraceID // recCut
}

// decodeRecord decodes a WAL record. The spans share no memory with b.
func decodeRecord(b []byte) (record, error) {
	if len(b) < recordHeaderSize {
		return record{}, errShortRecord
	}
	r := record{typ: b[0], seq: binary.LittleEndian.Uint64(b[1:])}
	d := decoder{b: b[recordHeaderSize:]}
	n := d.uvarint()
	switch r.typ {
	case recSpans:
		// Every span takes at least 64 bytes; refuse counts the record
		// cannot hold before allocating.
		if n > uint64(len(d.b))/64 {
			return record{}, fmt.Errorf("spans record: %d spans in %d bytes", n, len(d.b))
		}
		r.spans = make([]traces.Span, n)
		for i := range r.spans {
			d.span(&r.spans[i])
		}
	case recCut:
		if n > uint64(len(d.b))/16 {
			return record{}, fmt.Errorf("cut record: %d traces in %d bytes", n, len(d.b))
		}
		r.traces = make([]traces.TraceID, n)
		for i := range r.traces {
			copy(r.traces[i][:], d.fixed(16))
		}
	default:
		return record{}, fmt.Errorf("unknown record type %#x", r.typ)
	}
	if d.err != nil {
		return record{}, fmt.Errorf("record type %#x: %w", r.typ, d.err)
	}
	if len(d.b) != 0 {
		return record{}, fmt.Errorf("record type %#x: %d trailing bytes", r.typ, len(d.b))
	}
	return r, nil
}

type decoder struct {
	b    []byte
	err  error
	ress [][]traces.Attr
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) fixed(n int) []byte {
	if len(d.b) < n {
		d.fail(errShortRecord)
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte { return d.fixed(1)[0] }

func (d *decoder) uint64() uint64 { return binary.LittleEndian.Uint64(d.fixed(8)) }

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad uvarint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail(errShortRecord)
		return ""
	}
	return string(d.fixed(int(n)))
}

// count reads a count of items that take at least min bytes each.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.fail(fmt.Errorf("count %d exceeds the record", n))
		return 0
	}
	return int(n)
}

func (d *decoder) span(s *traces.Span) {
	copy(s.TraceID[:], d.fixed(16))
	copy(s.SpanID[:], d.fixed(8))
	copy(s.ParentSpanID[:], d.fixed(8))
	s.TraceState = d.str()
	s.Name = d.str()
	s.Kind = traces.Kind(d.byte())
	s.StartUnixNano = d.uint64()
	s.EndUnixNano = d.uint64()
	s.StatusCode = traces.StatusCode(d.byte())
	s.StatusMessage = d.str()
	s.Service = d.str()
	s.Resource = d.resource()
	s.ScopeName = d.str()
	s.ScopeVersion = d.str()
	s.Attrs = d.attrs()
	if n := d.count(10); n > 0 {
		s.Events = make([]traces.Event, n)
		for i := range s.Events {
			ev := &s.Events[i]
			ev.TimeUnixNano = d.uint64()
			ev.Name = d.str()
			ev.Attrs = d.attrs()
		}
	}
	if n := d.count(26); n > 0 {
		s.Links = make([]traces.Link, n)
		for i := range s.Links {
			l := &s.Links[i]
			copy(l.TraceID[:], d.fixed(16))
			copy(l.SpanID[:], d.fixed(8))
			l.TraceState = d.str()
			l.Attrs = d.attrs()
		}
	}
}

func (d *decoder) resource() []traces.Attr {
	k := d.uvarint()
	if k == 0 {
		res := d.attrs()
		if len(res) > 0 {
			d.ress = append(d.ress, res)
		}
		return res
	}
	if k > uint64(len(d.ress)) {
		d.fail(fmt.Errorf("resource %d of %d", k, len(d.ress)))
		return nil
	}
	return d.ress[k-1]
}

func (d *decoder) attrs() []traces.Attr {
	n := d.count(3)
	if n == 0 {
		return nil
	}
	as := make([]traces.Attr, n)
	for i := range as {
		a := &as[i]
		a.Key = d.str()
		a.Type = traces.ValueType(d.byte())
		switch a.Type {
		case traces.TypeInt:
			a.Int = d.varint()
		case traces.TypeFloat:
			a.Float = math.Float64frombits(d.uint64())
		case traces.TypeBool:
			a.Bool = d.byte() != 0
		case traces.TypeString, traces.TypeBytes, traces.TypeJSON:
			a.Str = d.str()
		default:
			d.fail(fmt.Errorf("attribute %q: unknown type %d", a.Key, a.Type))
			return nil
		}
	}
	return as
}
