package keys

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
)

// afterApply is a store that runs hook once, right after the first
// successful write of a key record it is armed for: another replica
// writing between this write and its read-back.
type afterApply struct {
	storage.Backend
	mu   sync.Mutex
	hook func()
}

func (s *afterApply) Apply(ctx context.Context, ops ...storage.Op) error {
	if err := s.Backend.Apply(ctx, ops...); err != nil {
		return err
	}
	s.mu.Lock()
	hook := s.hook
	if len(ops) == 1 && strings.HasPrefix(ops[0].Key, keyPrefix) {
		s.hook = nil
	} else {
		hook = nil
	}
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return nil
}

// TestRotateAnswersTheVersionItMade: a rotation answers the version it
// stored, even when another replica rotates again before this one reads
// the record back (found by the linearizability check of test/ha: answers
// repeated a version and skipped one). The cache still takes the newest.
func TestRotateAnswersTheVersionItMade(t *testing.T) {
	ctx := context.Background()
	a, b, inner := twoServices(t)
	k, err := a.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	hooked := &afterApply{Backend: inner}
	a.store = hooked
	hooked.hook = func() {
		if _, err := b.Rotate(ctx, k.ID); err != nil {
			t.Errorf("rotation on the other replica: %v", err)
		}
	}
	got, err := a.Rotate(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.PrimaryVersion != 2 || len(got.Versions) != 2 {
		t.Fatalf("rotation answered primary %d with %d versions; it stored version 2", got.PrimaryVersion, len(got.Versions))
	}
	if cached := handleOf(t, a, k.ID).cur.Load().rec.Primary; cached != 3 {
		t.Fatalf("cache holds primary %d, want the newest stored (3)", cached)
	}
}

// TestDeleteAliasDecidesOnTheStoredAlias: a replica whose cache still
// maps an alias to key X must not delete the alias once another replica
// has re-created it for key Y (test/ha found it), nor answer success for
// an alias already gone.
func TestDeleteAliasDecidesOnTheStoredAlias(t *testing.T) {
	ctx := context.Background()
	a, b, _ := twoServices(t)
	x, err := a.Create(ctx, CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	y, err := a.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{keyPrefix + x.ID, keyPrefix + y.ID, aliasPath("alias/app")} {
		if err := b.Refresh(ctx, changeAt(t, b, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.DeleteAlias(ctx, "alias/app"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAlias(ctx, "alias/app", y.ID); err != nil {
		t.Fatal(err)
	}
	// b has not heard of either change.
	if err := b.DeleteAlias(ctx, "alias/app"); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("stale replica deleting a re-created alias: %v, want a conflict", err)
	}
	if err := a.Refresh(ctx, changeAt(t, a, aliasPath("alias/app"))); err != nil {
		t.Fatal(err)
	}
	if k, err := a.Describe(ctx, "alias/app"); err != nil || k.ID != y.ID {
		t.Fatalf("alias/app after the refused delete: %v, %v; want key %s", k.ID, err, y.ID)
	}
	if err := a.DeleteAlias(ctx, "alias/app"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteAlias(ctx, "alias/app"); !errors.Is(err, ErrAliasNotFound) {
		t.Fatalf("stale replica deleting an alias already gone: %v, want not found", err)
	}
}
