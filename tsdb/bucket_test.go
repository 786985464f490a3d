package tsdb

import (
	"strings"
	"testing"
)

func TestNewBucketErrors(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty", "", []string{"empty"}},
		{"not yaml", "type: [", []string{"parse bucket configuration"}},
		{"unknown field", "type: FILESYSTEM\nbucket: x\n", []string{"parse bucket configuration", "bucket"}},
		{"no type", "config: {directory: /tmp}\n", []string{"type is missing"}},
		{"unknown type", "type: FTP\nconfig: {password: hunter2}\n", []string{`"FTP"`, "not supported", "S3"}},
		// Either not built in, or built in and refusing the empty config.
		{"bad s3", "type: s3\nconfig: {secret_key: hunter2}\n", []string{"bucket type S3"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewBucket([]byte(c.yaml), nil, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q quotes the configuration", err)
			}
		})
	}
}
