package keys

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// twoServices returns two key services over one store, as two replicas.
func twoServices(t *testing.T, opts ...Option) (*Service, *Service, *inmem.Backend) {
	t.Helper()
	store := inmem.New()
	a, b := New(store, opts...), New(store, opts...)
	for _, s := range []*Service{a, b} {
		if err := s.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return a, b, store
}

// changeAt returns the change a watch would deliver for what is stored at
// path now: its value and revision, or a deletion at the store's revision.
func changeAt(t *testing.T, s *Service, path string) storage.Change {
	t.Helper()
	e, err := s.store.Get(context.Background(), path)
	if errors.Is(err, storage.ErrNotFound) {
		rev := int64(math.MaxInt64)
		if w, ok := s.store.(storage.Watcher); ok {
			if rev, err = w.Revision(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		return storage.Change{Path: path, Revision: rev, Deleted: true}
	}
	if err != nil {
		t.Fatal(err)
	}
	return storage.Change{Path: path, Revision: e.Revision, Value: e.Value}
}

func handleOf(t *testing.T, s *Service, id string) *handle {
	t.Helper()
	v, ok := s.keys.Load(id)
	if !ok {
		t.Fatalf("key %s is not cached", id)
	}
	return v.(*handle)
}

// TestRefreshCountsOtherReplicasUses: uses of a version reserved on A
// count as spent on B once B refreshes, so B's encryptions never reuse a
// count A may have used (the nonce bound is never counted low).
func TestRefreshCountsOtherReplicasUses(t *testing.T) {
	ctx := context.Background()
	a, b, _ := twoServices(t, WithUseLimits(1000, 10))
	k, err := a.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	for range 15 {
		if _, err := a.Encrypt(ctx, k.ID, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	reserved := handleOf(t, a, k.ID).cur.Load().reserved
	if reserved < 15 {
		t.Fatalf("setup: A reserved %d uses for 15 encryptions", reserved)
	}
	if err := b.Refresh(ctx, changeAt(t, b, keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	if used := handleOf(t, b, k.ID).uses.Load(); used < reserved {
		t.Fatalf("B counts %d uses after refreshing, below the %d A reserved", used, reserved)
	}
	if _, err := b.Encrypt(ctx, k.ID, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if got := handleOf(t, b, k.ID).cur.Load().reserved; got <= reserved {
		t.Fatalf("B encrypted without reserving beyond A's reservation (%d <= %d)", got, reserved)
	}
}

// TestRefreshReplacesSnapshots: B follows A's changes of a key (state,
// rotation, a new key, an alias moved), wipes the material of the
// snapshots it replaces, and ignores a refresh that finds nothing new.
func TestRefreshReplacesSnapshots(t *testing.T) {
	ctx := context.Background()
	a, b, store := twoServices(t)
	k, err := a.Create(ctx, CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{keyPrefix + k.ID, aliasPath("alias/app")} {
		if err := b.Refresh(ctx, changeAt(t, b, p)); err != nil {
			t.Fatal(err)
		}
	}
	sealed, err := b.Encrypt(ctx, "alias/app", []byte("x"), nil)
	if err != nil {
		t.Fatalf("B encrypts with a key created on A: %v", err)
	}
	before := handleOf(t, b, k.ID).cur.Load()
	if err := b.Refresh(ctx, changeAt(t, b, keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	if handleOf(t, b, k.ID).cur.Load() != before {
		t.Fatal("a refresh that found nothing new replaced the snapshot")
	}
	if _, err := a.Rotate(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Disable(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	if goodMaterial(before.rec.Versions[0].Material) {
		t.Fatal("the replaced snapshot's material was not wiped")
	}
	if _, err := b.Encrypt(ctx, k.ID, []byte("x"), nil); !errors.Is(err, ErrDisabled) {
		t.Fatalf("B encrypts with a key disabled on A: %v", err)
	}
	if _, err := b.Decrypt(ctx, sealed.Ciphertext, nil, ""); !errors.Is(err, ErrDisabled) {
		t.Fatalf("B decrypts with a key disabled on A: %v", err)
	}
	if cur := handleOf(t, b, k.ID).cur.Load(); cur.rec.Primary != 2 || cur.aeads[1] == nil {
		t.Fatalf("B's snapshot after A's rotation: primary %d", cur.rec.Primary)
	}

	// An alias moved on A; and a record removed from the store (a
	// restore) is forgotten.
	k2, err := a.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteAlias(ctx, "alias/app"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAlias(ctx, "alias/app", k2.ID); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{keyPrefix + k2.ID, aliasPath("alias/app")} { // in the watch's order
		if err := b.Refresh(ctx, changeAt(t, b, p)); err != nil {
			t.Fatal(err)
		}
	}
	if id, aliases, err := b.Names("alias/app"); err != nil || id != k2.ID || len(aliases) != 1 {
		t.Fatalf("B resolves a moved alias to %s %v %v, want %s", id, aliases, err, k2.ID)
	}
	if _, old, _ := b.Names(k.ID); len(old) != 0 {
		t.Fatalf("the old key keeps the moved alias on B: %v", old)
	}
	if err := store.Apply(ctx, storage.Delete(keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Encrypt(ctx, k.ID, []byte("x"), nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a key removed from the store: %v", err)
	}
}

// TestRefreshIgnoresOlderChanges: a change at or below the cached
// revision (this replica's own write, or an event older than what it
// read or wrote since) neither replaces the cached snapshot nor, for a
// deletion, drops it; a newer one does.
func TestRefreshIgnoresOlderChanges(t *testing.T) {
	ctx := context.Background()
	a, b, _ := twoServices(t)
	k, err := a.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first := changeAt(t, b, keyPrefix+k.ID)
	if err := b.Refresh(ctx, first); err != nil {
		t.Fatal(err)
	}
	older := changeAt(t, b, keyPrefix+k.ID)        // the creation again, read before the rotation
	if _, err := b.Rotate(ctx, k.ID); err != nil { // b's own write: cached at its revision
		t.Fatal(err)
	}
	rotated := handleOf(t, b, k.ID).cur.Load()
	if err := b.Refresh(ctx, older); err != nil {
		t.Fatal(err)
	}
	if got := handleOf(t, b, k.ID).cur.Load(); got != rotated || got.rec.Primary != 2 {
		t.Fatalf("an older change replaced the snapshot: primary %d", got.rec.Primary)
	}
	own := changeAt(t, b, keyPrefix+k.ID) // the rotation's own event
	if err := b.Refresh(ctx, own); err != nil {
		t.Fatal(err)
	}
	if handleOf(t, b, k.ID).cur.Load() != rotated {
		t.Fatal("this replica's own write, coming back as an event, replaced the snapshot")
	}
	// A deletion older than the cached write keeps the key.
	if err := b.Refresh(ctx, storage.Change{Path: keyPrefix + k.ID, Revision: rotated.rev - 1, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.keys.Load(k.ID); !ok {
		t.Fatal("a deletion older than the cached write dropped the key")
	}
	if err := b.Refresh(ctx, storage.Change{Path: keyPrefix + k.ID, Revision: rotated.rev, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.keys.Load(k.ID); !ok {
		t.Fatal("a deletion at the cached write's revision dropped the key")
	}
	// A newer change applies: A rotates, B takes it in.
	if err := a.Refresh(ctx, changeAt(t, a, keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Rotate(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, keyPrefix+k.ID)); err != nil {
		t.Fatal(err)
	}
	if got := handleOf(t, b, k.ID).cur.Load(); got.rec.Primary != 3 {
		t.Fatalf("a newer change was not applied: primary %d, want 3", got.rec.Primary)
	}
	if rotated.rec.Versions[0].Material != nil && len(rotated.rec.Versions[0].Material) > 0 && !allZero(rotated.rec.Versions[0].Material) {
		t.Error("the replaced snapshot's material was not wiped")
	}
	// And a newer deletion drops it.
	if err := b.Refresh(ctx, storage.Change{Path: keyPrefix + k.ID, Revision: math.MaxInt64, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.keys.Load(k.ID); ok {
		t.Fatal("a newer deletion did not drop the key")
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
