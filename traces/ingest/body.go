package ingest

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/meshlens/meshlens/traces/ingest/decode"
)

// mediaType is the request's Content-Type without parameters, lower case;
// def when the header is absent.
func mediaType(req *http.Request, def string) string {
	ct := req.Header.Get("Content-Type")
	if ct == "" {
		return def
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ct))
	}
	return mt
}

// readBody reads a request body of at most MaxRequestBytes and undoes its
// Content-Encoding (gzip or none), within Limits.MaxDecodedBytes.
func (r *receiver) readBody(req *http.Request) ([]byte, error) {
	enc := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding")))
	if enc != "" && enc != "identity" && enc != "gzip" {
		return nil, fmt.Errorf("%w: content encoding %q, want gzip or none", errUnsupported, enc)
	}
	limit := r.opts.MaxRequestBytes
	if req.ContentLength > int64(limit) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errBodyTooLarge, req.ContentLength, limit)
	}
	size := limit + 1
	if req.ContentLength >= 0 {
		size = int(req.ContentLength) + 1
	}
	body, err := readAtMost(req.Body, make([]byte, 0, min(size, 512<<10)), limit)
	if err != nil {
		return nil, err
	}
	if enc != "gzip" {
		return body, nil
	}
	return decode.Gunzip(nil, body, r.opts.Limits.MaxDecodedBytes)
}

// readAtMost appends r's content to dst, failing with errBodyTooLarge as
// soon as more than limit bytes arrive.
func readAtMost(r io.Reader, dst []byte, limit int) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):min(cap(dst), limit+1)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst, fmt.Errorf("%w: over %d bytes", errBodyTooLarge, limit)
		}
		if errors.Is(err, io.EOF) {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("%w: read request body: %w", decode.ErrUndecodable, err)
		}
	}
}
