package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cofferkms/coffer/internal/storage"
)

// Cache coherence with other replicas. A token issued, renewed or revoked
// on another replica, or a leak report made there, reaches this one as a
// watch event naming the stored path (internal/sys). Refresh reads that
// path again and updates or drops the cached record; it reads the current
// stored value, so it is idempotent.
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

// Refresh re-reads one stored path of the token store (auth/tokens/ACC or
// auth/leaked/FINGERPRINT) and brings the cache in line with it. Other
// paths are ignored.
func (t *Tokens) Refresh(ctx context.Context, path string) error {
	switch {
	case strings.HasPrefix(path, tokenPath):
		return t.refreshToken(ctx, strings.TrimPrefix(path, tokenPath))
	case strings.HasPrefix(path, leakedPath):
		return t.refreshLeaked(ctx, path)
	}
	return nil
}

// Resync reloads every token and leak mark, with issuing, renewing and
// revoking held off meanwhile so no local change is lost: after a watch
// lost history (storage.EventReset).
func (t *Tokens) Resync(ctx context.Context) error {
	t.gate.Lock()
	defer t.gate.Unlock()
	return t.Load(ctx)
}

func (t *Tokens) refreshToken(ctx context.Context, accessor string) error {
	if t.takeOwn(accessor) {
		// This replica's own new token: the first event of a fresh,
		// random accessor is its creation, and the cache holds what was
		// written (or, if the write failed, nobody holds the token).
		// Reading it back cost one store read per token issued and let
		// a replica issuing tokens fast fall behind its watch.
		return nil
	}
	// A token stored or renewed elsewhere (or here: every write comes
	// back as an event) is taken in beside issuing, which adds other
	// tokens, but not beside a renewal or a revocation, which could
	// interleave with the read. A deletion, or a token whose parent is
	// gone, is handled exclusively, like a revocation.
	t.gate.RLock()
	t.renewMu.Lock()
	done, err := t.refreshPut(ctx, accessor)
	t.renewMu.Unlock()
	t.gate.RUnlock()
	if done || err != nil {
		return err
	}
	t.gate.Lock()
	defer t.gate.Unlock()
	t.mu.RLock()
	cached := t.byAccessor[accessor]
	t.mu.RUnlock()
	r, err := t.readToken(ctx, accessor)
	if err != nil {
		return err
	}
	if r == nil {
		if cached == nil {
			return nil
		}
		return t.dropLocked(ctx, cached)
	}
	if cached == nil && r.Parent != "" {
		t.mu.RLock()
		parent := t.byAccessor[r.Parent]
		t.mu.RUnlock()
		if parent == nil {
			// Made from a token that was revoked before this one was
			// stored: it must not outlive its parent's revocation.
			return t.deleteLocked(ctx, []*tokenRecord{r})
		}
	}
	t.mu.Lock()
	t.byHash[[32]byte(r.Hash)] = r
	t.byAccessor[accessor] = r
	t.mu.Unlock()
	return nil
}

// refreshPut takes in a stored token that is already cached or whose
// parent is live here, and reports whether it did; a deleted token or an
// orphan is left to the exclusive path. The caller holds gate for reading
// and renewMu.
func (t *Tokens) refreshPut(ctx context.Context, accessor string) (bool, error) {
	r, err := t.readToken(ctx, accessor)
	if err != nil || r == nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byAccessor[accessor] == nil && r.Parent != "" && t.byAccessor[r.Parent] == nil {
		return false, nil
	}
	t.byHash[[32]byte(r.Hash)] = r
	t.byAccessor[accessor] = r
	return true, nil
}

// readToken reads and compiles a stored token; nil when it is not stored.
func (t *Tokens) readToken(ctx context.Context, accessor string) (*tokenRecord, error) {
	e, err := t.store.Get(ctx, tokenPath+accessor)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("refreshing token %s: %w", accessor, err)
	}
	r := &tokenRecord{}
	if err := json.Unmarshal(e.Value, r); err != nil || len(r.Hash) != 32 || r.Accessor != accessor {
		return nil, fmt.Errorf("refreshing token %s: malformed token record", accessor)
	}
	if err := r.compile(); err != nil {
		return nil, fmt.Errorf("refreshing token %s: %w", accessor, err)
	}
	return r, nil
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
	_, err := t.revokeLocked(ctx, children)
	return err
}

func (t *Tokens) refreshLeaked(ctx context.Context, path string) error {
	fp := strings.TrimPrefix(path, leakedPath)
	e, err := t.store.Get(ctx, path)
	if errors.Is(err, storage.ErrNotFound) {
		t.mu.Lock()
		delete(t.leaked, fp)
		t.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("refreshing leak report %s: %w", truncate(fp), err)
	}
	t.mu.Lock()
	t.leaked[fp] = string(e.Value)
	t.mu.Unlock()
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
func (t *Tokens) takeOwn(accessor string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.own[accessor] {
		return false
	}
	delete(t.own, accessor)
	return true
}
