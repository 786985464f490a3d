package walreplay

import (
	"errors"
	"testing"

	"github.com/prometheus/prometheus/tsdb/wlog"
	"github.com/prometheus/prometheus/util/compression"
)

// TestReplayRepairsAtARefusedRecord: a record the caller cannot decode
// ends the replay, and the WAL keeps only the records before it.
func TestReplayRepairsAtARefusedRecord(t *testing.T) {
	dir := t.TempDir()
	open := func() *wlog.WL {
		w, err := wlog.NewSize(nil, nil, dir, 32<<10, compression.None)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := open()
	for _, r := range []string{"a", "bad", "c"} {
		if err := w.Log([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()

	w = open()
	var got []string
	corruption, err := Replay(w, func(rec []byte, _ int) error {
		if string(rec) == "bad" {
			return errors.New("undecodable")
		}
		got = append(got, string(rec))
		return nil
	})
	w.Close()
	if err != nil || corruption == nil || len(got) != 1 {
		t.Fatalf("Replay read %q, corruption %v, err %v; want a, then the corruption", got, corruption, err)
	}

	w = open()
	defer w.Close()
	got = nil
	corruption, err = Replay(w, func(rec []byte, _ int) error { got = append(got, string(rec)); return nil })
	if err != nil || corruption != nil || len(got) != 1 || got[0] != "a" {
		t.Errorf("after the repair: %q, corruption %v, err %v; want only a", got, corruption, err)
	}
}
