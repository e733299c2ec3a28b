package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/cofferkms/coffer/internal/storage"
)

// Cache coherence with other replicas. A token issued, renewed or revoked
// on another replica, or a leak report made there, reaches this one as a
// watch event carrying the stored value, which internal/sys opens through
// the barrier and hands to Refresh as a storage.Change: it is applied
// without reading the store. Events arrive in revision order; a change
// applies only when it is newer than the cached record (each record keeps
// the revision it was read or written at), and a deletion drops a cached
// record only when it is older than the deletion. A token this replica
// deleted (revoked, swept, found revoked by a renewal) leaves a tombstone
// until its deletion's event arrives, so an older event of it (a renewal
// stored elsewhere just before the revocation) cannot bring it back.
//
// Revocation across replicas. A revocation deletes the tokens the
// revoking replica knows and their descendants. Two cases escape that and
// are closed here:
//   - a token made from a parent another replica is revoking at the same
//     moment, stored after the parent's deletion: when its creation
//     arrives and its parent is already gone, it is revoked here;
//   - a descendant the revoking replica had not seen yet: when the
//     parent's deletion arrives, the cached descendants are revoked here
//     (unless the parent had expired: expiry is not revocation).
// Every replica that sees such a case deletes the same records, which is
// idempotent.

// Refresh applies one change of the token store (auth/tokens/ACC or
// auth/leaked/FINGERPRINT) to the cache. Other paths are ignored.
func (t *Tokens) Refresh(ctx context.Context, c storage.Change) error {
	switch {
	case strings.HasPrefix(c.Path, tokenPath):
		return t.refreshToken(ctx, strings.TrimPrefix(c.Path, tokenPath), c)
	case strings.HasPrefix(c.Path, leakedPath):
		return t.refreshLeaked(c)
	}
	return nil
}

// Reread brings the cache in line with what is stored at path now, read
// again: after a change could not be applied from its event (a retry in
// internal/sys). A token that is not stored is forgotten, whatever its
// cached revision.
func (t *Tokens) Reread(ctx context.Context, path string) error {
	e, err := t.store.Get(ctx, path)
	c := storage.Change{Path: path, Revision: e.Revision, Value: e.Value}
	if errors.Is(err, storage.ErrNotFound) {
		c = storage.Change{Path: path, Revision: math.MaxInt64, Deleted: true}
	} else if err != nil {
		return fmt.Errorf("refreshing %s: %w", path, err)
	}
	return t.Refresh(ctx, c)
}

// Resync reloads every token and leak mark, with issuing, renewing and
// revoking held off meanwhile so no local change is lost: after a watch
// lost history (storage.EventReset).
func (t *Tokens) Resync(ctx context.Context) error {
	t.gate.Lock()
	defer t.gate.Unlock()
	return t.Load(ctx)
}

func (t *Tokens) refreshToken(ctx context.Context, accessor string, c storage.Change) error {
	if !c.Deleted && t.takeOwn(accessor) {
		// This replica's own new token: the first event of a fresh,
		// random accessor is its creation, and the cache holds what was
		// written (or, if the write failed, nobody holds the token).
		return nil
	}
	var r *tokenRecord
	if !c.Deleted {
		var err error
		if r, err = decodeToken(accessor, c); err != nil {
			return err
		}
		// A token stored or renewed elsewhere is taken in beside
		// issuing, which adds other tokens, but not beside a renewal or
		// a revocation. An orphan is handled exclusively, like a
		// revocation.
		t.gate.RLock()
		t.renewMu.Lock()
		done := t.putLocked(r)
		t.renewMu.Unlock()
		t.gate.RUnlock()
		if done {
			return nil
		}
	}
	t.gate.Lock()
	defer t.gate.Unlock()
	if r != nil {
		if t.putLocked(r) {
			return nil
		}
		// Made from a token that was revoked before this one was
		// stored: it must not outlive its parent's revocation.
		return t.deleteLocked(ctx, []*tokenRecord{r})
	}
	t.mu.Lock()
	if _, ok := t.deleted[accessor]; ok {
		// This replica's own deletion (or a later one): nothing cached.
		delete(t.deleted, accessor)
	}
	cached := t.byAccessor[accessor]
	_, unrevoked := t.unrevoked[accessor]
	t.mu.Unlock()
	if cached == nil && unrevoked {
		// Dropped earlier, but revoking its descendants failed: again.
		return t.revokeChildrenLocked(ctx, accessor)
	}
	if cached == nil || cached.rev >= c.Revision {
		return nil // not known here, or stored again since
	}
	return t.dropLocked(ctx, cached)
}

// putLocked takes in r, stored at r.rev, unless the cache holds the token
// at that revision or a later one or this replica deleted it. It reports
// false, leaving it out, for an orphan: a new token whose parent is not
// cached. The caller holds gate (for reading, and renewMu, or
// exclusively).
func (t *Tokens) putLocked(r *tokenRecord) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, gone := t.deleted[r.Accessor]; gone {
		return true // an older write of a token deleted here
	}
	cached := t.byAccessor[r.Accessor]
	if cached != nil && cached.rev >= r.rev {
		return true // this replica's own write, or older than what it holds
	}
	if cached == nil && r.rev <= t.loadRev {
		// Stored before the last load listed the tokens, yet not loaded:
		// it was deleted (revoked) before that. A watch replaying from a
		// revision read before the load must not bring it back.
		return true
	}
	if cached == nil && r.Parent != "" && t.byAccessor[r.Parent] == nil {
		return false
	}
	if cached != nil && [32]byte(cached.Hash) != [32]byte(r.Hash) {
		delete(t.byHash, [32]byte(cached.Hash))
	}
	t.byHash[[32]byte(r.Hash)] = r
	t.byAccessor[r.Accessor] = r
	return true
}

// decodeToken compiles a token record from a change's value; c.Value is
// wiped.
func decodeToken(accessor string, c storage.Change) (*tokenRecord, error) {
	defer clear(c.Value)
	r := &tokenRecord{}
	if err := json.Unmarshal(c.Value, r); err != nil || len(r.Hash) != 32 || r.Accessor != accessor {
		return nil, fmt.Errorf("refreshing token %s: malformed token record", accessor)
	}
	if err := r.compile(); err != nil {
		return nil, fmt.Errorf("refreshing token %s: %w", accessor, err)
	}
	r.rev = c.Revision
	return r, nil
}

// forgetLocked drops r from the cache after this replica deleted it from
// the store, leaving a tombstone when a watch will deliver the deletion:
// until then an older event of the token (a renewal stored elsewhere
// before the deletion) must not bring it back. The caller holds mu.
func (t *Tokens) forgetLocked(r *tokenRecord) {
	delete(t.byHash, [32]byte(r.Hash))
	delete(t.byAccessor, r.Accessor)
	if t.sync.Load() == nil {
		return
	}
	if t.deleted == nil {
		t.deleted = map[string]struct{}{}
	}
	t.deleted[r.Accessor] = struct{}{}
}

// dropLocked forgets a token deleted elsewhere. A revoked (not expired)
// token's descendants cached here are revoked too. The caller holds gate.
func (t *Tokens) dropLocked(ctx context.Context, r *tokenRecord) error {
	t.mu.Lock()
	delete(t.byHash, [32]byte(r.Hash))
	delete(t.byAccessor, r.Accessor)
	var children []*tokenRecord
	for _, c := range t.byAccessor {
		if c.Parent == r.Accessor {
			children = append(children, c)
		}
	}
	t.mu.Unlock()
	if expired := !r.ExpiresAt.IsZero() && !t.now().Before(r.ExpiresAt); expired || len(children) == 0 {
		return nil
	}
	if _, err := t.revokeLocked(ctx, children); err != nil {
		// The token is no longer cached, so a retry of this deletion
		// would find nothing to do: remember that its descendants are
		// still owed a revocation. The failure blocks this replica's
		// freshness proof until the retry succeeds.
		t.mu.Lock()
		if t.unrevoked == nil {
			t.unrevoked = map[string]struct{}{}
		}
		t.unrevoked[r.Accessor] = struct{}{}
		t.mu.Unlock()
		return err
	}
	return nil
}

// revokeChildrenLocked revokes the cached tokens made from accessor (and
// theirs), for a deletion whose first attempt at it failed. The caller
// holds gate exclusively.
func (t *Tokens) revokeChildrenLocked(ctx context.Context, accessor string) error {
	t.mu.RLock()
	var children []*tokenRecord
	for _, c := range t.byAccessor {
		if c.Parent == accessor {
			children = append(children, c)
		}
	}
	t.mu.RUnlock()
	if _, err := t.revokeLocked(ctx, children); err != nil {
		return err
	}
	t.mu.Lock()
	delete(t.unrevoked, accessor)
	t.mu.Unlock()
	return nil
}

// refreshLeaked applies a leak report made or withdrawn elsewhere. A mark
// only ever restricts, so an older event replayed over a newer local one
// costs nothing but the time to its own event.
func (t *Tokens) refreshLeaked(c storage.Change) error {
	fp := strings.TrimPrefix(c.Path, leakedPath)
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.Deleted {
		delete(t.leaked, fp)
		return nil
	}
	t.leaked[fp] = string(c.Value)
	return nil
}

// SetSync gives the token store a function that waits until every token
// other replicas stored so far is in this cache (sys.Sys.Sync). Revocations
// call it before they look for the tokens to revoke, so a token another
// replica stored before the revocation started cannot escape it for not
// having reached this replica yet. nil removes it.
func (t *Tokens) SetSync(sync func(context.Context) error) {
	if sync == nil {
		t.sync.Store(nil)
		return
	}
	t.sync.Store(&sync)
}

// SetRevision gives the token store the shared store's revision (a
// storage.Watcher's Revision). Load then reads it before listing, and a
// replayed watch event of a token stored at or before that revision but
// absent from the load is ignored: the token was deleted before the load.
// Without it (a store no other replica writes), nothing is replayed.
func (t *Tokens) SetRevision(revision func(context.Context) (int64, error)) {
	if revision == nil {
		t.revision.Store(nil)
		return
	}
	t.revision.Store(&revision)
}

// syncOthers runs the sync function, if any.
func (t *Tokens) syncOthers(ctx context.Context) error {
	if f := t.sync.Load(); f != nil {
		return (*f)(ctx)
	}
	return nil
}

// markOwn records that this replica is about to store a new token. Only a
// followed store (SetSync) sends the events that consume marks.
func (t *Tokens) markOwn(accessor string) {
	if t.sync.Load() == nil {
		return
	}
	t.mu.Lock()
	if t.own == nil {
		t.own = map[string]bool{}
	}
	t.own[accessor] = true
	t.mu.Unlock()
}

// unmarkOwn forgets a mark whose write failed.
func (t *Tokens) unmarkOwn(accessor string) {
	t.mu.Lock()
	delete(t.own, accessor)
	t.mu.Unlock()
}

// takeOwn consumes the mark of accessor, reporting whether there was one.
// The cached token keeps revision 0: no event of it is older than its
// creation, and every later one is newer.
func (t *Tokens) takeOwn(accessor string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.own[accessor] {
		return false
	}
	delete(t.own, accessor)
	return true
}
