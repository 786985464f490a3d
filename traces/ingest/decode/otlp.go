package decode

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// OTLPJSON decodes an OTLP ExportTraceServiceRequest in OTLP's JSON
// encoding (ids in hex).
func OTLPJSON(data []byte, lim Limits) (Batch, error) {
	if err := checkSize(data, lim); err != nil {
		return Batch{}, err
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalJSON(data); err != nil {
		return Batch{}, fmt.Errorf("%w: OTLP JSON (%d bytes): %w", ErrUndecodable, len(data), err)
	}
	return Traces(req.Traces(), lim)
}

// Gunzip decompresses a gzip body, failing with ErrTooLarge as soon as the
// output passes limit bytes (zero: no limit); it never holds more than
// limit+1 decompressed bytes. dst's storage is reused when large enough.
func Gunzip(dst, src []byte, limit int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(src))
	if err != nil {
		return dst[:0], fmt.Errorf("%w: gzip (%d bytes): %w", ErrUndecodable, len(src), err)
	}
	var r io.Reader = zr
	if limit > 0 {
		r = io.LimitReader(zr, int64(limit)+1)
	}
	// The trailer's size (modulo 2^32, from the sender) is only a hint for
	// the first allocation, bounded by the limit.
	if len(src) >= 4 {
		hint := int(binary.LittleEndian.Uint32(src[len(src)-4:]))
		if limit > 0 {
			hint = min(hint, limit+1)
		}
		hint = min(hint, 64*len(src)+512)
		if cap(dst) < hint {
			dst = make([]byte, 0, hint)
		}
	}
	out := bytes.NewBuffer(dst[:0])
	if _, err := out.ReadFrom(r); err != nil {
		return out.Bytes(), fmt.Errorf("%w: gzip (%d bytes): %w", ErrUndecodable, len(src), err)
	}
	if limit > 0 && out.Len() > limit {
		return out.Bytes(), fmt.Errorf("%w: over %d bytes decompressed from %d", ErrTooLarge, limit, len(src))
	}
	return out.Bytes(), nil
}
