package rw

import (
	"math"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"
)

// Exemplar of a sample.
type Exemplar struct {
	Labels labels.Labels
	V      float64
	T      int64
}

// Builder accumulates one request from series given one at a time. It is
// reused across requests: Reset keeps its buffers.
type Builder struct {
	proto     Protocol
	ts        []byte // v1: the whole message; v2: the timeseries fields
	tmp       []byte
	out       []byte
	syms      *Symbols
	refs      []uint32
	exRefs    []uint32
	samples   int
	exemplars int
}

// NewBuilder returns a builder for protocol p.
func NewBuilder(p Protocol) *Builder {
	return &Builder{proto: p, syms: NewSymbols()}
}

// Reset starts a new request.
func (b *Builder) Reset() {
	b.ts = b.ts[:0]
	b.samples, b.exemplars = 0, 0
	b.syms.Reset()
}

// Samples returns the number of samples added since Reset.
func (b *Builder) Samples() int { return b.samples }

// Exemplars returns the number of exemplars added since Reset.
func (b *Builder) Exemplars() int { return b.exemplars }

// Add appends a series with one sample and an optional exemplar. typ is
// the metric type (sent as 2.0 metadata).
func (b *Builder) Add(ls labels.Labels, typ uint8, t int64, v float64, ex *Exemplar) {
	b.samples++
	body := b.tmp[:0]
	if b.proto == V2 {
		b.refs = b.refs[:0]
		ls.Range(func(l labels.Label) {
			b.refs = append(b.refs, b.syms.Ref(l.Name), b.syms.Ref(l.Value))
		})
		body = appendPackedRefs(body, v2TSLabelsRefs, b.refs)
		body = appendSample(body, v2TSSamples, v, t)
		if ex != nil {
			b.exemplars++
			b.exRefs = b.exRefs[:0]
			ex.Labels.Range(func(l labels.Label) {
				b.exRefs = append(b.exRefs, b.syms.Ref(l.Name), b.syms.Ref(l.Value))
			})
			e := appendPackedRefs(nil, v2ExLabelsRefs, b.exRefs)
			e = protowire.AppendTag(e, v2ExValue, protowire.Fixed64Type)
			e = protowire.AppendFixed64(e, math.Float64bits(ex.V))
			e = protowire.AppendTag(e, v2ExTimestamp, protowire.VarintType)
			e = protowire.AppendVarint(e, uint64(ex.T))
			body = protowire.AppendTag(body, v2TSExemplars, protowire.BytesType)
			body = protowire.AppendBytes(body, e)
		}
		body = appendMetadata(body, typ)
		b.ts = protowire.AppendTag(b.ts, v2ReqTimeseries, protowire.BytesType)
	} else {
		body = appendV1Labels(body, v1TSLabels, ls)
		body = appendSample(body, v1TSSamples, v, t)
		if ex != nil {
			b.exemplars++
			e := appendV1Labels(nil, v1ExLabels, ex.Labels)
			e = protowire.AppendTag(e, v1ExValue, protowire.Fixed64Type)
			e = protowire.AppendFixed64(e, math.Float64bits(ex.V))
			e = protowire.AppendTag(e, v1ExTimestamp, protowire.VarintType)
			e = protowire.AppendVarint(e, uint64(ex.T))
			body = protowire.AppendTag(body, v1TSExemplars, protowire.BytesType)
			body = protowire.AppendBytes(body, e)
		}
		b.ts = protowire.AppendTag(b.ts, v1WriteTimeseries, protowire.BytesType)
	}
	b.ts = protowire.AppendBytes(b.ts, body)
	b.tmp = body
}

// Bytes returns the encoded request (uncompressed), valid until the next
// call on the builder.
func (b *Builder) Bytes() []byte {
	if b.proto != V2 {
		return b.ts
	}
	b.out = appendSymbols(b.out[:0], b.syms.list)
	b.out = append(b.out, b.ts...)
	return b.out
}

// Size and MarshalToSizedBuffer let the builder be passed as a message to
// client_golang's remote-write API, which takes gogo-style messages.
func (b *Builder) Size() int { return len(b.Bytes()) }

// MarshalToSizedBuffer copies the encoded request into the end of dst.
func (b *Builder) MarshalToSizedBuffer(dst []byte) (int, error) {
	m := b.Bytes()
	return copy(dst[len(dst)-len(m):], m), nil
}
