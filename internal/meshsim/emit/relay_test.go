package emit

import (
	"testing"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

func TestShiftTimestamps(t *testing.T) {
	// 100 ms moved by 1.7e12 ms grows from one varint byte to six: the
	// enclosing messages' lengths must follow.
	for _, delta := range []int64{-3_600_000, 1_700_000_000_000} {
		v1 := prompb.WriteRequest{
			Timeseries: []prompb.TimeSeries{{
				Labels:    []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "cluster", Value: "east"}},
				Samples:   []prompb.Sample{{Value: 1, Timestamp: 100}, {Value: 2, Timestamp: 1_740_000_000_000}},
				Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "ab"}}, Value: 3, Timestamp: 1_740_000_000_500}},
			}},
			Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "up"}},
		}
		raw, err := v1.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out, err := ShiftTimestamps(nil, raw, false, delta)
		if err != nil {
			t.Fatal(err)
		}
		var got prompb.WriteRequest
		if err := got.Unmarshal(out); err != nil {
			t.Fatal(err)
		}
		ts := got.Timeseries[0]
		if ts.Samples[0].Timestamp != 100+delta || ts.Samples[1].Timestamp != 1_740_000_000_000+delta ||
			ts.Exemplars[0].Timestamp != 1_740_000_000_500+delta || ts.Samples[1].Value != 2 ||
			ts.Labels[1].Value != "east" || got.Metadata[0].MetricFamilyName != "up" {
			t.Fatalf("delta %d: %+v", delta, got)
		}

		v2 := writev2.Request{
			Symbols: []string{"", "__name__", "up"},
			Timeseries: []writev2.TimeSeries{{
				LabelsRefs: []uint32{1, 2},
				Samples:    []writev2.Sample{{Value: 1, Timestamp: 100}},
				Exemplars:  []writev2.Exemplar{{Value: 3, Timestamp: 1_740_000_000_500}},
				Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE},
			}},
		}
		raw, err = v2.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if out, err = ShiftTimestamps(nil, raw, true, delta); err != nil {
			t.Fatal(err)
		}
		var got2 writev2.Request
		if err := got2.Unmarshal(out); err != nil {
			t.Fatal(err)
		}
		ts2 := got2.Timeseries[0]
		if ts2.Samples[0].Timestamp != 100+delta || ts2.Exemplars[0].Timestamp != 1_740_000_000_500+delta ||
			ts2.Metadata.Type != writev2.Metadata_METRIC_TYPE_GAUGE || got2.Symbols[2] != "up" {
			t.Fatalf("delta %d: %+v", delta, got2)
		}
	}
	if _, err := ShiftTimestamps(nil, []byte{0x0a, 0xff}, false, 1); err == nil {
		t.Fatal("malformed request accepted")
	}
}

func TestShiftInPlace(t *testing.T) {
	v1 := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:    []prompb.Label{{Name: "__name__", Value: "up"}},
		Samples:   []prompb.Sample{{Value: 1, Timestamp: 1_740_000_000_000}},
		Exemplars: []prompb.Exemplar{{Value: 3, Timestamp: 1_740_000_000_500}},
	}}}
	raw, err := v1.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want, err := ShiftTimestamps(nil, raw, false, -3_600_000)
	if err != nil {
		t.Fatal(err)
	}
	var at []patch
	if !shiftInPlace(raw, false, -3_600_000, &at) || string(raw) != string(want) {
		t.Fatal("in-place shift differs from the rebuilt request")
	}
	// A shift that changes a varint's length leaves the request alone.
	before := string(raw)
	if shiftInPlace(raw, false, -1_739_000_000_000, &at) || string(raw) != before {
		t.Fatal("length-changing shift done in place")
	}
}
