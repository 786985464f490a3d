package bucketstore

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
)

func TestListBlocks(t *testing.T) {
	raw := makeRawDB(t, 3)
	bkt := objstore.NewInMemBucket()
	m0 := upload(t, bkt, raw.blocks[0], extA, block.ResolutionRaw, true)
	m1 := upload(t, bkt, raw.blocks[1], extA, block.ResolutionRaw, true)
	ds := upload(t, bkt, writeDownsampledBlock(t, t.TempDir(), raw.data, base, base+2*hourMs, block.Resolution5m), labels.FromStrings("cluster", "eu-2"), block.Resolution5m, true)
	// Being uploaded: not listed.
	upload(t, bkt, copyBlock(t, raw.blocks[0], t.TempDir()), extA, block.ResolutionRaw, false)

	marked := time.Date(2025, 2, 1, 12, 0, 0, 0, time.UTC)
	uploadJSON(t, bkt, m0.ULID, block.DeletionMarkFilename, block.NewDeletionMark(m0.ULID, marked, "compacted"))
	uploadJSON(t, bkt, m1.ULID, block.NoCompactMarkFilename, block.NewNoCompactMark(m1.ULID, marked, block.NoCompactManual, "test"))

	infos, err := ListBlocks(context.Background(), bkt)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 3 {
		t.Fatalf("listed %d blocks, want 3", len(infos))
	}
	// Ordered by min time, then resolution.
	i0, dsi, i1 := infos[0], infos[1], infos[2]
	if i0.ULID != m0.ULID || dsi.ULID != ds.ULID || i1.ULID != m1.ULID {
		t.Fatalf("order: %s %s %s", i0.ULID, dsi.ULID, i1.ULID)
	}
	if i0.DeletionMark == nil || i0.DeletionMark.DeletionTime != marked.Unix() || i0.DeletionMark.Details != "compacted" {
		t.Errorf("deletion mark: %+v", i0.DeletionMark)
	}
	if i0.NoCompactMark != nil || i1.DeletionMark != nil {
		t.Errorf("unexpected marks: %+v %+v", i0.NoCompactMark, i1.DeletionMark)
	}
	if i1.NoCompactMark == nil || i1.NoCompactMark.Reason != block.NoCompactManual {
		t.Errorf("no-compact mark: %+v", i1.NoCompactMark)
	}
	if i0.Resolution != 0 || dsi.Resolution != 300000 {
		t.Errorf("resolutions %d, %d", i0.Resolution, dsi.Resolution)
	}
	if i0.MinTime != base || i0.MaxTime != base+hourMs || i0.CompactionLevel != 1 || i0.Source != block.SourceShipper {
		t.Errorf("block 0: %+v", i0)
	}
	if i0.NumSeries != 5 || i0.NumSamples != 5*240 || i0.NumChunks != m0.Stats.NumChunks || i0.SizeBytes != m0.ExpectedSize() {
		t.Errorf("block 0 stats: %+v", i0)
	}
	if dsi.Labels["cluster"] != "eu-2" || i0.Labels["replica"] != "a" {
		t.Errorf("labels %v, %v", dsi.Labels, i0.Labels)
	}

	var buf bytes.Buffer
	if err := WriteTable(&buf, infos); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("table has %d lines:\n%s", len(lines), buf.String())
	}
	header := strings.Fields(lines[0])
	if header[0] != "ULID" || header[len(header)-1] != "MARKS" {
		t.Errorf("header %q", lines[0])
	}
	for i, want := range [][]string{
		{m0.ULID.String(), "2025-01-06T00:00:00Z", "2025-01-06T01:00:00Z", " 1h ", " raw ", "1200", `{cluster="eu-1", replica="a"}`, "meshlens", "deletion@2025-02-01T12:00:00Z"},
		{ds.ULID.String(), " 2h ", " 5m ", `{cluster="eu-2"}`},
		{m1.ULID.String(), "2025-01-06T02:00:00Z", "no-compact(manual)"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("line %d lacks %q:\n%s", i+1, w, buf.String())
			}
		}
	}

	if !strings.HasSuffix(lines[2], " -") {
		t.Errorf("block without marks: %q", lines[2])
	}

	b, err := json.Marshal(infos[0])
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ulid", "minTime", "maxTime", "resolution", "numSeries", "numSamples", "numChunks", "compactionLevel", "labels", "source", "deletionMark"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	if _, ok := back["noCompactMark"]; ok {
		t.Errorf("JSON has an absent mark: %s", b)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		2 * time.Hour:                      "2h",
		90 * time.Minute:                   "1h30m",
		5 * time.Minute:                    "5m",
		48 * time.Hour:                     "48h",
		90 * time.Second:                   "1m30s",
		time.Hour + 30*time.Second:         "1h0m30s",
		59*time.Minute + 59*time.Second:    "59m59s",
		3*time.Hour + 999*time.Millisecond: "3h0m0.999s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
