package bucketstore

import (
	"context"
	"errors"
	"sync"
)

// fetchConcurrency bounds the bucket calls that Sync and ListBlocks make
// at once.
const fetchConcurrency = 16

// forEach calls fn for every element of items, n at a time, and returns
// the errors joined. It stops starting calls once ctx is done.
func forEach[T any](ctx context.Context, n int, items []T, fn func(T) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, n)
	)
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, ctx.Err())...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(it); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
