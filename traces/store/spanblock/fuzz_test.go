package spanblock

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshlens/meshlens/traces"
)

// FuzzReadMeta decodes meta.json bytes: blocks come back from a shared
// bucket, so a damaged or hostile meta.json must give an error, not a
// panic or a meta that breaks its own invariants.
func FuzzReadMeta(f *testing.F) {
	parent := f.TempDir()
	if _, err := Write(parent, testULID, istioSpans(rand.New(rand.NewPCG(1, 1)), 5, 1e18, 1e9), WriteOptions{}); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(parent, testULID.String(), MetaFilename))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"ulid":"01JAAAAAAAAAAAAAAAAAAAAAAA","level":1,"files":[{"relPath":"../../etc/passwd","sizeBytes":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if m.MinTime > m.MaxTime || m.Level < 1 || m.Spans < m.Traces || m.Version != MetaVersion {
			t.Fatalf("accepted inconsistent meta %+v", m)
		}
		for _, f := range m.Files {
			if !filepath.IsLocal(f.RelPath) {
				t.Fatalf("accepted file path %q outside the block", f.RelPath)
			}
		}
	})
}

// FuzzIndex decodes the index and bloom files.
func FuzzIndex(f *testing.F) {
	parent := f.TempDir()
	if _, err := Write(parent, testULID, istioSpans(rand.New(rand.NewPCG(2, 2)), 50, 1e18, 1e9), WriteOptions{RowGroupSpans: 20}); err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{IndexFilename, BloomFilename} {
		b, err := os.ReadFile(filepath.Join(parent, testULID.String(), name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(indexMagic + "\x00\x00\x00\x01\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if entries, err := decodeIndex(b); err == nil {
			if !bytes.Equal(encodeIndex(entries), b) {
				t.Fatal("accepted index does not re-encode to its bytes")
			}
		}
		if bf, err := decodeBloom(b); err == nil {
			if len(b) < int(bf.Cap()/8) {
				t.Fatalf("bloom of %d bits from %d bytes", bf.Cap(), len(b))
			}
			bf.Test([]byte("0123456789abcdef"))
		}
	})
}

// FuzzData reads a damaged data.parquet through a block whose other files
// are intact: opening and reading must give errors, never a panic, and
// never a span of another trace.
func FuzzData(f *testing.F) {
	parent := f.TempDir()
	spans := istioSpans(rand.New(rand.NewPCG(3, 3)), 20, 1e18, 1e9)
	if _, err := Write(parent, testULID, spans, WriteOptions{RowGroupSpans: 30}); err != nil {
		f.Fatal(err)
	}
	dir := filepath.Join(parent, testULID.String())
	blk, err := Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	blk.Close()
	data, err := os.ReadFile(filepath.Join(dir, DataFilename))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data, uint32(0), uint32(0))
	f.Add(data, uint32(len(data)/2), uint32(0xff))
	f.Add(data, uint32(len(data)-20), uint32(0x10))
	f.Fuzz(func(t *testing.T, data []byte, at, xor uint32) {
		data = bytes.Clone(data)
		if len(data) > 0 {
			data[int(at)%len(data)] ^= byte(xor)
		}
		b := &Block{dir: dir, meta: blk.meta, index: blk.index, bloom: blk.bloom}
		if err := b.openData(bytes.NewReader(data), int64(len(data))); err != nil {
			return
		}
		for _, s := range spans[:5] {
			got, err := b.Trace(context.Background(), s.TraceID, traces.TimeRange{})
			if err != nil {
				continue
			}
			for _, g := range got {
				if g.TraceID != s.TraceID {
					t.Fatalf("Trace(%s) returned a span of %s", s.TraceID, g.TraceID)
				}
			}
		}
		_ = b.Traces(context.Background(), traces.TimeRange{}, func([]traces.Span) bool { return true })
	})
}
