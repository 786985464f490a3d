package forward

import (
	"context"

	"github.com/meshlens/meshlens/traces"
)

// Tee returns an Appender that appends spans to primary and, once primary
// accepted them, queues them on fwd. Its error is primary's: spans the
// store refused are not forwarded, and the forwarder never fails an append.
func Tee(primary traces.Appender, fwd *Forwarder) traces.Appender {
	return tee{primary: primary, fwd: fwd}
}

type tee struct {
	primary traces.Appender
	fwd     *Forwarder
}

func (t tee) Append(ctx context.Context, spans []traces.Span) error {
	if err := t.primary.Append(ctx, spans); err != nil {
		return err
	}
	return t.fwd.Append(ctx, spans)
}
