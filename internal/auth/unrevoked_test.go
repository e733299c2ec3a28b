package auth

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// TestDescendantRevocationRetried: replica B holds a child of a token A
// revokes without knowing the child. When B applies the parent's deletion
// and revoking the child fails, the deletion is retried (sys reads the
// path again); the retry must revoke the child, although the parent is no
// longer cached or stored anywhere.
func TestDescendantRevocationRetried(t *testing.T) {
	store := &batchStore{Backend: inmem.New()}
	a, b := NewTokens(store, nil), NewTokens(store, nil)
	parent := issue(t, a, Spec{DisplayName: "parent", TTL: time.Hour})
	if err := b.Load(ctx); err != nil {
		t.Fatal(err)
	}
	child := issue(t, b, Spec{TTL: time.Hour, Parent: &parent.p})
	if err := a.Revoke(ctx, "", parent.p.Accessor); err != nil {
		t.Fatal(err)
	}
	deletion := changeAt(t, a, tokenPath+parent.p.Accessor)
	store.writes.Store(0)
	store.failAt = 1
	if err := b.Refresh(ctx, deletion); !errors.Is(err, errInjected) {
		t.Fatalf("applying the parent's deletion: %v, want the injected failure", err)
	}
	if !stored(t, store, child.p.Accessor) {
		t.Fatal("the child was deleted although the write failed")
	}
	if err := b.Reread(ctx, tokenPath+parent.p.Accessor); err != nil {
		t.Fatal(err)
	}
	if stored(t, store, child.p.Accessor) {
		t.Fatal("the retry of the parent's deletion left its child stored")
	}
	if _, err := b.Lookup(child.tok, netip.Addr{}); err == nil {
		t.Fatal("B still accepts the child of a revoked token")
	}
	// Nothing is owed any more: a later retry does nothing.
	if err := b.Reread(ctx, tokenPath+parent.p.Accessor); err != nil {
		t.Fatal(err)
	}
}
