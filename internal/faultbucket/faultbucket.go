// Package faultbucket wraps an objstore.Bucket to inject the failures that
// object stores show in production: failing writes of chosen objects,
// random 5xx errors and calls that hang. Tests use it to check that the
// code on top of a bucket copes. With no faults set it passes
// objstore.AcceptanceTest.
package faultbucket

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"

	"github.com/thanos-io/objstore"
)

// Operation names, as objstore's metrics name them.
const (
	OpIter       = objstore.OpIter
	OpGet        = objstore.OpGet
	OpGetRange   = objstore.OpGetRange
	OpExists     = objstore.OpExists
	OpUpload     = objstore.OpUpload
	OpDelete     = objstore.OpDelete
	OpAttributes = objstore.OpAttributes
)

// Error is an injected failure, shaped like an HTTP error from an object
// store.
type Error struct {
	Op, Name   string
	StatusCode int
}

func (e *Error) Error() string {
	return fmt.Sprintf("injected fault: %s %s: status %d", e.Op, e.Name, e.StatusCode)
}

// Rule is one fault. A call is affected when its operation is in Ops and
// Match accepts its object name, with probability Rate.
type Rule struct {
	// Ops are the operations affected; empty means all.
	Ops []string
	// Match picks object names (the directory for Iter); nil means all.
	Match func(name string) bool
	// Rate is the probability that a matching call is affected, drawn from
	// the bucket's seeded source; 0 means every matching call.
	Rate float64
	// Stall makes an affected call block until its context is done (it then
	// fails with the context's error) or the stall is released (it then goes
	// through to the wrapped bucket). Otherwise an affected call fails
	// without reaching the wrapped bucket.
	Stall bool
	// Err is the error an affected call returns; nil means an *Error with a
	// 5xx status picked from the seeded source.
	Err error
	// Times bounds how many calls the rule affects; 0 means no bound.
	Times int
}

// Bucket is an objstore.Bucket that injects the faults of its rules into
// the calls it passes to the wrapped bucket. It is safe for concurrent use.
type Bucket struct {
	bkt objstore.Bucket

	mu      sync.Mutex
	rnd     *rand.Rand
	rules   []*rule
	release chan struct{} // Closed to release the current stalls.
	calls   map[string]map[string]int
	stalled int
}

type rule struct {
	Rule
	hits int
}

// New wraps bkt. seed seeds the source of Rate draws and injected status
// codes, so a test sees the same faults on every run.
func New(bkt objstore.Bucket, seed uint64) *Bucket {
	return &Bucket{
		bkt:     bkt,
		rnd:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		release: make(chan struct{}),
		calls:   map[string]map[string]int{},
	}
}

// Add adds a fault rule.
func (b *Bucket) Add(r Rule) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rules = append(b.rules, &rule{Rule: r})
}

// FailUploads makes every Upload of an object that match accepts fail.
func (b *Bucket) FailUploads(match func(name string) bool) {
	b.Add(Rule{Ops: []string{OpUpload}, Match: match})
}

// FailRandomly makes a fraction rate of the calls of ops (all operations
// when none are given) fail with a 5xx *Error.
func (b *Bucket) FailRandomly(rate float64, ops ...string) {
	b.Add(Rule{Ops: ops, Rate: rate})
}

// StallUploads makes every Upload of an object that match accepts block
// until its context is done or Release or Clear is called.
func (b *Bucket) StallUploads(match func(name string) bool) {
	b.Add(Rule{Ops: []string{OpUpload}, Match: match, Stall: true})
}

// Release lets the calls stalled so far go through to the wrapped bucket.
// Stall rules stay in force for later calls.
func (b *Bucket) Release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.release)
	b.release = make(chan struct{})
}

// Clear removes every rule and releases the stalled calls.
func (b *Bucket) Clear() {
	b.mu.Lock()
	b.rules = nil
	b.mu.Unlock()
	b.Release()
}

// Calls returns how many calls of op were made, faulty or not.
func (b *Bucket) Calls(op string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls[op] {
		n += c
	}
	return n
}

// CallsFor returns how many calls of op were made for the object name.
func (b *Bucket) CallsFor(op, name string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[op][name]
}

// Stalled returns how many calls are blocked by stall rules now.
func (b *Bucket) Stalled() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stalled
}

// fault counts the call and applies the first rule that affects it.
func (b *Bucket) fault(ctx context.Context, op, name string) error {
	b.mu.Lock()
	if b.calls[op] == nil {
		b.calls[op] = map[string]int{}
	}
	b.calls[op][name]++
	var hit *rule
	for _, r := range b.rules {
		if r.affects(op, name, b.rnd) {
			hit = r
			break
		}
	}
	if hit == nil {
		b.mu.Unlock()
		return nil
	}
	hit.hits++
	if !hit.Stall {
		err := hit.Err
		if err == nil {
			err = &Error{Op: op, Name: name, StatusCode: []int{500, 502, 503, 504}[b.rnd.IntN(4)]}
		}
		b.mu.Unlock()
		return err
	}
	release := b.release
	b.stalled++
	b.mu.Unlock()

	defer func() {
		b.mu.Lock()
		b.stalled--
		b.mu.Unlock()
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-release:
		return nil
	}
}

func (r *rule) affects(op, name string, rnd *rand.Rand) bool {
	if r.Times > 0 && r.hits >= r.Times {
		return false
	}
	if len(r.Ops) > 0 {
		found := false
		for _, o := range r.Ops {
			found = found || o == op
		}
		if !found {
			return false
		}
	}
	if r.Match != nil && !r.Match(name) {
		return false
	}
	return r.Rate <= 0 || r.Rate >= 1 || rnd.Float64() < r.Rate
}

// Provider returns the wrapped bucket's provider.
func (b *Bucket) Provider() objstore.ObjProvider { return b.bkt.Provider() }

// Name returns the wrapped bucket's name.
func (b *Bucket) Name() string { return b.bkt.Name() }

// Close closes the wrapped bucket.
func (b *Bucket) Close() error { return b.bkt.Close() }

// Upload implements objstore.Bucket.
func (b *Bucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	if err := b.fault(ctx, OpUpload, name); err != nil {
		return err
	}
	return b.bkt.Upload(ctx, name, r, opts...)
}

// Delete implements objstore.Bucket.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	if err := b.fault(ctx, OpDelete, name); err != nil {
		return err
	}
	return b.bkt.Delete(ctx, name)
}

// Iter implements objstore.Bucket.
func (b *Bucket) Iter(ctx context.Context, dir string, f func(string) error, options ...objstore.IterOption) error {
	if err := b.fault(ctx, OpIter, dir); err != nil {
		return err
	}
	return b.bkt.Iter(ctx, dir, f, options...)
}

// IterWithAttributes implements objstore.Bucket.
func (b *Bucket) IterWithAttributes(ctx context.Context, dir string, f func(objstore.IterObjectAttributes) error, options ...objstore.IterOption) error {
	if err := b.fault(ctx, OpIter, dir); err != nil {
		return err
	}
	return b.bkt.IterWithAttributes(ctx, dir, f, options...)
}

// SupportedIterOptions implements objstore.Bucket.
func (b *Bucket) SupportedIterOptions() []objstore.IterOptionType {
	return b.bkt.SupportedIterOptions()
}

// Get implements objstore.Bucket.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := b.fault(ctx, OpGet, name); err != nil {
		return nil, err
	}
	return b.bkt.Get(ctx, name)
}

// GetRange implements objstore.Bucket.
func (b *Bucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	if err := b.fault(ctx, OpGetRange, name); err != nil {
		return nil, err
	}
	return b.bkt.GetRange(ctx, name, off, length)
}

// Exists implements objstore.Bucket.
func (b *Bucket) Exists(ctx context.Context, name string) (bool, error) {
	if err := b.fault(ctx, OpExists, name); err != nil {
		return false, err
	}
	return b.bkt.Exists(ctx, name)
}

// Attributes implements objstore.Bucket.
func (b *Bucket) Attributes(ctx context.Context, name string) (objstore.ObjectAttributes, error) {
	if err := b.fault(ctx, OpAttributes, name); err != nil {
		return objstore.ObjectAttributes{}, err
	}
	return b.bkt.Attributes(ctx, name)
}

// IsObjNotFoundErr asks the wrapped bucket; injected errors are not
// not-found errors.
func (b *Bucket) IsObjNotFoundErr(err error) bool { return b.bkt.IsObjNotFoundErr(err) }

// IsAccessDeniedErr asks the wrapped bucket.
func (b *Bucket) IsAccessDeniedErr(err error) bool { return b.bkt.IsAccessDeniedErr(err) }

var _ objstore.Bucket = (*Bucket)(nil)
