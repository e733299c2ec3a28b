package storage

import (
	"context"
	"iter"
)

// Snapshotter is implemented by backends that can read every entry as of
// one point in time: bbolt in one read transaction, etcd with range reads
// pinned at one revision. Backups (internal/snapshot) use it so that a
// snapshot taken while the server runs never mixes entries from before and
// after a write.
type Snapshotter interface {
	// Snapshot calls fn once with a consistent view of the whole store.
	// The view is valid only while fn runs. Writes made meanwhile do not
	// show in it, and do not wait for it longer than the backend needs
	// (bbolt: a long read transaction delays the growth of the file;
	// etcd: nothing, unless a compaction passes the view's revision, and
	// then the view's iteration fails and the snapshot must be retried).
	Snapshot(ctx context.Context, fn func(View) error) error
}

// View is a consistent, read-only view of a store.
type View struct {
	// Backend names the kind of store: "bbolt" or "etcd".
	Backend string
	// Revision is the store's revision at the view: every write at or
	// below it is in the view, none after it.
	Revision int64
	// Count is the number of entries Entries yields.
	Count int64
	// Entries yields every entry in lexical (byte) order of the keys,
	// once. An error ends the iteration. Each entry's Value belongs to the
	// caller.
	Entries iter.Seq2[Entry, error]
}
