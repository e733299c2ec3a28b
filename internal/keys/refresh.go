package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/cofferkms/coffer/internal/storage"
)

// Cache coherence with other replicas. When several replicas share one
// store, a write made elsewhere reaches this one as a watch event carrying
// the stored value, which internal/sys opens through the barrier and hands
// to Refresh as a storage.Change. A key's change applies only when it is
// newer than the cached snapshot (its revision greater), and a deletion
// drops a cached key only when the cached snapshot is older than it: this
// replica's own writes, which update the cache directly with the revision
// they stored, come back as events that find nothing new, and cost no
// store read. Aliases are rare writes whose local revision the writers do
// not learn, so an alias change is still decided on the stored alias,
// read again.

// Refresh brings the cache in line with one change of the key service
// (keys/ID or aliases/NAME). Changes of other services are ignored. It
// does nothing while the service is unloaded.
func (s *Service) Refresh(ctx context.Context, c storage.Change) error {
	switch {
	case strings.HasPrefix(c.Path, keyPrefix):
		return s.refreshKey(strings.TrimPrefix(c.Path, keyPrefix), c)
	case strings.HasPrefix(c.Path, aliasPrefix):
		return s.refreshAlias(ctx, c.Path)
	}
	return nil
}

// Reread brings the cache in line with what is stored at path now, read
// again: after a change could not be applied from its event (a retry) or
// history was lost (Resync). A key that is not stored is forgotten,
// whatever its cached revision.
func (s *Service) Reread(ctx context.Context, path string) error {
	switch {
	case strings.HasPrefix(path, keyPrefix):
		c, err := readChange(ctx, s.store, path)
		if err != nil {
			return fmt.Errorf("refreshing key %s: %w", strings.TrimPrefix(path, keyPrefix), err)
		}
		return s.refreshKey(strings.TrimPrefix(path, keyPrefix), c)
	case strings.HasPrefix(path, aliasPrefix):
		return s.refreshAlias(ctx, path)
	}
	return nil
}

// readChange reads path as a change: its stored value and revision, or a
// deletion newer than any cached revision when it is not stored.
func readChange(ctx context.Context, store interface {
	Get(context.Context, string) (storage.Entry, error)
}, path string) (storage.Change, error) {
	e, err := store.Get(ctx, path)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Change{Path: path, Revision: math.MaxInt64, Deleted: true}, nil
	}
	if err != nil {
		return storage.Change{}, err
	}
	return storage.Change{Path: path, Revision: e.Revision, Value: e.Value}, nil
}

// Resync reads every key and alias again, stored or cached: after a watch
// lost history (storage.EventReset), when any change may have been missed.
// Unlike Load it never empties the cache, so the crypto path keeps
// working while it runs.
func (s *Service) Resync(ctx context.Context) error {
	paths := map[string]bool{}
	for _, prefix := range []string{keyPrefix, aliasPrefix} {
		stored, err := s.store.List(ctx, prefix)
		if err != nil {
			return err
		}
		for _, p := range stored {
			paths[p] = true
		}
	}
	s.keys.Range(func(id, _ any) bool {
		paths[keyPrefix+id.(string)] = true
		return true
	})
	s.aliases.Range(func(name, _ any) bool {
		paths[aliasPath(name.(string))] = true
		return true
	})
	var errs []error
	for p := range paths {
		if err := s.Reread(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// refreshKey applies one change of key id to the cache. It follows the
// writers' rules (architecture.md, "Concurrency of the key service"): it
// holds the life lock for reading and the key's mutex, it publishes a new
// immutable snapshot with one atomic store and wipes the material of the
// one it replaces. A version stored without usable material gets no
// cipher (newKey), so it can never encrypt under a zero key; refusing such
// a record is the writer's check (checkMaterial). c.Value is wiped.
func (s *Service) refreshKey(id string, c storage.Change) error {
	defer clear(c.Value)
	s.life.RLock()
	defer s.life.RUnlock()
	if s.unloaded {
		return nil
	}
	if v, ok := s.keys.Load(id); ok {
		h := v.(*handle)
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.gone {
			return nil
		}
		old := h.cur.Load()
		if c.Revision <= old.rev {
			return nil // this replica's own write, or older than what it holds
		}
		if c.Deleted {
			// Keys leave tombstones, so only a restore or a repair
			// removes a record: forget the key here too.
			h.gone = true
			s.keys.Delete(id)
			old.wipe()
			return nil
		}
		k, err := decodeKey(storage.Entry{Key: c.Path, Value: c.Value, Revision: c.Revision})
		if err != nil {
			return fmt.Errorf("refreshing key %s: %w", id, err)
		}
		h.cur.Store(k)
		if k.rec.Primary != old.rec.Primary {
			h.uses.Store(k.reserved)
		} else {
			// Uses another replica reserved count as spent here: a
			// version's uses are never counted low.
			for u := h.uses.Load(); u < k.reserved && !h.uses.CompareAndSwap(u, k.reserved); u = h.uses.Load() {
			}
		}
		old.wipe()
		return nil
	}
	if c.Deleted {
		return nil
	}
	k, err := decodeKey(storage.Entry{Key: c.Path, Value: c.Value, Revision: c.Revision})
	if err != nil {
		return fmt.Errorf("refreshing key %s: %w", id, err)
	}
	h := &handle{}
	h.cur.Store(k)
	h.uses.Store(k.reserved)
	if _, loaded := s.keys.LoadOrStore(id, h); loaded {
		// Created here meanwhile (Create stores its own handle).
		k.wipe()
	}
	return nil
}

// refreshAlias brings one cached alias in line with the store, under the
// alias writers' mutex.
func (s *Service) refreshAlias(ctx context.Context, path string) error {
	s.life.RLock()
	defer s.life.RUnlock()
	if s.unloaded {
		return nil
	}
	s.aliasMu.Lock()
	defer s.aliasMu.Unlock()
	name := AliasPrefix + strings.TrimPrefix(path, aliasPrefix)
	e, err := s.store.Get(ctx, path)
	if errors.Is(err, storage.ErrNotFound) {
		s.dropAlias(name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("refreshing %s: %w", name, err)
	}
	var a aliasRecord
	if err := json.Unmarshal(e.Value, &a); err != nil {
		return fmt.Errorf("refreshing %s: %w", name, err)
	}
	if v, ok := s.aliases.Load(name); ok && v.(string) == a.KeyID {
		return nil
	}
	// Moved (UpdateAlias elsewhere) or new: replaced in place, so this
	// replica never finds the alias missing in between.
	s.moveAlias(name, a.KeyID)
	return nil
}
