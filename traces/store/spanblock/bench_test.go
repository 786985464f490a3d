package spanblock

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/parquet-go/parquet-go/compress/snappy"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/meshlens/meshlens/traces"
)

// benchTraces traces of Istio-like spans (~5 per trace) make a block of
// about 200k spans.
const benchTraces = 40_000

var benchSpans = sync.OnceValue(func() []traces.Span {
	return istioSpans(rand.New(rand.NewPCG(11, 12)), benchTraces, 1_700_000_000e9, 3600e9)
})

// benchLayouts are the options compared; the first is the default.
var benchLayouts = []struct {
	name string
	o    WriteOptions
}{
	{"default", WriteOptions{}},
	{"rg512", WriteOptions{RowGroupSpans: 512}},
	{"rg8k", WriteOptions{RowGroupSpans: 8192}},
	{"page8k", WriteOptions{pageBufferBytes: 8 << 10}},
	{"page128k", WriteOptions{pageBufferBytes: 128 << 10}},
	{"snappy", WriteOptions{codec: &snappy.Codec{}}},
	{"zstd-fastest", WriteOptions{codec: &zstd.Codec{Level: zstd.SpeedFastest}}},
}

func dirSize(t testing.TB, dir string) int64 {
	var n int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

func BenchmarkWrite(b *testing.B) {
	spans := benchSpans()
	for _, l := range benchLayouts {
		b.Run(l.name, func(b *testing.B) {
			parent := b.TempDir()
			var size int64
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				id := ulid.MustNew(uint64(i), nil)
				if _, err := Write(parent, id, spans, l.o); err != nil {
					b.Fatal(err)
				}
				dir := filepath.Join(parent, id.String())
				size = dirSize(b, dir)
				os.RemoveAll(dir)
			}
			reportCPU(b, cpu)
			b.ReportMetric(float64(len(spans))*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
			b.ReportMetric(float64(size)/float64(len(spans)), "bytes/span")
		})
	}
}

var benchBlocks sync.Map // layout name -> *Block

func benchBlock(b *testing.B, name string, o WriteOptions) *Block {
	if blk, ok := benchBlocks.Load(name); ok {
		return blk.(*Block)
	}
	parent, err := os.MkdirTemp("", "spanblock-bench")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := Write(parent, testULID, benchSpans(), o); err != nil {
		b.Fatal(err)
	}
	blk, err := Open(filepath.Join(parent, testULID.String()))
	if err != nil {
		b.Fatal(err)
	}
	benchBlocks.Store(name, blk)
	return blk
}

func BenchmarkTrace(b *testing.B) {
	spans := benchSpans()
	ctx := context.Background()
	for _, l := range benchLayouts {
		b.Run(l.name+"/hit", func(b *testing.B) {
			blk := benchBlock(b, l.name, l.o)
			rng := rand.New(rand.NewPCG(1, 1))
			cpu := cpuTime()
			defer reportCPU(b, cpu)
			for b.Loop() {
				id := spans[rng.IntN(len(spans))].TraceID
				got, err := blk.Trace(ctx, id, traces.TimeRange{})
				if err != nil || len(got) == 0 {
					b.Fatal(len(got), err)
				}
			}
		})
		b.Run(l.name+"/miss", func(b *testing.B) {
			blk := benchBlock(b, l.name, l.o)
			rng := rand.New(rand.NewPCG(2, 2))
			cpu := cpuTime()
			defer reportCPU(b, cpu)
			for b.Loop() {
				var id traces.TraceID
				for i := range id {
					id[i] = byte(rng.Uint32())
				}
				if got, err := blk.Trace(ctx, id, traces.TimeRange{}); err != nil || got != nil {
					b.Fatal(len(got), err)
				}
			}
		})
	}
}

func BenchmarkTraces(b *testing.B) {
	ctx := context.Background()
	for _, l := range benchLayouts {
		b.Run(l.name, func(b *testing.B) {
			blk := benchBlock(b, l.name, l.o)
			n := 0
			cpu := cpuTime()
			for b.Loop() {
				if err := blk.Traces(ctx, traces.TimeRange{}, func(s []traces.Span) bool { n += len(s); return true }); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	benchBlocks.Range(func(_, v any) bool {
		blk := v.(*Block)
		blk.Close()
		os.RemoveAll(filepath.Dir(blk.Dir()))
		return true
	})
	os.Exit(code)
}

// cpuTime is the process's user and system CPU time. The benchmarks
// report it per operation besides ns/op, which on a shared machine
// measures the neighbours as much as the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}
