package keys

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// TestUpdateAliasMoves: the alias names the new key in the cache, in both
// indexes, and in the store (a replica loading afresh finds it there).
func TestUpdateAliasMoves(t *testing.T) {
	ctx := context.Background()
	a, _, store := twoServices(t)
	x, err := a.Create(ctx, CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	y, err := a.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.UpdateAlias(ctx, "alias/app", y.ID, x.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got != (Alias{Name: "alias/app", KeyID: y.ID}) {
		t.Fatalf("answer %+v", got)
	}
	if id, _, err := a.Names("alias/app"); err != nil || id != y.ID {
		t.Fatalf("alias/app resolves to %q, %v; want %s", id, err, y.ID)
	}
	if _, as, _ := a.Names(x.ID); len(as) != 0 {
		t.Fatalf("the old key still lists %v", as)
	}
	if _, as, _ := a.Names(y.ID); !slices.Equal(as, []string{"alias/app"}) {
		t.Fatalf("the new key lists %v", as)
	}
	if k, _ := a.Describe(ctx, x.ID); len(k.Aliases) != 0 {
		t.Fatalf("the old key's description lists %v", k.Aliases)
	}
	fresh := New(store)
	if err := fresh.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if id, _, err := fresh.Names("alias/app"); err != nil || id != y.ID {
		t.Fatalf("stored alias/app resolves to %q, %v; want %s", id, err, y.ID)
	}
}

// TestUpdateAliasRefusals: a missing alias, a stale expectation, a
// reserved or malformed name, a missing, pending deletion or deleted
// target.
func TestUpdateAliasRefusals(t *testing.T) {
	ctx := context.Background()
	a, _, _ := twoServices(t)
	x, err := a.Create(ctx, CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	y, err := a.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, alias, to, from string
		want                  error
	}{
		{"missing alias", "alias/none", y.ID, "", ErrAliasNotFound},
		{"stale expectation", "alias/app", y.ID, y.ID, storage.ErrConflict},
		{"reserved", "alias/coffer/x", y.ID, "", ErrInvalidArgument},
		{"not an alias", "app", y.ID, "", ErrInvalidArgument},
		{"missing target", "alias/app", "alias/none", x.ID, ErrNotFound},
		{"empty target", "alias/app", "", x.ID, ErrInvalidArgument},
	}
	for _, c := range cases {
		if _, err := a.UpdateAlias(ctx, c.alias, c.to, c.from); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if id, _, _ := a.Names("alias/app"); id != x.ID {
			t.Fatalf("%s moved alias/app to %s", c.name, id)
		}
	}
	// A key pending deletion takes no alias (as in AWS), a disabled
	// one does; a deleted key takes none.
	if _, err := a.ScheduleDeletion(ctx, y.ID, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateAlias(ctx, "alias/app", y.ID, x.ID); !errors.Is(err, ErrPendingDeletion) {
		t.Fatalf("move to a key pending deletion: %v", err)
	}
	if id, _, _ := a.Names("alias/app"); id != x.ID {
		t.Fatalf("the refused move left alias/app on %s", id)
	}
	if _, err := a.CancelDeletion(ctx, y.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateAlias(ctx, "alias/app", y.ID, x.ID); err != nil {
		t.Fatalf("move to a disabled key: %v", err)
	}
	if _, err := a.UpdateAlias(ctx, "alias/app", x.ID, y.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ScheduleDeletion(ctx, y.ID, 7); err != nil {
		t.Fatal(err)
	}
	h := handleOf(t, a, y.ID)
	k := *h.cur.Load()
	k.rec.State = StateDeleted
	h.cur.Store(&k)
	if _, err := a.UpdateAlias(ctx, "alias/app", y.ID, x.ID); !errors.Is(err, ErrDeleted) {
		t.Fatalf("move to a deleted key: %v", err)
	}
}

// TestUpdateAliasOneWins: concurrent moves of one alias, each expecting
// the key it points at now: exactly one is stored, the others conflict,
// and the alias names the winner's key.
func TestUpdateAliasOneWins(t *testing.T) {
	ctx := context.Background()
	a, _, _ := twoServices(t)
	x, err := a.Create(ctx, CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	targets := make([]string, n)
	for i := range targets {
		k, err := a.Create(ctx, CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		targets[i] = k.ID
	}
	var wg sync.WaitGroup
	var won atomic.Int32
	winner := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.UpdateAlias(ctx, "alias/app", targets[i], x.ID)
			switch {
			case err == nil:
				won.Add(1)
				winner <- targets[i]
			case !errors.Is(err, storage.ErrConflict):
				t.Errorf("move %d: %v, want success or a conflict", i, err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d moves won, want exactly 1", won.Load())
	}
	if id, _, _ := a.Names("alias/app"); id != <-winner {
		t.Fatalf("alias/app names %s, not the winner's key", id)
	}
}

// TestUpdateAliasAcrossReplicas: two replicas with the same view move the
// alias to different keys: the store takes one (compare-and-swap on the
// alias record), the other is told to retry.
func TestUpdateAliasAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	a, b, _ := twoServices(t)
	x, err := a.Create(ctx, CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	y, _ := a.Create(ctx, CreateRequest{})
	z, _ := a.Create(ctx, CreateRequest{})
	for _, p := range []string{keyPrefix + x.ID, keyPrefix + y.ID, keyPrefix + z.ID, aliasPath("alias/app")} {
		if err := b.Refresh(ctx, changeAt(t, b, p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.UpdateAlias(ctx, "alias/app", y.ID, x.ID); err != nil {
		t.Fatal(err)
	}
	// b still caches alias/app -> x.
	if _, err := b.UpdateAlias(ctx, "alias/app", z.ID, x.ID); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("stale replica's move: %v, want a conflict", err)
	}
	// The conflict brought b's cache in line: a retry is decided on y,
	// before b's watch delivers the move.
	if id, _, _ := b.Names("alias/app"); id != y.ID {
		t.Fatalf("b after the conflict: alias/app names %s, want %s", id, y.ID)
	}
	if _, err := b.UpdateAlias(ctx, "alias/app", y.ID, y.ID); err != nil {
		t.Fatalf("the retry on b: %v", err)
	}
	if err := b.Refresh(ctx, changeAt(t, b, aliasPath("alias/app"))); err != nil {
		t.Fatal(err)
	}
	if id, _, _ := b.Names("alias/app"); id != y.ID {
		t.Fatalf("b after refresh: alias/app names %s, want %s", id, y.ID)
	}
	if _, as, _ := b.Names(x.ID); len(as) != 0 {
		t.Fatalf("b still lists %v on the old key", as)
	}
}

// TestUpdateAliasNeverMissing: readers resolving the alias while it moves
// back and forth, on the replica that moves it and on one that learns of
// each move by Refresh, always find one of the two keys.
func TestUpdateAliasNeverMissing(t *testing.T) {
	ctx := context.Background()
	a, b, _ := twoServices(t)
	x, err := a.Create(ctx, CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	y, _ := a.Create(ctx, CreateRequest{})
	for _, p := range []string{keyPrefix + x.ID, keyPrefix + y.ID, aliasPath("alias/app")} {
		if err := b.Refresh(ctx, changeAt(t, b, p)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var misses, reads atomic.Int64
	var wg sync.WaitGroup
	for _, s := range []*Service{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ; ; reads.Add(1) {
				select {
				case <-stop:
					return
				default:
				}
				if id, _, err := s.Names("alias/app"); err != nil || (id != x.ID && id != y.ID) {
					misses.Add(1)
				}
			}
		}()
	}
	from, to := x.ID, y.ID
	start := time.Now()
	for i := 0; i < 300 || time.Since(start) < 200*time.Millisecond; i++ {
		if _, err := a.UpdateAlias(ctx, "alias/app", to, from); err != nil {
			t.Fatal(err)
		}
		if err := b.Refresh(ctx, changeAt(t, b, aliasPath("alias/app"))); err != nil {
			t.Fatal(err)
		}
		from, to = to, from
	}
	close(stop)
	wg.Wait()
	if m := misses.Load(); m != 0 {
		t.Fatalf("the alias was missing %d times in %d reads while it moved", m, reads.Load())
	}
}
