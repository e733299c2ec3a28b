package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cofferkms/coffer/internal/storage"
)

// UpdateAlias points the existing alias name at the key ref names, in one
// compare-and-swap write of the alias record: no reader, on this replica
// or another, ever finds the alias missing or pointing at both keys. When
// from is not empty the alias must still point at the key with that id
// (the key the caller was authorized on), decided on the stored alias; a
// concurrent move since is storage.ErrConflict, never a silent overwrite.
// Of two concurrent moves of one alias one is stored and the other fails
// that way. The new key may be disabled, not pending deletion
// (ErrPendingDeletion) or deleted.
func (s *Service) UpdateAlias(ctx context.Context, name, ref, from string) (Alias, error) {
	if err := checkAlias(name); err != nil {
		return Alias{}, err
	}
	h, err := s.resolve(ctx, ref)
	if err != nil {
		return Alias{}, err
	}
	if err := s.beginWrite(); err != nil {
		return Alias{}, err
	}
	defer s.life.RUnlock()
	s.aliasMu.Lock()
	defer s.aliasMu.Unlock()
	// The target's state is read under the alias lock, which destroy
	// holds: a key destroyed meanwhile cannot be given the alias. A key
	// pending deletion is refused as AWS does: the alias would stop
	// working, and name nothing once the key is destroyed.
	k := h.cur.Load()
	if err := notDeleted(&k.rec); err != nil {
		return Alias{}, err
	}
	if k.rec.State == StatePendingDeletion {
		return Alias{}, fmt.Errorf("%w: key %s is pending deletion; cancel the deletion before moving an alias to it", ErrPendingDeletion, k.rec.ID)
	}
	to := k.rec.ID
	e, err := s.store.Get(ctx, aliasPath(name))
	if errors.Is(err, storage.ErrNotFound) {
		s.dropAlias(name)
		return Alias{}, fmt.Errorf("%w: %q does not exist; create it first", ErrAliasNotFound, name)
	}
	if err != nil {
		return Alias{}, err
	}
	var stored aliasRecord
	uerr := json.Unmarshal(e.Value, &stored)
	clear(e.Value)
	if uerr != nil {
		return Alias{}, fmt.Errorf("alias %s: %w", name, uerr)
	}
	if from != "" && stored.KeyID != from {
		// The cache is brought in line with the store (as refreshAlias
		// would, under the same lock), so that the caller's retry is
		// authorized on the key the alias names now, even on a replica
		// whose watch has not delivered the move yet.
		if v, ok := s.aliases.Load(name); !ok || v.(string) != stored.KeyID {
			s.moveAlias(name, stored.KeyID)
		}
		return Alias{}, fmt.Errorf("alias %s was moved to another key concurrently; retry: %w", name, storage.ErrConflict)
	}
	val, _ := json.Marshal(aliasRecord{KeyID: to})
	if err := s.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: aliasPath(name), Value: val, IfRevision: e.Revision}); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return Alias{}, fmt.Errorf("alias %s was changed concurrently; retry: %w", name, err)
		}
		return Alias{}, err
	}
	s.moveAlias(name, to)
	return Alias{Name: name, KeyID: to}, nil
}

// moveAlias points name at id in both indexes. The name is replaced in
// place (one atomic store), never dropped and added again: a lock-free
// resolve finds the old key or the new one, nothing in between. The
// caller holds the alias lock.
func (s *Service) moveAlias(name, id string) {
	s.byKeyMu.Lock()
	defer s.byKeyMu.Unlock()
	if s.byKey == nil {
		s.byKey = map[string][]string{}
	}
	if v, ok := s.aliases.Load(name); ok {
		old := v.(string)
		n := slices.DeleteFunc(slices.Clone(s.byKey[old]), func(a string) bool { return a == name })
		if len(n) == 0 {
			delete(s.byKey, old)
		} else {
			s.byKey[old] = n
		}
	}
	cur := s.byKey[id]
	if !slices.Contains(cur, name) {
		n := make([]string, 0, len(cur)+1)
		n = append(append(n, cur...), name)
		slices.Sort(n)
		s.byKey[id] = n
	}
	s.aliases.Store(name, id)
}
