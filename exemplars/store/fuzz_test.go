package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// FuzzWALRecord: any bytes decode into exemplars or an error, and what
// decodes encodes back to the same record.
func FuzzWALRecord(f *testing.F) {
	es := mesh(5)
	rec := encodeRecord(es)
	setSeq(rec, 7)
	f.Add(rec)
	f.Add([]byte{recExemplars, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, got, err := decodeRecord(b)
		if err != nil {
			return
		}
		again := encodeRecord(got)
		setSeq(again, seq)
		_, back, err := decodeRecord(again)
		if err != nil || len(back) != len(got) {
			t.Fatalf("re-encoded record does not decode alike: %v", err)
		}
	})
}

// FuzzBlock: a block file of any bytes opens or fails with an error, and
// every section of one that opens reads or fails without a panic.
func FuzzBlock(f *testing.F) {
	dir := f.TempDir()
	ss := []*series{}
	for _, e := range mesh(40) {
		ss = append(ss, &series{lset: e.Series, ex: []sample{{t: e.Ts, v: e.Value, labels: e.Labels}}})
	}
	m, err := writeBlock(dir, ulid.MustNew(1, nil), 0, 1, ss)
	if err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, m.ULID.String(), dataFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := newBlockReader(bytes.NewReader(b), int64(len(b)), time.Now().UnixMilli())
		if err != nil {
			return
		}
		for i := range r.index {
			_ = r.section(&r.index[i], func(sample) bool { return true })
		}
	})
}
