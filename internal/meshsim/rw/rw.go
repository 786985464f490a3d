// Package rw encodes Prometheus remote-write requests, protocol 1.0
// (prometheus.WriteRequest) and 2.0 (io.prometheus.write.v2.Request),
// directly into protobuf wire format with reusable buffers.
package rw

import (
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"
)

// Protocol is a remote-write protocol version.
type Protocol string

// Protocols.
const (
	V1 Protocol = "1.0"
	V2 Protocol = "2.0"
)

// ParseProtocol accepts "1.0", "1", "2.0", "2".
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "1", "1.0", "v1":
		return V1, nil
	case "2", "2.0", "v2":
		return V2, nil
	}
	return "", fmt.Errorf("unknown remote-write protocol %q (want 1.0 or 2.0)", s)
}

// ContentType returns the Content-Type header of the protocol.
func (p Protocol) ContentType() string {
	if p == V2 {
		return "application/x-protobuf;proto=io.prometheus.write.v2.Request"
	}
	return "application/x-protobuf"
}

// VersionHeader returns the X-Prometheus-Remote-Write-Version value.
func (p Protocol) VersionHeader() string {
	if p == V2 {
		return "2.0.0"
	}
	return "0.1.0"
}

// MetricType values of remote-write 2.0 metadata (and 1.0 MetricMetadata).
const (
	TypeUnknown   uint8 = 0
	TypeCounter   uint8 = 1
	TypeGauge     uint8 = 2
	TypeHistogram uint8 = 3
)

// Field numbers, from prompb/remote.proto, prompb/types.proto and
// prompb/io/prometheus/write/v2/types.proto.
const (
	// message WriteRequest { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
	v1WriteTimeseries = 1
	// message TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; repeated Exemplar exemplars = 3; }
	v1TSLabels    = 1
	v1TSSamples   = 2
	v1TSExemplars = 3
	// message Label { string name = 1; string value = 2; }
	v1LabelName  = 1
	v1LabelValue = 2
	// message Sample { double value = 1; int64 timestamp = 2; }
	sampleValue     = 1
	sampleTimestamp = 2
	// message Exemplar { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }
	v1ExLabels    = 1
	v1ExValue     = 2
	v1ExTimestamp = 3

	// message Request { repeated string symbols = 4; repeated TimeSeries timeseries = 5; }
	v2ReqSymbols    = 4
	v2ReqTimeseries = 5
	// message TimeSeries { repeated uint32 labels_refs = 1; repeated Sample samples = 2;
	//   repeated Exemplar exemplars = 4; Metadata metadata = 5; }
	v2TSLabelsRefs = 1
	v2TSSamples    = 2
	v2TSExemplars  = 4
	v2TSMetadata   = 5
	// message Exemplar { repeated uint32 labels_refs = 1; double value = 2; int64 timestamp = 3; }
	v2ExLabelsRefs = 1
	v2ExValue      = 2
	v2ExTimestamp  = 3
	// message Metadata { MetricType type = 1; uint32 help_ref = 3; uint32 unit_ref = 4; }
	v2MetaType = 1
)

// appendV1Labels appends the repeated Label fields of a labels set.
func appendV1Labels(b []byte, field protowire.Number, ls labels.Labels) []byte {
	ls.Range(func(l labels.Label) {
		b = protowire.AppendTag(b, field, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(labelSize(l)))
		b = protowire.AppendTag(b, v1LabelName, protowire.BytesType)
		b = protowire.AppendString(b, l.Name)
		b = protowire.AppendTag(b, v1LabelValue, protowire.BytesType)
		b = protowire.AppendString(b, l.Value)
	})
	return b
}

func labelSize(l labels.Label) int {
	return 1 + protowire.SizeBytes(len(l.Name)) + 1 + protowire.SizeBytes(len(l.Value))
}

func sampleSize(t int64) int {
	return 1 + 8 + 1 + protowire.SizeVarint(uint64(t))
}

func appendSample(b []byte, field protowire.Number, v float64, t int64) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(sampleSize(t)))
	b = protowire.AppendTag(b, sampleValue, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(v))
	b = protowire.AppendTag(b, sampleTimestamp, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(t))
}

// Symbols is a remote-write 2.0 symbol table. The empty string is symbol 0.
type Symbols struct {
	ids  map[string]uint32
	list []string
}

// NewSymbols returns an empty table.
func NewSymbols() *Symbols {
	s := &Symbols{ids: make(map[string]uint32)}
	s.Reset()
	return s
}

// Reset empties the table, keeping its memory.
func (s *Symbols) Reset() {
	clear(s.ids)
	s.list = append(s.list[:0], "")
	s.ids[""] = 0
}

// Ref returns the id of str, adding it.
func (s *Symbols) Ref(str string) uint32 {
	if id, ok := s.ids[str]; ok {
		return id
	}
	id := uint32(len(s.list))
	s.list = append(s.list, str)
	s.ids[str] = id
	return id
}

// Len returns the number of symbols.
func (s *Symbols) Len() int { return len(s.list) }

// appendSymbols appends the symbols field of a Request.
func appendSymbols(b []byte, list []string) []byte {
	for _, s := range list {
		b = protowire.AppendTag(b, v2ReqSymbols, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

func appendPackedRefs(b []byte, field protowire.Number, refs []uint32) []byte {
	n := 0
	for _, r := range refs {
		n += protowire.SizeVarint(uint64(r))
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	for _, r := range refs {
		b = protowire.AppendVarint(b, uint64(r))
	}
	return b
}

func metadataSize(typ uint8) int {
	if typ == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(uint64(typ))
}

func appendMetadata(b []byte, typ uint8) []byte {
	b = protowire.AppendTag(b, v2TSMetadata, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(metadataSize(typ)))
	if typ != 0 {
		b = protowire.AppendTag(b, v2MetaType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(typ))
	}
	return b
}
