// Package otlp encodes simulated spans as OTLP/HTTP protobuf, what Envoy's
// OpenTelemetry tracer (Istio's "opentelemetry" extension provider) exports,
// and sends them to a collector's /v1/traces.
//
// The spans carry the attributes Envoy sets as tags (the same keys as in
// its Zipkin spans: http.method, http.status_code, upstream_cluster,
// istio.canonical_service, ...) as string attributes; the resource has
// service.name "<canonical service>.<namespace>", Istio's default service
// name; SERVER spans are inbound, CLIENT spans outbound; failed requests
// have status ERROR.
package otlp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/meshlens/meshlens/internal/meshsim/sim"
)

// ContentType is the Content-Type of OTLP/HTTP protobuf requests.
const ContentType = "application/x-protobuf"

// Traces converts spans to pdata traces, one ResourceSpans per local
// service in order of first appearance.
func Traces(spans []sim.Span) ptrace.Traces {
	td := ptrace.NewTraces()
	bySvc := make(map[string]ptrace.SpanSlice)
	for i := range spans {
		s := &spans[i]
		ss, ok := bySvc[s.LocalService]
		if !ok {
			rs := td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutStr("service.name", s.LocalService)
			ss = rs.ScopeSpans().AppendEmpty().Spans()
			bySvc[s.LocalService] = ss
		}
		fill(ss.AppendEmpty(), s)
	}
	return td
}

func fill(out ptrace.Span, s *sim.Span) {
	out.SetTraceID(pcommon.TraceID(s.TraceID))
	out.SetSpanID(pcommon.SpanID(s.ID))
	if !s.ParentID.IsZero() {
		out.SetParentSpanID(pcommon.SpanID(s.ParentID))
	}
	out.SetName(s.Name)
	switch s.Kind {
	case sim.SpanServer:
		out.SetKind(ptrace.SpanKindServer)
	case sim.SpanClient:
		out.SetKind(ptrace.SpanKindClient)
	}
	out.SetStartTimestamp(pcommon.Timestamp(s.Start * 1000))
	out.SetEndTimestamp(pcommon.Timestamp((s.Start + s.Duration) * 1000))
	attrs := out.Attributes()
	attrs.EnsureCapacity(len(s.Tags))
	for _, t := range s.Tags {
		attrs.PutStr(t.Key, t.Value)
	}
	if s.Error {
		out.Status().SetCode(ptrace.StatusCodeError)
	}
}

// Marshal encodes spans as an ExportTraceServiceRequest.
func Marshal(spans []sim.Span) ([]byte, error) {
	b, err := ptraceotlp.NewExportRequestFromTraces(Traces(spans)).MarshalProto()
	if err != nil {
		return nil, fmt.Errorf("encode %d spans as OTLP: %w", len(spans), err)
	}
	return b, nil
}

// Sender posts spans to an OTLP/HTTP endpoint.
type Sender struct {
	// URL is the traces endpoint, e.g. http://127.0.0.1:4318/v1/traces.
	URL    string
	Client *http.Client
	// Retries on 429, 502, 503, 504 and transport errors (the OTLP/HTTP
	// retryable answers); zero means 3.
	Retries int
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("OTLP endpoint answered %d: %s", e.Code, e.Body)
}

// PartialError reports spans the endpoint rejected in a 2xx answer
// (ExportTracePartialSuccess).
type PartialError struct {
	Rejected int64
	Message  string
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("OTLP endpoint rejected %d spans: %s", e.Rejected, e.Message)
}

// Retryable reports whether OTLP/HTTP says to retry an answer.
func Retryable(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Send posts spans as one request, retrying with back-off (or the
// server's Retry-After) on retryable answers and transport errors.
func (s *Sender) Send(ctx context.Context, spans []sim.Span) error {
	if len(spans) == 0 {
		return nil
	}
	body, err := Marshal(spans)
	if err != nil {
		return err
	}
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	retries := s.Retries
	if retries == 0 {
		retries = 3
	}
	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", ContentType)
		resp, err := client.Do(req)
		retry := err != nil
		wait := backoff
		if err == nil {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return partial(resp, msg)
			}
			err = &StatusError{Code: resp.StatusCode, Body: string(msg[:min(len(msg), 512)])}
			retry = Retryable(resp.StatusCode)
			if ra, e := strconv.Atoi(resp.Header.Get("Retry-After")); e == nil && ra > 0 {
				wait = time.Duration(ra) * time.Second
			}
		}
		if !retry || attempt >= retries {
			return fmt.Errorf("send %d spans to %s: %w", len(spans), s.URL, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff *= 2
	}
}

// partial decodes the ExportTraceServiceResponse of a 2xx answer.
func partial(resp *http.Response, body []byte) error {
	if len(body) == 0 || resp.Header.Get("Content-Type") != ContentType {
		return nil
	}
	r := ptraceotlp.NewExportResponse()
	if err := r.UnmarshalProto(body); err != nil {
		return nil
	}
	if ps := r.PartialSuccess(); ps.RejectedSpans() > 0 {
		return &PartialError{Rejected: ps.RejectedSpans(), Message: ps.ErrorMessage()}
	}
	return nil
}
