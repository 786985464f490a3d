// Package decode reads the bodies of remote write 1.0 and 2.0 requests
// (and of remote read requests): snappy block format, with the compressed
// size bounded while reading and the declared decoded size checked before
// anything is allocated for it, then protobuf. It imports neither net/http
// nor storage: callers hand it an io.Reader, Limits and a callback.
package decode

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/golang/snappy"
)

// Errors of Decode, DecodeV1, ParseV1 and ParseV2. The write handler maps
// them to status codes; every other error is an undecodable body.
var (
	// ErrBodyTooLarge means the compressed body exceeds Limits.MaxBodyBytes (413).
	ErrBodyTooLarge = errors.New("request body too large")
	// ErrDecodedTooLarge means the snappy header declares a decoded length over
	// Limits.MaxDecodedBytes; nothing of that size was allocated (400).
	ErrDecodedTooLarge = errors.New("decoded request too large")
)

// Limits bounds what a body may take. Both must be positive.
type Limits struct {
	// MaxBodyBytes is the largest compressed body accepted.
	MaxBodyBytes int
	// MaxDecodedBytes is the largest decoded length a snappy body may declare.
	MaxDecodedBytes int
}

// Message is a protobuf message Decode can fill: prompb.WriteRequest for
// remote write 1.0, writev2.Request for 2.0, prompb.ReadRequest for remote read.
// Unmarshal must copy what it keeps: the bytes it is given are reused.
type Message interface {
	Unmarshal([]byte) error
}

// bufPool holds the compressed and decoded byte buffers of Decode. A buffer is
// owned by one Decode call from Get to Put and never escapes it.
var bufPool sync.Pool

func getBuf() *[]byte {
	if b, ok := bufPool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 64<<10)
	return &b
}

// Decode reads one snappy block-compressed protobuf message (the remote write
// and remote read body format) from r into msg. It reads at most
// lim.MaxBodyBytes+1 bytes and checks the declared decoded length against
// lim.MaxDecodedBytes before decoding.
func Decode(r io.Reader, lim Limits, msg Message) error {
	compressed := getBuf()
	defer bufPool.Put(compressed)
	body, err := readAtMost(r, (*compressed)[:0], lim.MaxBodyBytes)
	*compressed = body[:0]
	if err != nil {
		return err
	}
	decoded := getBuf()
	defer bufPool.Put(decoded)
	data, err := decompress((*decoded)[:0], body, lim.MaxDecodedBytes)
	*decoded = data[:0]
	if err != nil {
		return err
	}
	if err := msg.Unmarshal(data); err != nil {
		return fmt.Errorf("decode protobuf (%d bytes): %w", len(data), err)
	}
	return nil
}

// readAtMost appends r's content to dst, failing with ErrBodyTooLarge once more
// than limit bytes arrive.
func readAtMost(r io.Reader, dst []byte, limit int) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst, fmt.Errorf("%w: over %d bytes (remote_write.max_request_bytes)", ErrBodyTooLarge, limit)
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("read request body: %w", err)
		}
	}
}

// decompress snappy-decodes src into dst's storage after checking the declared
// length against limit.
func decompress(dst, src []byte, limit int) ([]byte, error) {
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return dst, fmt.Errorf("snappy decode (%d bytes): %w", len(src), err)
	}
	if n > limit {
		return dst, fmt.Errorf("%w: snappy body declares %d bytes, limit %d (remote_write.max_decoded_bytes)", ErrDecodedTooLarge, n, limit)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	out, err := snappy.Decode(dst[:cap(dst)], src)
	if err != nil {
		return dst, fmt.Errorf("snappy decode (%d bytes): %w", len(src), err)
	}
	return out, nil
}
