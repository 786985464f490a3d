package forward

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/meshlens/meshlens/traces"
)

// maxResponseBytes bounds the response body read from the endpoint.
const maxResponseBytes = 64 << 10

// httpSender sends OTLP/HTTP: a POST of a gzip-compressed protobuf
// ExportTraceServiceRequest.
type httpSender struct {
	url     string
	headers map[string]string
	client  *http.Client
}

func newHTTPSender(endpoint string, headers map[string]string, rt http.RoundTripper) (*httpSender, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q: want an http:// or https:// URL such as http://tempo:4318/v1/traces", endpoint)
	}
	return &httpSender{url: endpoint, headers: headers, client: &http.Client{Transport: rt}}, nil
}

func (s *httpSender) export(ctx context.Context, spans []traces.Span) (int64, error) {
	body, err := ptraceotlp.NewExportRequestFromTraces(traces.ToPdata(spans)).MarshalProto()
	if err != nil {
		return 0, &exportError{err: fmt.Errorf("encode export request: %w", err)}
	}
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	if _, err := zw.Write(body); err != nil {
		return 0, &exportError{err: fmt.Errorf("compress export request: %w", err)}
	}
	if err := zw.Close(); err != nil {
		return 0, &exportError{err: fmt.Errorf("compress export request: %w", err)}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, &zbuf)
	if err != nil {
		return 0, &exportError{err: fmt.Errorf("export request: %w", err)}
	}
	for k, v := range s.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post %d spans: %w", len(spans), err) // retryable
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))

	if resp.StatusCode/100 == 2 {
		er := ptraceotlp.NewExportResponse()
		if resp.Header.Get("Content-Type") == "application/x-protobuf" && er.UnmarshalProto(respBody) == nil {
			return er.PartialSuccess().RejectedSpans(), nil
		}
		return 0, nil
	}
	ee := &exportError{err: fmt.Errorf("post %d spans: %s: %s", len(spans), resp.Status, bytes.TrimSpace(respBody[:min(len(respBody), 256)]))}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		ee.retryable = true
		ee.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return 0, ee
}

func (s *httpSender) close() error {
	s.client.CloseIdleConnections()
	return nil
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
// Zero when absent, invalid or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		return max(time.Duration(secs)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
