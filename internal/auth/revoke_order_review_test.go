package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// TestReviewRevokeWhereBatchFailureKeepsParents: RevokeWhere matches a
// role's sessions and the tokens made from them (which act in the role
// too), so both are roots, in map order. deleteLocked's promise is that a
// failure midway never leaves a token stored whose parent is gone; that
// needs every child after its parent in recs, which BFS from roots in map
// order does not give.
func TestReviewRevokeWhereBatchFailureKeepsParents(t *testing.T) {
	for attempt := range 5 {
		store := &batchStore{Backend: inmem.New()}
		ts := NewTokens(store, nil)
		var role []issued
		for range 150 {
			s := issue(t, ts, Spec{Role: "app", Subject: "access-key:x", TTL: time.Hour})
			role = append(role, s, issue(t, ts, Spec{TTL: time.Hour, Parent: &s.p}))
		}
		store.writes.Store(0)
		store.failAt = 2
		_, err := ts.RevokeWhere(ctx, func(p *Principal) bool { return p.Role == "app" })
		if !errors.Is(err, errInjected) {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		for _, f := range role {
			if f.p.Parent != "" && stored(t, store, f.p.Accessor) && !stored(t, store, f.p.Parent) {
				t.Fatalf("attempt %d: token %s is still stored and valid but its parent %s was revoked (a child listed before its parent among the roots)", attempt, f.p.Accessor, f.p.Parent)
			}
		}
	}
}
