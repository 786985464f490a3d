package main

import (
	"io/fs"
	"path/filepath"
	"time"

	"github.com/alecthomas/units"

	"github.com/meshlens/meshlens/config"
	"github.com/meshlens/meshlens/tsdb/compact"
)

// defaultBucket reports whether the bucket is the FILESYSTEM bucket in
// <data-dir>/bucket: no storage.bucket and no storage.bucket_file. This
// node is then the bucket's only user.
func defaultBucket(s config.StorageConfig) bool {
	return s.BucketFile == "" && s.Bucket.Type == ""
}

// bucketRetention is the compactor's retention per resolution:
// compactor.retention with its zero fields defaulted from
// storage.tsdb.retention (compact.Retention.WithDefault).
func bucketRetention(cfg config.Config) compact.Retention {
	r := cfg.Compactor.Retention
	return compact.Retention{
		Raw:         time.Duration(r.Raw),
		FiveMinutes: time.Duration(r.FiveMinutes),
		OneHour:     time.Duration(r.OneHour),
	}.WithDefault(time.Duration(cfg.Storage.TSDB.Retention))
}

// bucketRetentionSize is the bound of storage.tsdb.retention_size on the
// local TSDB and the bucket's metric blocks together: it applies only to
// the default bucket, which no other node writes to.
func bucketRetentionSize(cfg config.Config) int64 {
	if !defaultBucket(cfg.Storage) {
		return 0
	}
	return int64(cfg.Storage.TSDB.RetentionSize)
}

// dirBytes returns the bytes of the files under dir (0 when it is
// missing); files vanishing during the walk are skipped.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// retentionInfo is storageRetention of /api/v1/status/runtimeinfo: what
// bounds the metric data this node keeps. Prometheus's form ("15d",
// "100GiB", "15d or 100GiB") comes first, then what the bucket applies.
func retentionInfo(cfg config.Config, compacting bool) string {
	if !compacting {
		if defaultBucket(cfg.Storage) {
			return "forever (bucket not compacted: --compact=false)"
		}
		return "set by the bucket's compactor (local: " + cfg.Storage.LocalRetention.String() + " after upload)"
	}
	r := bucketRetention(cfg)
	s := ""
	if r.Raw > 0 && r.FiveMinutes > 0 && r.OneHour > 0 {
		s = config.Duration(max(r.Raw, r.FiveMinutes, r.OneHour)).String()
	}
	if n := bucketRetentionSize(cfg); n > 0 {
		if s != "" {
			s += " or "
		}
		s += units.Base2Bytes(n).String()
	}
	if s == "" {
		s = "forever"
	}
	return s + " (bucket: " + r.String() + ")"
}
