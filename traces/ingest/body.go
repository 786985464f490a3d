package ingest

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

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

// bodyBuf holds a request's bytes while it is decoded: as sent, and
// decompressed. It is pooled (bodyPool): every decoder copies what it keeps
// (span strings never alias the body), so the buffers are reused as soon
// as the request is decoded.
type bodyBuf struct {
	raw, plain []byte
}

// maxPooledBody is the largest buffer put back in bodyPool; larger ones
// (rare, up to MaxRequestBytes) are left to the garbage collector rather
// than pinned.
const maxPooledBody = 4 << 20

var bodyPool = sync.Pool{New: func() any { return new(bodyBuf) }}

func getBody() *bodyBuf { return bodyPool.Get().(*bodyBuf) }

// putBody returns bb to the pool; nothing may use its bytes afterwards.
func putBody(bb *bodyBuf) {
	if cap(bb.raw) > maxPooledBody {
		bb.raw = nil
	}
	if cap(bb.plain) > maxPooledBody {
		bb.plain = nil
	}
	bb.raw, bb.plain = bb.raw[:0], bb.plain[:0]
	bodyPool.Put(bb)
}

// readBody reads a request body of at most MaxRequestBytes into bb and
// undoes its Content-Encoding (gzip or none), within
// Limits.MaxDecodedBytes. The bytes returned are bb's: valid until bb is
// put back.
func (r *receiver) readBody(req *http.Request, bb *bodyBuf) ([]byte, error) {
	enc := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding")))
	if enc != "" && enc != "identity" && enc != "gzip" {
		return nil, fmt.Errorf("%w: content encoding %q, want gzip or none", errUnsupported, enc)
	}
	limit := r.opts.MaxRequestBytes
	if req.ContentLength > int64(limit) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errBodyTooLarge, req.ContentLength, limit)
	}
	// With a Content-Length (at most limit, checked above) the body fits
	// the buffer exactly, one byte more to see the end without growing it.
	// Without one, the buffer grows as the body arrives.
	size := 32 << 10
	if req.ContentLength >= 0 {
		size = int(req.ContentLength) + 1
	}
	if cap(bb.raw) < size {
		bb.raw = make([]byte, 0, size)
	}
	body, err := readAtMost(req.Body, bb.raw[:0], limit)
	bb.raw = body
	if err != nil {
		return nil, err
	}
	if enc != "gzip" {
		return body, nil
	}
	bb.plain, err = decode.Gunzip(bb.plain[:0], body, r.opts.Limits.MaxDecodedBytes)
	if err != nil {
		return nil, err
	}
	return bb.plain, nil
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
