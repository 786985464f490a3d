package tsdb

import (
	"github.com/oklog/ulid/v2"
	promtsdb "github.com/prometheus/prometheus/tsdb"

	"github.com/meshlens/meshlens/tsdb/block"
)

// BucketBlocks lists the blocks a bucket reader serves
// (bucketstore.Store does).
type BucketBlocks interface {
	Blocks() []*block.Meta
}

// KeepUntilServed narrows a local deletion policy (such as
// Shipper.BlocksToDelete) to the blocks whose data served already holds
// (the block itself, or a compacted block made from it), so that no query
// sees a gap between a local block's deletion and the bucket reader's next
// sync. The newest block always stays: its end tells the head, after a
// restart, where the WAL's data is already in blocks; without it the head
// would cut and ship that data again. The result is for
// Options.BlocksToDelete.
func KeepUntilServed(policy func([]*promtsdb.Block) map[ulid.ULID]struct{}, served BucketBlocks) func([]*promtsdb.Block) map[ulid.ULID]struct{} {
	return func(blocks []*promtsdb.Block) map[ulid.ULID]struct{} {
		del := policy(blocks)
		if len(del) == 0 {
			return del
		}
		var newest *promtsdb.Block
		for _, b := range blocks {
			if newest == nil || b.Meta().MaxTime > newest.Meta().MaxTime {
				newest = b
			}
		}
		delete(del, newest.Meta().ULID)
		isServed := map[ulid.ULID]bool{}
		for _, b := range blocks {
			if b.Meta().Stats.NumSamples == 0 {
				isServed[b.Meta().ULID] = true // nothing to serve; never shipped
			}
		}
		for _, m := range served.Blocks() {
			isServed[m.ULID] = true
			for _, src := range m.Compaction.Sources {
				isServed[src] = true
			}
		}
		for id := range del {
			if !isServed[id] {
				delete(del, id)
			}
		}
		return del
	}
}
