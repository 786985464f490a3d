// Package zipkin encodes simulated spans as Zipkin v2 JSON, the format
// Istio's Envoy sidecars send to /api/v2/spans, and sends them.
package zipkin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/meshlens/meshlens/internal/meshsim/sim"
)

type endpoint struct {
	ServiceName string `json:"serviceName,omitempty"`
	IPv4        string `json:"ipv4,omitempty"`
	Port        int    `json:"port,omitempty"`
}

type span struct {
	TraceID        string            `json:"traceId"`
	ID             string            `json:"id"`
	ParentID       string            `json:"parentId,omitempty"`
	Kind           string            `json:"kind"`
	Name           string            `json:"name"`
	Timestamp      int64             `json:"timestamp"`
	Duration       int64             `json:"duration"`
	LocalEndpoint  endpoint          `json:"localEndpoint"`
	RemoteEndpoint *endpoint         `json:"remoteEndpoint,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// AppendJSON appends spans as a Zipkin v2 JSON array.
func AppendJSON(dst []byte, spans []sim.Span) ([]byte, error) {
	out := make([]span, len(spans))
	for i := range spans {
		s := &spans[i]
		z := span{
			TraceID: s.TraceID.String(), ID: s.ID.String(), Kind: s.Kind, Name: s.Name,
			Timestamp: s.Start, Duration: s.Duration,
			LocalEndpoint: endpoint{ServiceName: s.LocalService, IPv4: s.LocalIPv4},
		}
		if !s.ParentID.IsZero() {
			z.ParentID = s.ParentID.String()
		}
		if s.RemoteIPv4 != "" {
			z.RemoteEndpoint = &endpoint{IPv4: s.RemoteIPv4, Port: s.RemotePort}
		}
		if len(s.Tags) > 0 {
			z.Tags = make(map[string]string, len(s.Tags))
			for _, t := range s.Tags {
				z.Tags[t.Key] = t.Value
			}
		}
		out[i] = z
	}
	b, err := json.Marshal(out)
	if err != nil {
		return dst, fmt.Errorf("encode %d spans: %w", len(spans), err)
	}
	return append(dst, b...), nil
}

// Sender posts spans to a Zipkin collector.
type Sender struct {
	URL    string
	Client *http.Client
	// Retries on 5xx, 429 and transport errors; zero means 3.
	Retries int
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("zipkin collector answered %d: %s", e.Code, e.Body)
}

// Send posts spans as one JSON request, retrying with back-off on 5xx,
// 429 and transport errors, not on other 4xx.
func (s *Sender) Send(ctx context.Context, spans []sim.Span) error {
	if len(spans) == 0 {
		return nil
	}
	body, err := AppendJSON(nil, spans)
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
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		retry := err != nil
		if err == nil {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			_ = resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = &StatusError{Code: resp.StatusCode, Body: string(msg)}
			retry = resp.StatusCode/100 == 5 || resp.StatusCode == http.StatusTooManyRequests
		}
		if !retry || attempt >= retries {
			return fmt.Errorf("send %d spans to %s: %w", len(spans), s.URL, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}
