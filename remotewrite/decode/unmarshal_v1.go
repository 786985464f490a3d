package decode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unsafe"

	"github.com/prometheus/prometheus/prompb"
)

// WriteRequestV1 is a decoded remote write 1.0 request whose strings point into the
// decoded body. It is valid only until the body buffer is reused: see the ownership note.
//
// Ownership: Unmarshal does not copy label names and values; every
// Timeseries[i].Labels[j].Name and .Value is an unsafe.String over the bytes
// given to Unmarshal. Those bytes must stay untouched for as long as any of
// these strings is used, and a string that must outlive the body (a label set
// kept by storage, a map key) must be copied first. labels.ScratchBuilder
// copies under the default stringlabels build tag but not under slicelabels.
// Decode cannot be used with WriteRequestV1, because it returns the decoded
// body to its pool when it returns; use DecodeV1, which leaves the body in a
// buffer the caller owns. Exemplars, Histograms and Metadata are decoded by
// the generated gogo code and own their memory.
//
// A WriteRequestV1 is meant to be pooled: Reset and Unmarshal keep the
// capacity of Timeseries and of each series' slices, so that decoding a
// request shaped like an earlier one allocates nothing for labels and samples.
type WriteRequestV1 struct {
	Timeseries []TimeSeriesV1
	Metadata   []prompb.MetricMetadata // decoded with gogo (rare, small), strings copied
}

// TimeSeriesV1 is one series of a WriteRequestV1.
type TimeSeriesV1 struct {
	Labels     []prompb.Label // Name/Value alias the body bytes (unsafe.String), no copy
	Samples    []prompb.Sample
	Exemplars  []prompb.Exemplar  // decoded with gogo's prompb.Exemplar.Unmarshal on the sub-slice (copies)
	Histograms []prompb.Histogram // decoded with gogo's prompb.Histogram.Unmarshal on the sub-slice (copies)
}

// Errors of WriteRequestV1.Unmarshal where it is stricter than the generated
// gogo decoder, which skips groups in unknown fields, drops the bits of a
// varint past the 64th and truncates a field number to int32. All three only
// appear in corrupt or hostile input; everything else gogo accepts,
// WriteRequestV1 accepts with the same result (FuzzUnmarshalV1).
var (
	// errGroup means a field uses the deprecated group wire types (3, 4).
	errGroup = errors.New("group wire type not supported")
	// errVarintOverflow means a varint does not fit in 64 bits.
	errVarintOverflow = errors.New("varint overflows 64 bits")
	// errFieldNumber means a tag's field number is 0 or over math.MaxInt32.
	errFieldNumber = errors.New("invalid field number")
)

var _ Message = (*WriteRequestV1)(nil)

// errTruncated means a field's value extends past the end of its message.
var errTruncated = errors.New("unexpected end of message")

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// Reset empties m, keeping the capacity of Timeseries, of each series'
// Labels, Samples, Exemplars and Histograms, and of Metadata for reuse. It
// clears the label strings so that m no longer refers to the old body.
func (m *WriteRequestV1) Reset() {
	for i := range m.Timeseries {
		ts := &m.Timeseries[i]
		clear(ts.Labels)
		ts.Labels = ts.Labels[:0]
		ts.Samples = ts.Samples[:0]
		ts.Exemplars = ts.Exemplars[:0]
		ts.Histograms = ts.Histograms[:0]
	}
	m.Timeseries = m.Timeseries[:0]
	clear(m.Metadata)
	m.Metadata = m.Metadata[:0]
}

// Unmarshal decodes b into m, replacing m's content. It must satisfy Message;
// unlike Message's other implementations it does not copy: label strings
// alias b (see WriteRequestV1). Unknown fields are skipped. On error m holds
// what was decoded before it.
func (m *WriteRequestV1) Unmarshal(b []byte) error {
	m.Reset()
	// message WriteRequest {
	//   repeated prometheus.TimeSeries timeseries = 1 [(gogoproto.nullable) = false];
	//   // Cortex uses this field to determine the source of the write request.
	//   // We reserve it to avoid any compatibility issues.
	//   reserved  2;
	//   repeated prometheus.MetricMetadata metadata = 3 [(gogoproto.nullable) = false];
	// }
	var f field
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
		switch f.num {
		case 1:
			if f.typ != wireBytes {
				return wireTypeError("WriteRequest.timeseries", &f, wireBytes)
			}
			ts := m.nextSeries()
			if err := ts.unmarshal(f.data); err != nil {
				return fmt.Errorf("timeseries %d: %w", len(m.Timeseries)-1, err)
			}
		case 3:
			if f.typ != wireBytes {
				return wireTypeError("WriteRequest.metadata", &f, wireBytes)
			}
			m.Metadata = grow(m.Metadata)
			md := &m.Metadata[len(m.Metadata)-1]
			*md = prompb.MetricMetadata{}
			if err := md.Unmarshal(f.data); err != nil {
				return fmt.Errorf("metadata %d: %w", len(m.Metadata)-1, err)
			}
		}
	}
	return nil
}

// nextSeries extends m.Timeseries by one empty series, reusing the slot and
// its slices' capacity when there is one.
func (m *WriteRequestV1) nextSeries() *TimeSeriesV1 {
	m.Timeseries = grow(m.Timeseries)
	ts := &m.Timeseries[len(m.Timeseries)-1]
	ts.Labels = ts.Labels[:0]
	ts.Samples = ts.Samples[:0]
	ts.Exemplars = ts.Exemplars[:0]
	ts.Histograms = ts.Histograms[:0]
	return ts
}

func (ts *TimeSeriesV1) unmarshal(b []byte) error {
	// message TimeSeries {
	//   // For a timeseries to be valid, and for the samples and exemplars
	//   // to be ingested by the remote system properly, the labels field is required.
	//   repeated Label labels         = 1 [(gogoproto.nullable) = false];
	//   repeated Sample samples       = 2 [(gogoproto.nullable) = false];
	//   repeated Exemplar exemplars   = 3 [(gogoproto.nullable) = false];
	//   repeated Histogram histograms = 4 [(gogoproto.nullable) = false];
	// }
	var f field
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
		switch f.num {
		case 1:
			if f.typ != wireBytes {
				return wireTypeError("TimeSeries.labels", &f, wireBytes)
			}
			ts.Labels = grow(ts.Labels)
			l := &ts.Labels[len(ts.Labels)-1]
			if err := unmarshalLabel(l, f.data); err != nil {
				return fmt.Errorf("label %d: %w", len(ts.Labels)-1, err)
			}
		case 2:
			if f.typ != wireBytes {
				return wireTypeError("TimeSeries.samples", &f, wireBytes)
			}
			ts.Samples = grow(ts.Samples)
			s := &ts.Samples[len(ts.Samples)-1]
			if err := unmarshalSample(s, f.data); err != nil {
				return fmt.Errorf("sample %d: %w", len(ts.Samples)-1, err)
			}
		case 3:
			if f.typ != wireBytes {
				return wireTypeError("TimeSeries.exemplars", &f, wireBytes)
			}
			ts.Exemplars = grow(ts.Exemplars)
			e := &ts.Exemplars[len(ts.Exemplars)-1]
			*e = prompb.Exemplar{}
			if err := e.Unmarshal(f.data); err != nil {
				return fmt.Errorf("exemplar %d: %w", len(ts.Exemplars)-1, err)
			}
		case 4:
			if f.typ != wireBytes {
				return wireTypeError("TimeSeries.histograms", &f, wireBytes)
			}
			ts.Histograms = grow(ts.Histograms)
			h := &ts.Histograms[len(ts.Histograms)-1]
			*h = prompb.Histogram{}
			if err := h.Unmarshal(f.data); err != nil {
				return fmt.Errorf("histogram %d: %w", len(ts.Histograms)-1, err)
			}
		}
	}
	return nil
}

func unmarshalLabel(l *prompb.Label, b []byte) error {
	// message Label {
	//   string name  = 1;
	//   string value = 2;
	// }
	l.Name, l.Value = "", ""
	var f field
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
		switch f.num {
		case 1:
			if f.typ != wireBytes {
				return wireTypeError("Label.name", &f, wireBytes)
			}
			l.Name = aliasString(f.data)
		case 2:
			if f.typ != wireBytes {
				return wireTypeError("Label.value", &f, wireBytes)
			}
			l.Value = aliasString(f.data)
		}
	}
	return nil
}

func unmarshalSample(s *prompb.Sample, b []byte) error {
	// message Sample {
	//   double value    = 1;
	//   // timestamp is in ms format, see model/timestamp/timestamp.go for
	//   // conversion from time.Time to Prometheus timestamp.
	//   int64 timestamp = 2;
	// }
	s.Value, s.Timestamp = 0, 0
	var f field
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
		switch f.num {
		case 1:
			if f.typ != wireFixed64 {
				return wireTypeError("Sample.value", &f, wireFixed64)
			}
			s.Value = math.Float64frombits(f.u)
		case 2:
			if f.typ != wireVarint {
				return wireTypeError("Sample.timestamp", &f, wireVarint)
			}
			s.Timestamp = int64(f.u)
		}
	}
	return nil
}

// aliasString returns b as a string without copying.
func aliasString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// field is one field of a message: a varint, fixed64 or fixed32 value is in
// u, a length-delimited one in data (a sub-slice of the message).
type field struct {
	num  uint64
	typ  uint8
	u    uint64
	data []byte
}

// next reads the field at the start of b into f and returns the rest of b.
// Every length is checked against b. The one-byte varints of tags and short
// lengths are decoded inline; errors are built out of line.
func (f *field) next(b []byte) ([]byte, error) {
	var tag uint64
	if len(b) > 0 && b[0] < 0x80 {
		tag, b = uint64(b[0]), b[1:]
	} else {
		n := 0
		if tag, n = binary.Uvarint(b); n <= 0 {
			return b, varintError(0, "tag", n)
		}
		b = b[n:]
	}
	f.num, f.typ = tag>>3, uint8(tag&7)
	if f.num == 0 || f.num > math.MaxInt32 {
		return b, fieldNumberError(f.num)
	}
	switch f.typ {
	case wireBytes:
		var size uint64
		if len(b) > 0 && b[0] < 0x80 {
			size, b = uint64(b[0]), b[1:]
		} else {
			n := 0
			if size, n = binary.Uvarint(b); n <= 0 {
				return b, varintError(f.num, "length", n)
			}
			b = b[n:]
		}
		if size > uint64(len(b)) {
			return b, truncatedError(f.num, "length", size, len(b))
		}
		f.data = b[:size:size]
		return b[size:], nil
	case wireVarint:
		if len(b) > 0 && b[0] < 0x80 {
			f.u = uint64(b[0])
			return b[1:], nil
		}
		n := 0
		if f.u, n = binary.Uvarint(b); n <= 0 {
			return b, varintError(f.num, "value", n)
		}
		return b[n:], nil
	case wireFixed64:
		if len(b) < 8 {
			return b, truncatedError(f.num, "fixed64", 8, len(b))
		}
		f.u = binary.LittleEndian.Uint64(b)
		return b[8:], nil
	case wireFixed32:
		if len(b) < 4 {
			return b, truncatedError(f.num, "fixed32", 4, len(b))
		}
		f.u = uint64(binary.LittleEndian.Uint32(b))
		return b[4:], nil
	default:
		return b, wireTypeError("", f, 0)
	}
}

// varintError describes binary.Uvarint's failure n (0 or negative) reading
// what of field num (0 for the tag itself).
//
//go:noinline
func varintError(num uint64, what string, n int) error {
	err := errTruncated
	if n < 0 {
		err = errVarintOverflow
	}
	if num == 0 {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("field %d %s: %w", num, what, err)
}

//go:noinline
func truncatedError(num uint64, what string, need uint64, left int) error {
	return fmt.Errorf("field %d: %s needs %d bytes, %d left: %w", num, what, need, left, errTruncated)
}

//go:noinline
func fieldNumberError(num uint64) error {
	return fmt.Errorf("%w %d", errFieldNumber, num)
}

// wireTypeError reports a field of wire type f.typ where name wants want, or,
// for an empty name, a wire type that is never valid.
//
//go:noinline
func wireTypeError(name string, f *field, want uint8) error {
	switch {
	case f.typ == 3 || f.typ == 4:
		return fmt.Errorf("field %d: %w", f.num, errGroup)
	case name == "":
		return fmt.Errorf("field %d: invalid wire type %d", f.num, f.typ)
	}
	return fmt.Errorf("%s (field %d): wire type %d, want %d", name, f.num, f.typ, want)
}

// DecodeV1 reads a snappy-compressed 1.0 body from r into m. The decoded bytes that m's
// strings alias are kept in *buf (grown as needed) and must stay untouched until m is
// no longer used; the caller owns buf (e.g. pools it together with m).
//
// compressed holds the body as read; it is scratch space that may be reused as
// soon as DecodeV1 returns. Neither pointer may be nil; the slices may be.
// Limits and errors are those of Decode. m is reset first, so it never
// refers to bytes this call overwrites.
func DecodeV1(r io.Reader, lim Limits, m *WriteRequestV1, buf *[]byte, compressed *[]byte) error {
	m.Reset()
	body, err := readAtMost(r, (*compressed)[:0], lim.MaxBodyBytes)
	*compressed = body[:0]
	if err != nil {
		return err
	}
	data, err := decompress((*buf)[:0], body, lim.MaxDecodedBytes)
	*buf = data[:0]
	if err != nil {
		return err
	}
	if err := m.Unmarshal(data); err != nil {
		return fmt.Errorf("decode protobuf (%d bytes): %w", len(data), err)
	}
	return nil
}

// grow extends s by one element, reusing its capacity when it can. The new
// element keeps whatever an earlier use left there; callers overwrite it.
func grow[T any](s []T) []T {
	if len(s) < cap(s) {
		return s[:len(s)+1]
	}
	var zero T
	return append(s, zero)
}
