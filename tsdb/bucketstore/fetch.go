package bucketstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/meshlens/meshlens/tsdb"
)

// fetchConcurrency bounds the bucket calls that Sync and ListBlocks make
// at once.
const fetchConcurrency = 16

// errNoMeta says that a block directory has no meta.json: an upload in
// progress or abandoned, or a block being deleted.
var errNoMeta = errors.New("no meta.json")

// listBlockIDs returns the ULIDs of the top-level directories of bkt. Other
// entries (trace blocks under their own prefix, debug files) are skipped.
func listBlockIDs(ctx context.Context, bkt objstore.BucketReader) ([]ulid.ULID, error) {
	var ids []ulid.ULID
	err := bkt.Iter(ctx, "", func(name string) error {
		dir, ok := strings.CutSuffix(name, objstore.DirDelim)
		if !ok {
			return nil
		}
		if id, err := ulid.ParseStrict(dir); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list bucket: %w", err)
	}
	return ids, nil
}

// readMeta reads and checks <id>/meta.json. A missing file is errNoMeta.
func readMeta(ctx context.Context, bkt objstore.BucketReader, id ulid.ULID) (*tsdb.Meta, error) {
	name := path.Join(id.String(), tsdb.MetaFilename)
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return nil, errNoMeta
		}
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	defer rc.Close()
	m, err := tsdb.ReadMeta(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, errCorrupt{err})
	}
	if m.ULID != id {
		return nil, fmt.Errorf("%s: %w", name, errCorrupt{fmt.Errorf("names block %s", m.ULID)})
	}
	return m, nil
}

// errCorrupt wraps the reason why a meta.json cannot be used. Retrying
// does not help.
type errCorrupt struct{ err error }

func (e errCorrupt) Error() string { return "unusable meta.json: " + e.err.Error() }
func (e errCorrupt) Unwrap() error { return e.err }

func isCorrupt(err error) bool {
	var c errCorrupt
	return errors.As(err, &c)
}

// readMark decodes the mark file name of block id into v; found is false
// when there is no such file.
func readMark(ctx context.Context, bkt objstore.BucketReader, id ulid.ULID, name string, v any) (found bool, err error) {
	obj := path.Join(id.String(), name)
	rc, err := bkt.Get(ctx, obj)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return false, nil
		}
		return false, fmt.Errorf("get %s: %w", obj, err)
	}
	defer rc.Close()
	if err := json.NewDecoder(rc).Decode(v); err != nil {
		return true, fmt.Errorf("decode %s: %w", obj, err)
	}
	return true, nil
}

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
