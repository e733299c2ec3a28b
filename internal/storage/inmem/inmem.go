// Package inmem is an in-memory storage.Backend for unit tests only.
//
// It keeps everything in a map guarded by a mutex and is lost when the process
// exits: nothing is durable, so it must never back a real Coffer server. Its
// semantics (revisions, conditions, atomic batches) match the durable
// backends, which the storagetest suite checks.
package inmem

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cofferkms/coffer/internal/storage"
)

// errClosed is returned by every method after Close.
var errClosed = errors.New("inmem: backend is closed")

type entry struct {
	value    []byte
	revision int64
}

// Backend is an in-memory storage.Backend. The zero value is not usable; call
// New.
type Backend struct {
	mu       sync.RWMutex
	data     map[string]entry
	revision int64 // revision of the last write; 0 before the first
	closed   bool
}

var _ storage.Backend = (*Backend)(nil)

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{data: make(map[string]entry)}
}

// Get returns the entry at key, or storage.ErrNotFound.
func (b *Backend) Get(ctx context.Context, key string) (storage.Entry, error) {
	if err := ctx.Err(); err != nil {
		return storage.Entry{}, err
	}
	if key == "" {
		return storage.Entry{}, errors.New("inmem: empty key")
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return storage.Entry{}, errClosed
	}
	e, ok := b.data[key]
	if !ok {
		return storage.Entry{}, storage.ErrNotFound
	}
	return storage.Entry{Key: key, Value: slices.Clone(e.value), Revision: e.revision}, nil
}

// List returns the keys that start with prefix, in lexical order.
func (b *Backend) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, errClosed
	}
	var keys []string
	for k := range b.data {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// Apply writes ops atomically. Every condition is checked against the state
// before the batch; if one fails, nothing is written and the error wraps
// storage.ErrConflict. All writes of a batch share one new revision.
func (b *Backend) Apply(ctx context.Context, ops ...storage.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, op := range ops {
		if err := op.Validate(); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	changed := false
	for _, op := range ops {
		cur, exists := b.data[op.Key]
		if op.IfRevision != storage.AnyRevision && cur.revision != op.IfRevision {
			return fmt.Errorf("%w: key %q is at revision %d, batch requires %d",
				storage.ErrConflict, op.Key, cur.revision, op.IfRevision)
		}
		changed = changed || op.Kind == storage.OpPut || (op.Kind == storage.OpDelete && exists)
	}
	if !changed {
		return nil
	}
	b.revision++
	for _, op := range ops {
		switch op.Kind {
		case storage.OpPut:
			b.data[op.Key] = entry{value: slices.Clone(op.Value), revision: b.revision}
		case storage.OpDelete:
			delete(b.data, op.Key)
		}
	}
	return nil
}

// Close discards the data. Every later call fails; closing again is a no-op.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.data = nil
	return nil
}
