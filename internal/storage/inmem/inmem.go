// Package inmem is an in-memory storage.Backend for unit tests only.
//
// It keeps everything in a map guarded by a mutex and is lost when the process
// exits: nothing is durable, so it must never back a real Coffer server. Its
// semantics (revisions, conditions, atomic batches) match the durable
// backends, which the storagetest suite checks.
//
// It also implements storage.Watcher from an in-process log of every change
// (kept for the backend's lifetime: tests only), so code that follows a
// shared store can be unit-tested without etcd. Its history is never
// compacted, so it never sends storage.EventReset. SetWatchPaused stops
// every watch's delivery (changes and progress) to simulate a lost watch.
package inmem

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

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

	log      []storage.Event // every change, in revision order
	notify   chan struct{}   // closed and replaced on every change to watchers' view
	progress time.Duration   // progress interval of new watches
	paused   bool
}

var (
	_ storage.Backend = (*Backend)(nil)
	_ storage.Watcher = (*Backend)(nil)
)

// DefaultProgressInterval is the progress interval of a new backend's
// watches.
const DefaultProgressInterval = 50 * time.Millisecond

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{data: make(map[string]entry), notify: make(chan struct{}), progress: DefaultProgressInterval}
}

// SetProgressInterval sets how often watches started afterwards send
// storage.EventProgress.
func (b *Backend) SetProgressInterval(d time.Duration) {
	if d <= 0 {
		panic("inmem: progress interval must be positive")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.progress = d
}

// SetWatchPaused pauses (true) or resumes (false) every watch: while paused,
// watches deliver neither changes nor progress, as if their connection were
// lost; on resume they deliver what they missed, in order.
func (b *Backend) SetWatchPaused(paused bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.paused = paused
	b.wake()
}

// wake tells watchers to look again; b.mu is held for writing.
func (b *Backend) wake() {
	close(b.notify)
	b.notify = make(chan struct{})
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
			b.log = append(b.log, storage.Event{Kind: storage.EventPut, Key: op.Key, Revision: b.revision, Value: slices.Clone(op.Value)})
		case storage.OpDelete:
			if _, ok := b.data[op.Key]; ok {
				delete(b.data, op.Key)
				b.log = append(b.log, storage.Event{Kind: storage.EventDelete, Key: op.Key, Revision: b.revision})
			}
		}
	}
	b.wake()
	return nil
}

// Close discards the data. Every later call fails; closing again is a no-op.
// Open watches end.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.data = nil
	b.log = nil
	b.wake()
	return nil
}

// Revision returns the revision of the last write.
func (b *Backend) Revision(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return 0, errClosed
	}
	return b.revision, nil
}

// Watch implements storage.Watcher from the backend's change log. Progress
// events come every progress interval (see SetProgressInterval); the
// channel is closed when ctx is done or the backend is closed.
func (b *Backend) Watch(ctx context.Context, prefix string, fromRevision int64) <-chan storage.Event {
	out := make(chan storage.Event, 64)
	b.mu.RLock()
	interval := b.progress
	b.mu.RUnlock()
	go func() {
		defer close(out)
		send := func(e storage.Event) bool {
			select {
			case out <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		last := fromRevision
		for {
			b.mu.RLock()
			closed, paused, notify := b.closed, b.paused, b.notify
			var batch []storage.Event
			if !closed && !paused {
				i := sort.Search(len(b.log), func(i int) bool { return b.log[i].Revision > last })
				for _, e := range b.log[i:] {
					if strings.HasPrefix(e.Key, prefix) {
						batch = append(batch, e)
					}
				}
				last = max(last, b.revision)
			}
			b.mu.RUnlock()
			if closed {
				return
			}
			for _, e := range batch {
				e.Value = slices.Clone(e.Value) // the log keeps its own
				if !send(e) {
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-notify:
			case <-tick.C:
				if !paused && !send(storage.Event{Kind: storage.EventProgress, Revision: last}) {
					return
				}
			}
		}
	}()
	return out
}
