// Package storage defines the small key-value interface every Coffer backend
// implements: bbolt for a single node (the default), etcd for HA, and an
// in-memory map for unit tests.
//
// Keys are slash-separated paths ("keys/9f3c...", "core/keyring"). Values are
// opaque bytes; above this layer the barrier encrypts every value, so a
// backend never sees plaintext. Each stored value has a revision that grows on
// every write, which is what compare-and-swap checks; an etcd backend maps it
// to the key's mod revision without any change to callers.
package storage

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotFound is returned by Get when the key does not exist.
var ErrNotFound = errors.New("storage: not found")

// ErrConflict is returned by Apply when a condition of the batch did not hold;
// nothing of the batch was written.
var ErrConflict = errors.New("storage: conflicting concurrent write")

// Entry is a stored value with its revision.
type Entry struct {
	Key string
	// Value belongs to the caller: changing it does not change the store.
	Value []byte
	// Revision identifies the write that stored Value. It is greater than
	// zero, and every later write of the key gets a greater one, even after
	// the key is deleted and created again.
	Revision int64
}

// OpKind says what an Op does.
type OpKind int

// Operation kinds.
const (
	OpPut OpKind = iota + 1
	OpDelete
	// OpCheck writes nothing; it only asserts IfRevision.
	OpCheck
)

// AnyRevision disables the revision check of an Op.
const AnyRevision int64 = -1

// Op is one step of an atomic batch.
type Op struct {
	Kind  OpKind
	Key   string
	Value []byte
	// IfRevision is the revision the key must have for the batch to apply:
	// AnyRevision for no check, 0 for "must not exist".
	IfRevision int64
}

// Put returns an unconditional put.
func Put(key string, value []byte) Op {
	return Op{Kind: OpPut, Key: key, Value: value, IfRevision: AnyRevision}
}

// Delete returns an unconditional delete.
func Delete(key string) Op { return Op{Kind: OpDelete, Key: key, IfRevision: AnyRevision} }

// Backend is durable key-value storage. Implementations are safe for
// concurrent use, and a nil error from Apply means the batch is durable
// (fsynced, or committed by a quorum).
//
// Keys must not be empty. Get, List and Apply fail with ctx.Err() when ctx
// is already done. The storagetest package is the executable form of this
// contract; every implementation runs it.
type Backend interface {
	// Get returns the entry at key or ErrNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// List returns the keys that start with prefix, in lexical (byte)
	// order; the empty prefix lists every key.
	List(ctx context.Context, prefix string) ([]string, error)
	// Apply writes ops atomically: all of them or none. It returns
	// ErrConflict when an IfRevision condition fails. Every condition is
	// evaluated against the state before the batch, and a batch should
	// write each key at most once (etcd rejects one that writes a key
	// twice). Deleting a missing key is not an error. Apply copies what it
	// keeps: the caller may reuse the ops' values once it returns. An
	// empty batch does nothing.
	Apply(ctx context.Context, ops ...Op) error
	// Close releases the backend.
	Close() error
}

// Validate checks what every backend requires of an op: a key, a known
// kind and a sensible IfRevision. Backends add their own limits.
func (op Op) Validate() error {
	if op.Key == "" {
		return errors.New("storage: empty key")
	}
	switch op.Kind {
	case OpPut, OpDelete, OpCheck:
	default:
		return fmt.Errorf("storage: key %q: unknown op kind %d", op.Key, op.Kind)
	}
	if op.IfRevision < AnyRevision {
		return fmt.Errorf("storage: key %q: invalid IfRevision %d", op.Key, op.IfRevision)
	}
	return nil
}

// EventKind says what a watch event reports.
type EventKind int

// Watch event kinds.
const (
	// EventPut: Key was written at Revision.
	EventPut EventKind = iota + 1
	// EventDelete: Key was deleted at Revision.
	EventDelete
	// EventProgress: every change up to Revision has been delivered. A
	// watcher sends one at least every progress interval while it is
	// connected, so a consumer can prove its view is fresh.
	EventProgress
	// EventReset: the watch lost history (a compacted revision, or a
	// backend that cannot resume) and resumed after Revision. Every cached
	// entry under the prefix must be read again.
	EventReset
)

// Event is one change reported by a watch. A put carries the value stored
// at Revision, so a consumer applies the change without reading the store
// again: events arrive in revision order, and a consumer applies one only
// when Revision is greater than the revision it already holds for Key (its
// own writes, and anything it read later, are not undone by an older
// event).
type Event struct {
	Kind     EventKind
	Key      string
	Revision int64
	// Value is, for EventPut, the value stored at Revision, as stored
	// (above the backend: still barrier-encrypted; an empty value may be
	// nil); nil otherwise. It belongs to the consumer.
	Value []byte
}

// Change is one stored change as a cache applies it: a watch event whose
// value the barrier has opened. Services bring their caches in line with
// it (Refresh) without reading the store.
type Change struct {
	// Path is the changed key, below the barrier ("keys/ID").
	Path string
	// Revision is the revision of the write; a cache holding Path at this
	// revision or a later one ignores the change.
	Revision int64
	// Value is the plaintext stored at Revision; nil when Deleted.
	Value []byte
	// Deleted reports that Path was deleted at Revision.
	Deleted bool
}

// Watcher is implemented by backends shared by several replicas (etcd, and
// inmem for unit tests). A single-node bbolt store has no other writer and
// needs none.
type Watcher interface {
	// Revision returns the store's current revision: every write so far
	// has a revision at or below it.
	Revision(ctx context.Context) (int64, error)
	// Watch delivers, in revision order, every change to keys under
	// prefix with a revision greater than fromRevision, interleaved with
	// EventProgress and, when history was lost, EventReset. It reconnects
	// by itself; while it cannot, no progress events arrive. The channel
	// is closed when ctx is done.
	Watch(ctx context.Context, prefix string, fromRevision int64) <-chan Event
}
