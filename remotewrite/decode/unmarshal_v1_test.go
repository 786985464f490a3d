package decode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/meshlens/meshlens/remotewrite/internal/writetest"
)

// TestUnmarshalV1MatchesGogo decodes random requests with both the generated
// gogo code and WriteRequestV1, reusing one WriteRequestV1 throughout.
func TestUnmarshalV1MatchesGogo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var got WriteRequestV1
	for i := range 500 {
		raw := marshalV1(t, randWriteRequest(rng))
		var want prompb.WriteRequest
		if err := want.Unmarshal(raw); err != nil {
			t.Fatalf("request %d: gogo: %v", i, err)
		}
		if err := got.Unmarshal(raw); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if err := diffV1(&got, &want); err != "" {
			t.Fatalf("request %d: %s", i, err)
		}
	}
}

// TestUnmarshalV1Reuse checks that a reset WriteRequestV1 holds only the
// second request and that re-decoding allocates nothing once warm.
func TestUnmarshalV1Reuse(t *testing.T) {
	first := marshalV1(t, &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			writetest.Series(1, []int64{1, 2, 3}, "__name__", "first", "job", "a", "instance", "x"),
			writetest.Series(2, []int64{4}, "__name__", "first", "job", "b"),
			{Labels: []prompb.Label{{Name: "__name__", Value: "h"}}, Histograms: []prompb.Histogram{prompb.FromIntHistogram(5, randIntHistogram(rand.New(rand.NewPCG(3, 4))))},
				Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "abc"}}, Value: 1, Timestamp: 5}}},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "first", Help: "h", Unit: "u"}},
	})
	second := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{writetest.Series(7, []int64{9}, "__name__", "second")}}
	var m WriteRequestV1
	if err := m.Unmarshal(first); err != nil {
		t.Fatal(err)
	}
	m.Reset()
	if len(m.Timeseries) != 0 || len(m.Metadata) != 0 {
		t.Fatalf("after Reset: %d series, %d metadata", len(m.Timeseries), len(m.Metadata))
	}
	if cap(m.Timeseries) < 3 || cap(m.Timeseries[:1][0].Labels) < 3 || cap(m.Timeseries[:1][0].Samples) < 3 {
		t.Fatalf("Reset dropped capacity: %d series, %d labels, %d samples", cap(m.Timeseries), cap(m.Timeseries[:1][0].Labels), cap(m.Timeseries[:1][0].Samples))
	}
	if err := m.Unmarshal(marshalV1(t, second)); err != nil {
		t.Fatal(err)
	}
	if err := diffV1(&m, second); err != "" {
		t.Fatal(err)
	}
	ts := m.Timeseries[0]
	if len(ts.Labels) != 1 || ts.Labels[0].Name != "__name__" || ts.Labels[0].Value != "second" ||
		len(ts.Samples) != 1 || ts.Samples[0].Value != 7 || ts.Samples[0].Timestamp != 9 || len(ts.Exemplars)+len(ts.Histograms) != 0 {
		t.Fatalf("second request decoded as %+v", ts)
	}

	body := writetest.RequestsV1(t, writetest.IstioSeries(2000), 2000, 1)[0]
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(10, func() {
		if err := m.Unmarshal(raw); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Errorf("re-decoding 2000 series allocates %v times, want 0", allocs)
	}

	var buf, compressed []byte
	r := bytes.NewReader(body)
	if err := DecodeV1(r, benchLimits, &m, &buf, &compressed); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(10, func() {
		r.Reset(body)
		if err := DecodeV1(r, benchLimits, &m, &buf, &compressed); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Errorf("DecodeV1 of 2000 series allocates %v times, want 0", allocs)
	}
	var want prompb.WriteRequest
	if err := want.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	if err := diffV1(&m, &want); err != "" {
		t.Fatal(err)
	}
}

func TestDecodeV1Limits(t *testing.T) {
	raw := marshalV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{writetest.Series(1, []int64{1}, "__name__", strings.Repeat("a", 1000))}})
	body := snappy.Encode(nil, raw)
	for _, tc := range []struct {
		name string
		body []byte
		lim  Limits
		want error
	}{
		{"ok", body, Limits{MaxBodyBytes: len(body), MaxDecodedBytes: len(raw)}, nil},
		{"body too large", body, Limits{MaxBodyBytes: len(body) - 1, MaxDecodedBytes: len(raw)}, ErrBodyTooLarge},
		{"decoded too large", body, Limits{MaxBodyBytes: len(body), MaxDecodedBytes: len(raw) - 1}, ErrDecodedTooLarge},
		{"not snappy", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, Limits{MaxBodyBytes: 100, MaxDecodedBytes: 100}, nil},
		{"bad protobuf", snappy.Encode(nil, []byte{0x0a, 0x05}), Limits{MaxBodyBytes: 100, MaxDecodedBytes: 100}, errTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m WriteRequestV1
			var buf, compressed []byte
			err := DecodeV1(bytes.NewReader(tc.body), tc.lim, &m, &buf, &compressed)
			switch {
			case tc.name == "ok":
				if err != nil {
					t.Fatal(err)
				}
				if got := m.Timeseries[0].Labels[0].Value; got != strings.Repeat("a", 1000) {
					t.Fatalf("label value %q", got)
				}
			case tc.want == nil:
				if err == nil {
					t.Fatal("no error")
				}
			case !errors.Is(err, tc.want):
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestUnmarshalV1Malformed lists malformed inputs and whether gogo accepts
// them: WriteRequestV1 rejects groups, 64-bit varint overflow and field
// numbers over int32, which gogo skips, truncates or wraps.
func TestUnmarshalV1Malformed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []byte
		gogoOK bool
		want   error
	}{
		{"truncated tag", []byte{0x80}, false, errTruncated},
		{"timeseries length past end", []byte{0x0a, 0x05, 0x0a}, false, errTruncated},
		{"huge length", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, false, errTruncated},
		{"label length past end", []byte{0x0a, 0x03, 0x0a, 0x05, 0x0a}, false, errTruncated},
		{"label name length past label", []byte{0x0a, 0x05, 0x0a, 0x02, 0x0a, 0x03, 0x61, 0x62, 0x63}, false, errTruncated},
		{"sample value short", []byte{0x0a, 0x05, 0x12, 0x03, 0x09, 0x00, 0x00}, false, errTruncated},
		{"unknown fixed32 short", []byte{0x25, 0x00, 0x00}, false, errTruncated},
		{"unknown fixed64 short", []byte{0x21, 0x00}, false, errTruncated},
		{"field zero", []byte{0x02, 0x00}, false, errFieldNumber},
		{"wrong wire type for timeseries", []byte{0x08, 0x01}, false, nil},
		{"wrong wire type for sample value", []byte{0x0a, 0x04, 0x12, 0x02, 0x08, 0x01}, false, nil},
		{"end group", []byte{0x24}, false, errGroup},
		{"wire type 7", []byte{0x27}, false, nil},
		{"skipped group", []byte{0x23, 0x24}, true, errGroup},
		{"varint overflow", []byte{0x0a, 0x0d, 0x12, 0x0b, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, true, errVarintOverflow},
		{"field number wraps", append(binary.AppendUvarint(nil, (1<<32+1)<<3|2), 0x00), true, errFieldNumber},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g prompb.WriteRequest
			if err := g.Unmarshal(tc.in); (err == nil) != tc.gogoOK {
				t.Errorf("gogo error %v, want accepted=%v", err, tc.gogoOK)
			}
			var m WriteRequestV1
			err := m.Unmarshal(tc.in)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzUnmarshalV1 checks that arbitrary bytes never panic WriteRequestV1 and
// that it decodes what gogo decodes. It may reject more than gogo, but only
// for the reasons TestUnmarshalV1Malformed lists.
func FuzzUnmarshalV1(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		f.Add(marshalV1(f, randWriteRequest(rng)))
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0x61})
	f.Add([]byte{0x23, 0x24})
	var m WriteRequestV1
	f.Fuzz(func(t *testing.T, b []byte) {
		err := m.Unmarshal(b)
		var g prompb.WriteRequest
		gerr := g.Unmarshal(b)
		switch {
		case gerr != nil && err == nil:
			t.Fatalf("accepted what gogo rejects: %v", gerr)
		case gerr != nil:
		case err != nil:
			if !errors.Is(err, errGroup) && !errors.Is(err, errVarintOverflow) && !errors.Is(err, errFieldNumber) {
				t.Fatalf("rejected what gogo accepts: %v", err)
			}
		default:
			if d := diffV1(&m, &g); d != "" {
				t.Fatal(d)
			}
		}
	})
}

// BenchmarkUnmarshalV1 compares WriteRequestV1, reused and warm, with a new
// gogo prompb.WriteRequest per request (as Decode's callers use it) on a
// 2,000-series Istio-shaped request: unmarshal alone, and with reading and
// snappy decoding.
func BenchmarkUnmarshalV1(b *testing.B) {
	const n = 2000
	body := writetest.RequestsV1(b, writetest.IstioSeries(n), n, 1)[0]
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, size int, f func() error) {
		if err := f(); err != nil { // warm up reused buffers
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(size))
		for b.Loop() {
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/sample")
	}
	b.Run("unmarshal/gogo", func(b *testing.B) {
		run(b, len(raw), func() error { return (&prompb.WriteRequest{}).Unmarshal(raw) })
	})
	b.Run("unmarshal/v1", func(b *testing.B) {
		var m WriteRequestV1
		run(b, len(raw), func() error { return m.Unmarshal(raw) })
	})
	b.Run("decode/gogo", func(b *testing.B) {
		r := bytes.NewReader(body)
		run(b, len(body), func() error {
			r.Reset(body)
			return Decode(r, benchLimits, &prompb.WriteRequest{})
		})
	})
	b.Run("decode/v1", func(b *testing.B) {
		var m WriteRequestV1
		var buf, compressed []byte
		r := bytes.NewReader(body)
		run(b, len(body), func() error {
			r.Reset(body)
			return DecodeV1(r, benchLimits, &m, &buf, &compressed)
		})
	})
}

func marshalV1(t testing.TB, req *prompb.WriteRequest) []byte {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// diffV1 describes the first difference between got and gogo's decoding of
// the same bytes, or returns "".
func diffV1(got *WriteRequestV1, want *prompb.WriteRequest) string {
	if len(got.Timeseries) != len(want.Timeseries) {
		return fmt.Sprintf("%d series, want %d", len(got.Timeseries), len(want.Timeseries))
	}
	for i, w := range want.Timeseries {
		g := got.Timeseries[i]
		if len(g.Labels) != len(w.Labels) {
			return fmt.Sprintf("series %d: %d labels, want %d", i, len(g.Labels), len(w.Labels))
		}
		for j, wl := range w.Labels {
			if gl := g.Labels[j]; gl.Name != wl.Name || gl.Value != wl.Value {
				return fmt.Sprintf("series %d label %d: %q=%q, want %q=%q", i, j, gl.Name, gl.Value, wl.Name, wl.Value)
			}
		}
		if len(g.Samples) != len(w.Samples) {
			return fmt.Sprintf("series %d: %d samples, want %d", i, len(g.Samples), len(w.Samples))
		}
		for j, ws := range w.Samples {
			gs := g.Samples[j]
			if math.Float64bits(gs.Value) != math.Float64bits(ws.Value) || gs.Timestamp != ws.Timestamp {
				return fmt.Sprintf("series %d sample %d: %v@%d, want %v@%d", i, j, gs.Value, gs.Timestamp, ws.Value, ws.Timestamp)
			}
		}
		if len(g.Exemplars) != len(w.Exemplars) {
			return fmt.Sprintf("series %d: %d exemplars, want %d", i, len(g.Exemplars), len(w.Exemplars))
		}
		for j := range w.Exemplars {
			if ge, we := g.Exemplars[j], w.Exemplars[j]; !equalBits(ge, we) {
				return fmt.Sprintf("series %d exemplar %d: %+v, want %+v", i, j, ge, we)
			}
		}
		if len(g.Histograms) != len(w.Histograms) {
			return fmt.Sprintf("series %d: %d histograms, want %d", i, len(g.Histograms), len(w.Histograms))
		}
		for j := range w.Histograms {
			if gh, wh := g.Histograms[j], w.Histograms[j]; !equalBits(gh, wh) {
				return fmt.Sprintf("series %d histogram %d: %+v, want %+v", i, j, gh, wh)
			}
		}
	}
	if len(got.Metadata) != len(want.Metadata) {
		return fmt.Sprintf("%d metadata, want %d", len(got.Metadata), len(want.Metadata))
	}
	for i := range want.Metadata {
		gm, wm := got.Metadata[i], want.Metadata[i]
		if !equalBits(gm, wm) {
			return fmt.Sprintf("metadata %d: %+v, want %+v", i, gm, wm)
		}
	}
	return ""
}

// equalBits is reflect.DeepEqual except that nil and empty slices are equal
// and floats are compared bit for bit, so NaN equals the same NaN.
func equalBits(a, b any) bool {
	return equalValues(reflect.ValueOf(a), reflect.ValueOf(b))
}

func equalValues(a, b reflect.Value) bool {
	if a.IsValid() != b.IsValid() {
		return false
	}
	if !a.IsValid() {
		return true
	}
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Float32, reflect.Float64:
		return math.Float64bits(a.Float()) == math.Float64bits(b.Float())
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !equalValues(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := range a.NumField() {
			if !equalValues(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return equalValues(a.Elem(), b.Elem())
	default:
		return reflect.DeepEqual(a.Interface(), b.Interface())
	}
}

// randWriteRequest returns a request exercising every field WriteRequestV1
// decodes, with unknown fields (and repeated known ones) appended as raw
// bytes at every level.
func randWriteRequest(rng *rand.Rand) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for range rng.IntN(6) {
		ts := prompb.TimeSeries{}
		for range rng.IntN(6) {
			l := prompb.Label{Name: randString(rng), Value: randString(rng)}
			if rng.IntN(8) == 0 {
				l.XXX_unrecognized = randUnknown(rng, 3, nil)
			}
			if rng.IntN(8) == 0 { // a repeated field: the last one wins
				l.XXX_unrecognized = appendBytesField(l.XXX_unrecognized, 1+rng.IntN(2), []byte(randString(rng)))
			}
			ts.Labels = append(ts.Labels, l)
		}
		for range rng.IntN(5) {
			s := prompb.Sample{Value: randFloat(rng), Timestamp: randTimestamp(rng)}
			if rng.IntN(8) == 0 {
				s.XXX_unrecognized = randUnknown(rng, 3, nil)
			}
			if rng.IntN(8) == 0 {
				s.XXX_unrecognized = binary.AppendUvarint(binary.AppendUvarint(s.XXX_unrecognized, 2<<3|wireVarint), uint64(randTimestamp(rng)))
			}
			ts.Samples = append(ts.Samples, s)
		}
		for range rng.IntN(3) {
			e := prompb.Exemplar{Value: randFloat(rng), Timestamp: randTimestamp(rng)}
			for range rng.IntN(3) {
				e.Labels = append(e.Labels, prompb.Label{Name: randString(rng), Value: randString(rng)})
			}
			if rng.IntN(4) == 0 {
				e.XXX_unrecognized = randUnknown(rng, 4, nil)
			}
			ts.Exemplars = append(ts.Exemplars, e)
		}
		for range rng.IntN(3) {
			var h prompb.Histogram
			if rng.IntN(2) == 0 {
				h = prompb.FromIntHistogram(randTimestamp(rng), randIntHistogram(rng))
			} else {
				h = prompb.FromFloatHistogram(randTimestamp(rng), randIntHistogram(rng).ToFloat(nil))
			}
			if rng.IntN(4) == 0 {
				h.XXX_unrecognized = randUnknown(rng, 17, nil)
			}
			ts.Histograms = append(ts.Histograms, h)
		}
		if rng.IntN(4) == 0 {
			ts.XXX_unrecognized = randUnknown(rng, 5, nil)
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	for range rng.IntN(3) {
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{
			Type:             prompb.MetricMetadata_MetricType(rng.IntN(8)),
			MetricFamilyName: randString(rng), Help: randString(rng), Unit: randString(rng),
		})
	}
	if rng.IntN(3) == 0 {
		req.XXX_unrecognized = randUnknown(rng, 4, []int{2})
	}
	return req
}

var randStrings = []string{"", "__name__", "job", "a", "ünïcødé", "日本語", "emoji 🙂", "with\x00nul", strings.Repeat("long", 40)}

func randString(rng *rand.Rand) string {
	return randStrings[rng.IntN(len(randStrings))]
}

func randFloat(rng *rand.Rand) float64 {
	switch rng.IntN(6) {
	case 0:
		return math.NaN()
	case 1:
		return math.Inf(1)
	case 2:
		return math.Inf(-1)
	case 3:
		return math.Float64frombits(0x7ff0000000000001) // a NaN that is not math.NaN()
	case 4:
		return 0
	}
	return rng.NormFloat64() * 1e6
}

func randTimestamp(rng *rand.Rand) int64 {
	switch rng.IntN(4) {
	case 0:
		return -rng.Int64N(1 << 50)
	case 1:
		return math.MinInt64
	case 2:
		return math.MaxInt64
	}
	return rng.Int64N(1 << 50)
}

func randIntHistogram(rng *rand.Rand) *histogram.Histogram {
	h := &histogram.Histogram{
		Schema: int32(rng.IntN(9)) - 4, Count: rng.Uint64N(1000), Sum: rng.Float64() * 100,
		ZeroThreshold: 0.001, ZeroCount: rng.Uint64N(10), CounterResetHint: histogram.CounterResetHint(rng.IntN(4)),
	}
	for range rng.IntN(3) {
		sp := histogram.Span{Offset: int32(rng.IntN(5)) - 2, Length: uint32(rng.IntN(4))}
		h.PositiveSpans = append(h.PositiveSpans, sp)
		for range sp.Length {
			h.PositiveBuckets = append(h.PositiveBuckets, rng.Int64N(20)-10)
		}
	}
	for range rng.IntN(3) {
		sp := histogram.Span{Offset: int32(rng.IntN(5)), Length: uint32(rng.IntN(4))}
		h.NegativeSpans = append(h.NegativeSpans, sp)
		for range sp.Length {
			h.NegativeBuckets = append(h.NegativeBuckets, rng.Int64N(20)-10)
		}
	}
	return h
}

// randUnknown returns 1-3 fields numbered from first up (or from extra) of
// every non-group wire type.
func randUnknown(rng *rand.Rand, first int, extra []int) []byte {
	var b []byte
	for range 1 + rng.IntN(3) {
		num := first + rng.IntN(1000)
		if len(extra) > 0 && rng.IntN(2) == 0 {
			num = extra[rng.IntN(len(extra))]
		}
		if rng.IntN(8) == 0 {
			num = 1<<29 - 1 // the largest valid field number
		}
		switch rng.IntN(4) {
		case 0:
			b = binary.AppendUvarint(binary.AppendUvarint(b, uint64(num)<<3|wireVarint), rng.Uint64()>>rng.IntN(64))
		case 1:
			b = binary.LittleEndian.AppendUint64(binary.AppendUvarint(b, uint64(num)<<3|wireFixed64), rng.Uint64())
		case 2:
			b = binary.LittleEndian.AppendUint32(binary.AppendUvarint(b, uint64(num)<<3|wireFixed32), rng.Uint32())
		case 3:
			b = appendBytesField(b, num, []byte(randString(rng)))
		}
	}
	return b
}

func appendBytesField(b []byte, num int, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(num)<<3|wireBytes)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}
