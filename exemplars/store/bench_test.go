package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkAppend measures the cost of storing an exemplar (WAL record
// and head) in batches of 100, and the bytes an exemplar takes in a block
// once the head is cut.
//
//	go test -run XXX -bench BenchmarkAppend ./exemplars/store
func BenchmarkAppend(b *testing.B) {
	dir := b.TempDir()
	c := &clock{t: t0.Add(6 * time.Hour)}
	s, err := Open(Options{Dir: dir, Now: c.now})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	es := mesh(b.N * 100) // every exemplar its own trace
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		stored, err := s.Append(es[i*100 : (i+1)*100])
		if err != nil {
			b.Fatal(err)
		}
		n += stored
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(n, 1)), "ns/exemplar")
	if err := s.Maintain(context.Background(), true); err != nil {
		b.Fatal(err)
	}
	var bytes int64
	for _, e := range s.blocks {
		fi, err := os.Stat(filepath.Join(e.dir, dataFile))
		if err != nil {
			b.Fatal(err)
		}
		bytes += fi.Size()
	}
	b.ReportMetric(float64(bytes)/float64(max(n, 1)), "block-bytes/exemplar")
}

// BenchmarkTop measures the drill-down's question, the 10 highest
// exemplars of one service over 6h, from blocks.
func BenchmarkTop(b *testing.B) {
	c := &clock{t: t0.Add(9 * time.Hour)}
	s, err := Open(Options{Dir: b.TempDir(), Now: c.now})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	es := mesh(300_000)
	for i := 0; i < len(es); i += 1000 {
		if _, err := s.Append(es[i : i+1000]); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Maintain(context.Background(), true); err != nil {
		b.Fatal(err)
	}
	ms := matchers(nil, "destination_service_name", "cart")
	start, end := t0.UnixMilli(), t0.Add(6*time.Hour).UnixMilli()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		top, err := s.Top(context.Background(), start, end, 10, ms)
		if err != nil || len(top) != 10 {
			b.Fatal(len(top), err)
		}
	}
}
