package decode

import (
	"bytes"
	"testing"

	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/meshlens/meshlens/remotewrite/internal/writetest"
)

var benchLimits = Limits{MaxBodyBytes: 32 << 20, MaxDecodedBytes: 32 << 20}

// BenchmarkDecode measures reading, decompressing and unmarshalling a
// 2,000-series request as the write handler does, per sample.
// BenchmarkUnmarshalV1 compares the 1.0 path with the generated decoder.
func BenchmarkDecode(b *testing.B) {
	series := writetest.IstioSeries(2000)
	b.Run("1.0", func(b *testing.B) {
		body := writetest.RequestsV1(b, series, 2000, 1)[0]
		var v1 v1Request
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if err := DecodeV1(bytes.NewReader(body), benchLimits, &v1.req, &v1.body, &v1.compressed); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2000), "ns/sample")
	})
	b.Run("2.0", func(b *testing.B) {
		body := writetest.RequestsV2(b, series, 2000, 1)[0]
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if err := Decode(bytes.NewReader(body), benchLimits, &writev2.Request{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2000), "ns/sample")
	})
}
