package bucketstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb/block"
)

// BlockInfo describes a block in the bucket, for `meshlens bucket ls` and
// `bucket inspect`. Times are Unix milliseconds, as in meta.json; the
// block holds samples in [MinTime, MaxTime).
type BlockInfo struct {
	ULID    ulid.ULID `json:"ulid"`
	MinTime int64     `json:"minTime"`
	MaxTime int64     `json:"maxTime"`
	// Resolution is the downsampling resolution in milliseconds: 0 for raw
	// data, 300000 (5m) or 3600000 (1h).
	Resolution      int64             `json:"resolution"`
	NumSeries       uint64            `json:"numSeries"`
	NumSamples      uint64            `json:"numSamples"`
	NumChunks       uint64            `json:"numChunks"`
	CompactionLevel int               `json:"compactionLevel"`
	Sources         []ulid.ULID       `json:"sources,omitempty"`
	Labels          map[string]string `json:"labels"`
	Source          block.SourceType  `json:"source"`
	// SizeBytes is the size of the index and chunks by meta.json; 0 if
	// meta.json does not list the files.
	SizeBytes int64 `json:"sizeBytes,omitempty"`
	// DeletionMark and NoCompactMark are the block's marks, nil when
	// absent. A mark that cannot be decoded is shown with its ID and
	// the decoding error as Details.
	DeletionMark  *block.DeletionMark  `json:"deletionMark,omitempty"`
	NoCompactMark *block.NoCompactMark `json:"noCompactMark,omitempty"`
}

// ListBlocks returns every block in bkt that has a meta.json, including
// blocks marked for deletion, ordered by min time, resolution and ULID.
// Blocks being uploaded (no meta.json yet) are left out; so are blocks
// with an unreadable meta.json, which the error names.
func ListBlocks(ctx context.Context, bkt objstore.BucketReader) ([]BlockInfo, error) {
	ids, err := block.IDs(ctx, bkt, "")
	if err != nil {
		return nil, err
	}
	var (
		mu    sync.Mutex
		infos []BlockInfo
	)
	err = forEach(ctx, fetchConcurrency, ids, func(id ulid.ULID) error {
		m, err := block.DownloadMeta(ctx, bkt, id)
		if errors.Is(err, block.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("block %s: %w", id, err)
		}
		info := BlockInfo{
			ULID:            id,
			MinTime:         m.MinTime,
			MaxTime:         m.MaxTime,
			Resolution:      m.Thanos.Downsample.Resolution,
			NumSeries:       m.Stats.NumSeries,
			NumSamples:      m.Stats.NumSamples,
			NumChunks:       m.Stats.NumChunks,
			CompactionLevel: m.Compaction.Level,
			Sources:         m.Compaction.Sources,
			Labels:          m.Thanos.Labels,
			Source:          m.Thanos.Source,
			SizeBytes:       m.ExpectedSize(),
		}
		var dm block.DeletionMark
		found, err := block.ReadMark(ctx, bkt, id, block.DeletionMarkFilename, &dm)
		if found {
			if err != nil {
				dm = block.DeletionMark{ID: id, Details: err.Error()}
			}
			info.DeletionMark = &dm
		} else if err != nil {
			return fmt.Errorf("block %s: %w", id, err)
		}
		var nc block.NoCompactMark
		found, err = block.ReadMark(ctx, bkt, id, block.NoCompactMarkFilename, &nc)
		if found {
			if err != nil {
				nc = block.NoCompactMark{ID: id, Details: err.Error()}
			}
			info.NoCompactMark = &nc
		} else if err != nil {
			return fmt.Errorf("block %s: %w", id, err)
		}
		mu.Lock()
		infos = append(infos, info)
		mu.Unlock()
		return nil
	})
	slices.SortFunc(infos, func(a, b BlockInfo) int {
		if c := compareInt64(a.MinTime, b.MinTime); c != 0 {
			return c
		}
		if c := compareInt64(a.Resolution, b.Resolution); c != 0 {
			return c
		}
		return a.ULID.Compare(b.ULID)
	})
	return infos, err
}

// WriteTable writes blocks as a table with a header line, one block a
// line, as `thanos tools bucket inspect` does: times in UTC, durations
// and resolutions shortened (2h, 5m; raw for resolution 0), labels as a
// Prometheus label set, marks as deletion@<time> and
// no-compact(<reason>), or - without any.
func WriteTable(w io.Writer, blocks []BlockInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ULID\tFROM\tUNTIL\tRANGE\tRESOLUTION\tLEVEL\t#SERIES\t#SAMPLES\t#CHUNKS\tSIZE\tLABELS\tSOURCE\tMARKS")
	for _, b := range blocks {
		source := string(b.Source)
		if source == "" {
			source = "-"
		}
		size := "-"
		if b.SizeBytes > 0 {
			size = formatBytes(b.SizeBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n",
			b.ULID,
			formatTime(b.MinTime),
			formatTime(b.MaxTime),
			formatDuration(time.Duration(b.MaxTime-b.MinTime)*time.Millisecond),
			formatResolution(b.Resolution),
			b.CompactionLevel,
			b.NumSeries,
			b.NumSamples,
			b.NumChunks,
			size,
			labels.FromMap(b.Labels).String(),
			source,
			formatMarks(b),
		)
	}
	return tw.Flush()
}

func formatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05Z")
}

// formatDuration writes d without zero trailing units: 2h, 1h30m, 90s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func formatResolution(ms int64) string {
	if ms == 0 {
		return "raw"
	}
	return formatDuration(time.Duration(ms) * time.Millisecond)
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + "B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func formatMarks(b BlockInfo) string {
	var marks []string
	if m := b.DeletionMark; m != nil {
		if m.DeletionTime > 0 {
			marks = append(marks, "deletion@"+time.Unix(m.DeletionTime, 0).UTC().Format("2006-01-02T15:04:05Z"))
		} else {
			marks = append(marks, "deletion")
		}
	}
	if m := b.NoCompactMark; m != nil {
		if m.Reason != "" {
			marks = append(marks, "no-compact("+string(m.Reason)+")")
		} else {
			marks = append(marks, "no-compact")
		}
	}
	if len(marks) == 0 {
		return "-"
	}
	return strings.Join(marks, ",")
}
