package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cofferkms/coffer/internal/storage"
)

// Cache coherence with other replicas. When several replicas share one
// store, a write made elsewhere reaches this one as a watch event naming
// the stored path (internal/sys). Refresh reads that path again and
// replaces, adds or drops the cached entry. It reads the current stored
// value, not the event's, so it is idempotent and the order of events of
// different keys does not matter. This replica's own writes update the
// cache directly, as before; their events are refreshes that find nothing
// new.

// Refresh re-reads one stored path of the key service (keys/ID or
// aliases/NAME) and brings the cache in line with it. Paths of other
// services are ignored. It does nothing while the service is unloaded.
func (s *Service) Refresh(ctx context.Context, path string) error {
	switch {
	case strings.HasPrefix(path, keyPrefix):
		return s.refreshKey(ctx, strings.TrimPrefix(path, keyPrefix))
	case strings.HasPrefix(path, aliasPrefix):
		return s.refreshAlias(ctx, path)
	}
	return nil
}

// Resync refreshes every key and alias, stored or cached: after a watch
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
		if err := s.Refresh(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// refreshKey brings the cached snapshot of key id in line with the store.
// It follows the writers' rules (architecture.md, "Concurrency of the key
// service"): it holds the life lock for reading and the key's mutex, it
// publishes a new immutable snapshot with one atomic store and wipes the
// material of the one it replaces. A version stored without usable
// material gets no cipher (newKey), so it can never encrypt under a zero
// key; refusing such a record is the writer's check (checkMaterial).
func (s *Service) refreshKey(ctx context.Context, id string) error {
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
		e, err := s.store.Get(ctx, keyPrefix+id)
		if errors.Is(err, storage.ErrNotFound) {
			// Keys leave tombstones, so only a restore or a repair
			// removes a record: forget the key here too.
			h.gone = true
			s.keys.Delete(id)
			h.cur.Load().wipe()
			return nil
		}
		if err != nil {
			return fmt.Errorf("refreshing key %s: %w", id, err)
		}
		old := h.cur.Load()
		if e.Revision <= old.rev {
			clear(e.Value)
			return nil // this replica's own write, or nothing new
		}
		k, err := decodeKey(e)
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
	e, err := s.store.Get(ctx, keyPrefix+id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("refreshing key %s: %w", id, err)
	}
	k, err := decodeKey(e)
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
	s.dropAlias(name)
	s.setAlias(name, a.KeyID)
	return nil
}
