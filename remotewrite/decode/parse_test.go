package decode

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/meshlens/meshlens/remotewrite/internal/writetest"
)

// TestImports keeps decoding apart from transport and storage.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "net/http", "github.com/prometheus/prometheus/storage", "github.com/prometheus/prometheus/tsdb":
			t.Errorf("package decode imports %s", dep)
		}
	}
}

func TestParse(t *testing.T) {
	ls := writetest.IstioSeries(3)
	lim := Limits{MaxBodyBytes: 1 << 20, MaxDecodedBytes: 1 << 20}
	sentinel := errors.New("from fn")
	t.Run("1.0", func(t *testing.T) {
		body := writetest.RequestsV1(t, ls, 3, 1)[0]
		var got []string
		err := ParseV1(bytes.NewReader(body), lim, func(req *WriteRequestV1) error {
			for _, ts := range req.Timeseries {
				got = append(got, strings.Clone(ts.Labels[len(ts.Labels)-1].Value))
			}
			return sentinel
		})
		if !errors.Is(err, sentinel) {
			t.Errorf("error %v, want fn's", err)
		}
		if len(got) != 3 || got[0] != ls[0].Get("source_workload") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("2.0", func(t *testing.T) {
		body := writetest.RequestsV2(t, ls, 3, 1)[0]
		n := 0
		if err := ParseV2(bytes.NewReader(body), lim, func(req *writev2.Request) error {
			n = len(req.Timeseries)
			return nil
		}); err != nil || n != 3 {
			t.Errorf("%d series, error %v", n, err)
		}
	})
	t.Run("limits", func(t *testing.T) {
		body := writetest.RequestsV2(t, ls, 3, 1)[0]
		called := false
		fn := func(*writev2.Request) error { called = true; return nil }
		if err := ParseV2(bytes.NewReader(body), Limits{MaxBodyBytes: len(body) - 1, MaxDecodedBytes: 1 << 20}, fn); !errors.Is(err, ErrBodyTooLarge) {
			t.Errorf("error %v, want ErrBodyTooLarge", err)
		}
		if err := ParseV2(bytes.NewReader(body), Limits{MaxBodyBytes: 1 << 20, MaxDecodedBytes: 10}, fn); !errors.Is(err, ErrDecodedTooLarge) {
			t.Errorf("error %v, want ErrDecodedTooLarge", err)
		}
		if called {
			t.Error("fn called for a refused body")
		}
	})
}

// FuzzParse feeds arbitrary bodies to ParseV1 and ParseV2: no panic, and
// fn sees a request only when the body decodes.
func FuzzParse(f *testing.F) {
	valid := []prompb.TimeSeries{writetest.Series(1, []int64{1}, "__name__", "a", "job", "x")}
	raw, err := (&prompb.WriteRequest{Timeseries: valid}).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(false, snappy.Encode(nil, raw))
	f.Add(true, writetest.RequestsV2(f, writetest.IstioSeries(2), 2, 1)[0])
	f.Add(false, []byte{})
	f.Add(true, snappy.Encode(nil, []byte{0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0x61}))
	f.Add(false, append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 1, 2, 3))
	lim := Limits{MaxBodyBytes: 1 << 16, MaxDecodedBytes: 1 << 16}
	f.Fuzz(func(t *testing.T, v2 bool, body []byte) {
		called := false
		var err error
		if v2 {
			err = ParseV2(bytes.NewReader(body), lim, func(*writev2.Request) error { called = true; return nil })
		} else {
			err = ParseV1(bytes.NewReader(body), lim, func(*WriteRequestV1) error { called = true; return nil })
		}
		if called == (err != nil) {
			t.Fatalf("fn called: %v, error: %v", called, err)
		}
	})
}
