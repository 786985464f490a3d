package decode

import (
	"io"
	"sync"

	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// v1Request is a pooled remote write 1.0 request with the buffers its
// strings alias.
type v1Request struct {
	req              WriteRequestV1
	body, compressed []byte
}

var (
	v1Pool sync.Pool // *v1Request
	v2Pool sync.Pool // *writev2.Request
)

// ParseV1 reads one remote write 1.0 body (a snappy-compressed
// prometheus.WriteRequest) from r within lim and calls fn with the request.
//
// Ownership: the request comes from a pool and its label strings alias a
// pooled buffer (see WriteRequestV1). Both are valid only until fn returns;
// fn copies what it keeps. fn's error is returned unchanged; any other
// error is one of Decode's.
func ParseV1(r io.Reader, lim Limits, fn func(*WriteRequestV1) error) error {
	v1, _ := v1Pool.Get().(*v1Request)
	if v1 == nil {
		v1 = &v1Request{}
	}
	defer v1Pool.Put(v1)
	if err := DecodeV1(r, lim, &v1.req, &v1.body, &v1.compressed); err != nil {
		return err
	}
	return fn(&v1.req)
}

// ParseV2 reads one remote write 2.0 body (a snappy-compressed
// io.prometheus.write.v2.Request) from r within lim and calls fn with it.
//
// Ownership: the request comes from a pool and is valid only until fn
// returns (its strings are copies, the slices are reused). fn's error is
// returned unchanged; any other error is one of Decode's.
func ParseV2(r io.Reader, lim Limits, fn func(*writev2.Request) error) error {
	req, _ := v2Pool.Get().(*writev2.Request)
	if req == nil {
		req = &writev2.Request{}
	}
	defer v2Pool.Put(req)
	req.Reset()
	if err := Decode(r, lim, req); err != nil {
		return err
	}
	return fn(req)
}
