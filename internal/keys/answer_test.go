package keys

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/cofferkms/coffer/client"
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
	k, err := a.Create(ctx, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, keyPrefix+k.ID); err != nil {
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
