package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// twoReplicas returns two token stores over one backend, as two replicas
// over one etcd, with a shared clock.
func twoReplicas(t *testing.T, now *time.Time) (*Tokens, *Tokens, *inmem.Backend) {
	t.Helper()
	store := inmem.New()
	clock := func() time.Time { return *now }
	return NewTokens(store, clock), NewTokens(store, clock), store
}

// changeAt returns the change a watch would deliver for what is stored at
// path now: its value and revision, or a deletion at the store's revision.
func changeAt(t *testing.T, x *Tokens, path string) storage.Change {
	t.Helper()
	e, err := x.store.Get(ctx, path)
	if errors.Is(err, storage.ErrNotFound) {
		rev, err := x.store.(storage.Watcher).Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return storage.Change{Path: path, Revision: rev, Deleted: true}
	}
	if err != nil {
		t.Fatal(err)
	}
	return storage.Change{Path: path, Revision: e.Revision, Value: e.Value}
}

func fingerprint(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func stored(t *testing.T, store storage.Backend, accessor string) bool {
	t.Helper()
	_, err := store.Get(ctx, tokenPath+accessor)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestRefreshFollowsIssueAndRevoke: a token issued on A becomes usable on
// B once B refreshes its path, and unusable once A revokes it; a leak
// report made on A is recognised on B.
func TestRefreshFollowsIssueAndRevoke(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b, _ := twoReplicas(t, &now)
	tok, p, err := a.Create(ctx, "x", false, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(tok, netip.Addr{}); err == nil {
		t.Fatal("B knows a token before refreshing")
	}
	if err := b.Refresh(ctx, changeAt(t, b, tokenPath+p.Accessor)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(tok, netip.Addr{}); err != nil {
		t.Fatalf("B after refreshing: %v", err)
	}
	if _, err := a.ReportLeaked(ctx, []string{fingerprint(tok)}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{tokenPath + p.Accessor, leakedPath + fingerprint(tok)} {
		if err := b.Refresh(ctx, changeAt(t, b, path)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Lookup(tok, netip.Addr{}); !errors.Is(err, ErrLeaked) {
		t.Fatalf("B after a leak report on A: %v", err)
	}
}

// TestRefreshRevokesUnseenDescendants: a token made on B from a parent
// that A revokes without knowing the child is revoked when B learns of
// the parent's deletion, and when A learns of the child after deleting
// its parent.
func TestRefreshRevokesUnseenDescendants(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, learner := range []string{"B learns the parent's deletion", "A learns the child's creation"} {
		t.Run(learner, func(t *testing.T) {
			a, b, store := twoReplicas(t, &now)
			_, parent, err := a.Create(ctx, "parent", false, time.Hour, "")
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Refresh(ctx, changeAt(t, b, tokenPath+parent.Accessor)); err != nil {
				t.Fatal(err)
			}
			_, child, err := b.Issue(ctx, Spec{DisplayName: "child", TTL: time.Hour, Parent: &parent})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Revoke(ctx, "", parent.Accessor); err != nil {
				t.Fatal(err)
			}
			if !stored(t, store, child.Accessor) {
				t.Fatal("setup: A revoked a child it did not know")
			}
			if learner == "B learns the parent's deletion" {
				err = b.Refresh(ctx, changeAt(t, b, tokenPath+parent.Accessor))
			} else {
				err = a.Refresh(ctx, changeAt(t, a, tokenPath+child.Accessor))
			}
			if err != nil {
				t.Fatal(err)
			}
			if stored(t, store, child.Accessor) {
				t.Fatal("a child of a revoked token survives its parent's revocation")
			}
		})
	}
}

// TestRefreshExpiryIsNotRevocation: a parent swept because it expired does
// not take a renewed child with it.
func TestRefreshExpiryIsNotRevocation(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b, store := twoReplicas(t, &now)
	_, parent, err := a.Issue(ctx, Spec{DisplayName: "parent", TTL: time.Hour, MaxTTL: 10 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, tokenPath+parent.Accessor)); err != nil {
		t.Fatal(err)
	}
	childTok, child, err := b.Issue(ctx, Spec{DisplayName: "child", TTL: time.Hour, MaxTTL: 10 * time.Hour, Parent: &parent})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Minute)
	if _, err := b.Renew(ctx, child.Accessor, time.Hour); err != nil {
		t.Fatal(err)
	}
	now = now.Add(40 * time.Minute) // the parent expired; the child lives on
	if err := a.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, tokenPath+parent.Accessor)); err != nil {
		t.Fatal(err)
	}
	if !stored(t, store, child.Accessor) {
		t.Fatal("an expired parent's sweep revoked its renewed child")
	}
	if _, err := b.Lookup(childTok, netip.Addr{}); err != nil {
		t.Fatalf("the child after its parent expired: %v", err)
	}
}

// TestRenewDoesNotUndoRevocation: a renewal on B of a token A revoked, made
// before B saw the revocation, fails and does not store the token again.
func TestRenewDoesNotUndoRevocation(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b, store := twoReplicas(t, &now)
	tok, p, err := a.Issue(ctx, Spec{DisplayName: "x", TTL: time.Hour, MaxTTL: 10 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, tokenPath+p.Accessor)); err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, tok, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Renew(ctx, p.Accessor, time.Hour); !errors.Is(err, ErrNotFound) {
		t.Fatalf("renewing a token revoked on another replica: %v", err)
	}
	if stored(t, store, p.Accessor) {
		t.Fatal("a renewal stored a revoked token again")
	}
	if _, err := b.Lookup(tok, netip.Addr{}); err == nil {
		t.Fatal("B still serves a token whose renewal found it revoked")
	}
}

// TestOwnTokenEventNotReadBack: on a followed store a replica does not read
// back the creation of a token it issued itself (one store read per
// token), but the next event of that token, a revocation elsewhere, is
// read; on a store nobody follows nothing is marked.
func TestOwnTokenEventNotReadBack(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b, store := twoReplicas(t, &now)
	_, p, err := a.Create(ctx, "unfollowed", false, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.own) != 0 {
		t.Fatalf("a store nobody follows keeps marks: %v", a.own)
	}
	if !stored(t, store, p.Accessor) {
		t.Fatal("setup")
	}
	a.SetSync(func(context.Context) error { return nil })
	tok, p, err := a.Create(ctx, "followed", false, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	if !a.own[p.Accessor] {
		t.Fatal("a token issued on a followed store is not marked")
	}
	if err := a.Refresh(ctx, changeAt(t, a, tokenPath+p.Accessor)); err != nil { // its own creation
		t.Fatal(err)
	}
	if a.own[p.Accessor] {
		t.Fatal("the creation event did not consume the mark")
	}
	if err := b.Refresh(ctx, changeAt(t, b, tokenPath+p.Accessor)); err != nil {
		t.Fatal(err)
	}
	if err := b.Revoke(ctx, tok, ""); err != nil {
		t.Fatal(err)
	}
	if stored(t, store, p.Accessor) {
		t.Fatal("setup: B did not revoke")
	}
	if err := a.Refresh(ctx, changeAt(t, a, tokenPath+p.Accessor)); err != nil { // the revocation
		t.Fatal(err)
	}
	if _, err := a.Lookup(tok, netip.Addr{}); err == nil {
		t.Fatal("a revocation made elsewhere, after this replica's own creation event, was not read")
	}
}

// TestRefreshOlderEventsDoNotUndo: events older than what a replica holds
// change nothing. A renewal stored on A before B revoked the token, whose
// event reaches B after the revocation, does not bring the token back on
// B (a tombstone holds until the deletion's own event); an older renewal
// does not shorten a newer one; a deletion older than the cached record
// does not drop it.
func TestRefreshOlderEventsDoNotUndo(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b, _ := twoReplicas(t, &now)
	for _, x := range []*Tokens{a, b} {
		x.SetSync(func(context.Context) error { return nil }) // followed
	}
	tok, p, err := a.Issue(ctx, Spec{DisplayName: "x", TTL: time.Hour, MaxTTL: 10 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	path := tokenPath + p.Accessor
	if err := b.Refresh(ctx, changeAt(t, b, path)); err != nil {
		t.Fatal(err)
	}
	// An older renewal does not undo a newer one.
	now = now.Add(time.Minute)
	if _, err := a.Renew(ctx, p.Accessor, time.Hour); err != nil {
		t.Fatal(err)
	}
	first := changeAt(t, b, path)
	now = now.Add(time.Minute)
	if _, err := b.Renew(ctx, p.Accessor, 5*time.Hour); err != nil {
		t.Fatal(err) // B's own renewal, over A's
	}
	if err := b.Refresh(ctx, first); err != nil {
		t.Fatal(err)
	}
	if got, ok := b.Get(p.Accessor); !ok || !got.ExpiresAt.Equal(now.Add(5*time.Hour)) {
		t.Fatalf("after an older renewal's event, B's token expires at %v, want %v (its own, newer renewal)", got.ExpiresAt, now.Add(5*time.Hour))
	}
	// A deletion older than the cached record does not drop it.
	if err := b.Refresh(ctx, storage.Change{Path: path, Revision: first.Revision, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(tok, netip.Addr{}); err != nil {
		t.Fatalf("a deletion older than B's renewal dropped the token: %v", err)
	}
	// A renews again; B revokes before that event reaches it.
	if err := a.Refresh(ctx, changeAt(t, a, path)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Renew(ctx, p.Accessor, time.Hour); err != nil {
		t.Fatal(err)
	}
	renewal := changeAt(t, b, path)
	if err := b.Revoke(ctx, "", p.Accessor); err != nil {
		t.Fatal(err)
	}
	deletion := changeAt(t, b, path)
	if !deletion.Deleted {
		t.Fatal("setup: B did not delete the token")
	}
	if err := b.Refresh(ctx, renewal); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(tok, netip.Addr{}); err == nil {
		t.Fatal("an older renewal's event brought back a token this replica revoked")
	}
	if err := b.Refresh(ctx, deletion); err != nil {
		t.Fatal(err)
	}
	if len(b.deleted) != 0 {
		t.Fatalf("the deletion's own event left tombstones: %v", b.deleted)
	}
}
