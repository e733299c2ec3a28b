package etcd

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/internal/storage"
)

var _ storage.Snapshotter = (*Backend)(nil)

// snapshotPage is how many entries one range read of a snapshot returns.
var snapshotPage int64 = 500

// Snapshot calls fn with a view of every entry under the prefix at one
// etcd revision: the revision of a first count-only read, which every later
// page is pinned to, so writes made meanwhile are not in the view. Nothing
// is held on the cluster; if a compaction passes the view's revision before
// the last page is read, the iteration fails with an error that says to
// run the snapshot (or migration) again.
func (b *Backend) Snapshot(ctx context.Context, fn func(storage.View) error) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	end := clientv3.GetPrefixRangeEnd(b.root)
	rctx, cancel := b.reqCtx(ctx)
	resp, err := b.cli.Get(rctx, b.root, clientv3.WithRange(end), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return b.fail(ctx, "snapshot count", err)
	}
	rev, count := resp.Header.Revision, resp.Count
	entries := func(yield func(storage.Entry, error) bool) {
		from := b.root
		for {
			rctx, cancel := b.reqCtx(ctx)
			resp, err := b.cli.Get(rctx, from, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(snapshotPage),
				clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
			cancel()
			switch {
			case errors.Is(err, rpctypes.ErrCompacted):
				yield(storage.Entry{}, fmt.Errorf("etcd compacted its history past revision %d while this consistent read was in progress; run the snapshot or migration again (or compact less often): %w", rev, err))
				return
			case err != nil:
				yield(storage.Entry{}, b.fail(ctx, "snapshot read", err))
				return
			}
			for _, kv := range resp.Kvs {
				if !yield(storage.Entry{Key: string(kv.Key[len(b.root):]), Value: kv.Value, Revision: kv.ModRevision}, nil) {
					return
				}
			}
			if !resp.More || len(resp.Kvs) == 0 {
				return
			}
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	return fn(storage.View{Backend: "etcd", Revision: rev, Count: count, Entries: entries})
}

// LeasedKeys returns the keys beside the store, under Prefix()+".", that
// are held by a lease: the records of replicas that are running
// (membership, job leadership; internal/replica keeps them under
// Prefix()+".replicas/"). Offline tools (restore, migrate) refuse to write
// while there are any. A replica's records outlive it by up to its lease
// TTL.
func (b *Backend) LeasedKeys(ctx context.Context) ([]string, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	var keys []string
	rctx, cancel := b.reqCtx(ctx)
	defer cancel()
	// Not keys-only: etcd leaves the lease out of a keys-only answer.
	resp, err := b.cli.Get(rctx, b.prefix+".", clientv3.WithPrefix())
	if err != nil {
		return nil, b.fail(ctx, "read", err)
	}
	for _, kv := range resp.Kvs {
		if kv.Lease != 0 {
			keys = append(keys, string(kv.Key))
		}
	}
	return keys, nil
}
