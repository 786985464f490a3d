package forward

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshlens/meshlens/traces"
)

// grpcSender sends OTLP/gRPC, gzip-compressed, over a plain-text
// connection.
type grpcSender struct {
	conn   *grpc.ClientConn
	client ptraceotlp.GRPCClient
	md     metadata.MD
}

func newGRPCSender(endpoint string, headers map[string]string) (*grpcSender, error) {
	conn, err := grpc.NewClient(endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.UseCompressor(gzip.Name)),
	)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	return &grpcSender{conn: conn, client: ptraceotlp.NewGRPCClient(conn), md: metadata.New(headers)}, nil
}

func (s *grpcSender) export(ctx context.Context, spans []traces.Span) (int64, error) {
	req := ptraceotlp.NewExportRequestFromTraces(traces.ToPdata(spans))
	if len(s.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, s.md)
	}
	resp, err := s.client.Export(ctx, req)
	if err == nil {
		return resp.PartialSuccess().RejectedSpans(), nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return 0, fmt.Errorf("export %d spans: %w", len(spans), err) // retryable
	}
	ee := &exportError{err: fmt.Errorf("export %d spans: %w", len(spans), err)}
	var retryInfo time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			retryInfo = ri.GetRetryDelay().AsDuration()
			ee.retryAfter = retryInfo
		}
	}
	// Retryable codes as the OTLP specification lists them; RESOURCE_EXHAUSTED
	// only when the server says, with RetryInfo, that it will recover.
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable, codes.DataLoss:
		ee.retryable = true
	case codes.ResourceExhausted:
		ee.retryable = retryInfo > 0
	}
	return 0, ee
}

func (s *grpcSender) close() error { return s.conn.Close() }
