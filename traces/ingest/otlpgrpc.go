package ingest

import (
	"context"
	"errors"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // OTLP exporters may send gzip.
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshlens/meshlens/traces"
	"github.com/meshlens/meshlens/traces/ingest/decode"
)

// OTLPService is the OTLP/gRPC trace service
// (opentelemetry.proto.collector.trace.v1.TraceService/Export).
//
// Its answers follow the OTLP specification: OK with partial_success
// counting the refused spans (zero trace or span id) and naming the first,
// the valid ones stored; InvalidArgument when no span is valid or the
// request holds more than Limits.MaxSpansPerRequest (not retried);
// Unavailable, retried by senders, when the appender is overloaded (with
// RetryInfo) or fails (nothing stored).
type OTLPService struct {
	ptraceotlp.UnimplementedGRPCServer
	r *receiver
}

// NewOTLPService returns the OTLP/gRPC trace service over app. Register it
// on a server made with ServerOptions; the listener (":4317") belongs to
// the caller.
func NewOTLPService(app traces.Appender, opts Options) *OTLPService {
	return &OTLPService{r: newReceiver(app, opts)}
}

// Register registers the service on s.
func (s *OTLPService) Register(gs *grpc.Server) { ptraceotlp.RegisterGRPCServer(gs, s) }

// ServerOptions are the options of a gRPC server for the service: its
// largest message (decompressed) is Limits.MaxDecodedBytes, larger ones
// are refused by gRPC with ResourceExhausted before decoding. gzip
// compression is accepted.
func ServerOptions(opts Options) []grpc.ServerOption {
	opts = opts.withDefaults()
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(opts.Limits.MaxDecodedBytes)}
}

// Export stores the valid spans of one request.
func (s *OTLPService) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	resp := ptraceotlp.NewExportResponse()
	b, err := decode.Traces(req.Traces(), s.r.opts.Limits)
	if err != nil {
		s.r.refuse(protocolOTLPGRPC, classify(err), err)
		return resp, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(b.Spans) == 0 && b.RefusedSpans() > 0 {
		s.r.countDecoded(&b)
		s.r.refusedRequests(reasonInvalidSpans).Inc()
		return resp, status.Error(codes.InvalidArgument, b.RefusedMessage())
	}
	if err := s.r.store(ctx, protocolOTLPGRPC, &b); err != nil {
		rf := classify(err)
		s.r.refuse(protocolOTLPGRPC, rf, err)
		if errors.Is(err, traces.ErrOverloaded) {
			st, derr := status.New(codes.Unavailable, err.Error()).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(s.r.opts.RetryAfter)})
			if derr == nil {
				return resp, st.Err()
			}
		}
		return resp, status.Error(codes.Unavailable, err.Error())
	}
	if n := b.RefusedSpans(); n > 0 {
		s.r.logger.Debug("spans refused", "protocol", protocolOTLPGRPC, "refused", n, "accepted", len(b.Spans), "first", b.FirstRefused)
		resp.PartialSuccess().SetRejectedSpans(int64(n))
		resp.PartialSuccess().SetErrorMessage(b.RefusedMessage())
	}
	return resp, nil
}
