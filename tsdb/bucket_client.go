package tsdb

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/go-kit/log/level"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/client"
)

// newClientBucket makes a bucket with objstore/client, which knows every
// provider. The prefix is applied by NewBucket.
func newClientBucket(logger *slog.Logger, typ objstore.ObjProvider, config any) (objstore.Bucket, error) {
	return client.NewBucketFromConfig(kitLogger{logger}, &client.BucketConfig{Type: typ, Config: config}, "meshlens", nil)
}

// kitLogger hands objstore's go-kit log lines to slog: "level" picks the
// level, "msg" the message, the other pairs become attributes.
type kitLogger struct{ l *slog.Logger }

func (k kitLogger) Log(keyvals ...any) error {
	lvl, msg := slog.LevelInfo, ""
	attrs := make([]any, 0, len(keyvals))
	for i := 0; i+1 < len(keyvals); i += 2 {
		key := fmt.Sprint(keyvals[i])
		switch key {
		case "level":
			switch fmt.Sprint(keyvals[i+1]) {
			case level.DebugValue().String():
				lvl = slog.LevelDebug
			case level.WarnValue().String():
				lvl = slog.LevelWarn
			case level.ErrorValue().String():
				lvl = slog.LevelError
			}
		case "msg":
			msg = fmt.Sprint(keyvals[i+1])
		default:
			attrs = append(attrs, key, keyvals[i+1])
		}
	}
	k.l.Log(context.Background(), lvl, msg, attrs...)
	return nil
}
