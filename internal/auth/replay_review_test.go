package auth

import (
	"net/netip"
	"testing"
	"time"
)

// TestReplayAfterLoadDoesNotResurrect: a replica that loads after a token
// was created and revoked, and then replays the watch from a revision read
// before the load (sys: revision, load, watch from revision), must not
// serve the revoked token while it replays the creation event and has not
// yet reached the deletion event.
func TestReplayAfterLoadDoesNotResurrect(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b, store := twoReplicas(t, &now)
	b.SetRevision(store.Revision)
	tok, p, err := a.Create(ctx, "x", false, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	created := changeAt(t, a, tokenPath+p.Accessor)
	if err := a.Revoke(ctx, "", p.Accessor); err != nil {
		t.Fatal(err)
	}
	// B unseals now: its load does not find the revoked token.
	if err := b.Load(ctx); err != nil {
		t.Fatal(err)
	}
	// Its watch, from a revision read before the load, replays the
	// creation first.
	if err := b.Refresh(ctx, created); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(tok, netip.Addr{}); err == nil {
		t.Fatal("B serves a token revoked before its load while it replays the token's creation event")
	}
}
