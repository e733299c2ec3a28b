package keys

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// TestPinsDecideTheKey: once alias/app is pinned to x in a request's
// context, every operation of that request through alias/app acts on x
// after the alias was moved to y; a context without the pin gets y. Each
// check fails if resolve stops consulting the pins.
func TestPinsDecideTheKey(t *testing.T) {
	bg := context.Background()
	a, _, _ := twoServices(t)
	x, err := a.Create(bg, CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	y, err := a.Create(bg, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := WithPins(bg)
	if got, ok := Pin(ctx, "alias/app", x.ID); !ok || got != x.ID {
		t.Fatalf("Pin = %q, %v", got, ok)
	}
	if _, err := a.UpdateAlias(bg, "alias/app", y.ID, x.ID); err != nil {
		t.Fatal(err)
	}

	if s, err := a.Encrypt(bg, "alias/app", []byte("p"), nil); err != nil || s.KeyID != y.ID {
		t.Fatalf("unpinned Encrypt used %s (%v), want the moved alias's %s", s.KeyID, err, y.ID)
	}
	s, err := a.Encrypt(ctx, "alias/app", []byte("p"), nil)
	if err != nil || s.KeyID != x.ID {
		t.Fatalf("pinned Encrypt used %s (%v), want the pinned %s", s.KeyID, err, x.ID)
	}
	if dk, s, err := a.GenerateDataKey(ctx, "alias/app", 0, nil); err != nil || s.KeyID != x.ID {
		t.Fatalf("GenerateDataKey used %s (%v)", s.KeyID, err)
	} else {
		clear(dk)
	}
	if p, err := a.GenerateDataKeyPair(ctx, "alias/app", "ECC_NIST_P256", nil); err != nil || p.Sealed.KeyID != x.ID {
		t.Fatalf("GenerateDataKeyPair used %s (%v)", p.Sealed.KeyID, err)
	}
	if _, out, err := a.ReEncrypt(ctx, s.Ciphertext, nil, "alias/app", nil); err != nil || out.KeyID != x.ID {
		t.Fatalf("ReEncrypt to the alias used %s (%v)", out.KeyID, err)
	}
	if _, err := a.Decrypt(ctx, s.Ciphertext, nil, "alias/app"); err != nil {
		t.Fatalf("Decrypt expecting the pinned alias: %v", err)
	}
	if k, err := a.Describe(ctx, "alias/app"); err != nil || k.ID != x.ID {
		t.Fatalf("Describe = %s (%v)", k.ID, err)
	}
	if as, err := a.ListAliases(ctx, "alias/app"); err != nil || len(as) != 0 {
		t.Fatalf("ListAliases of the pinned key (which lost the alias) = %v (%v)", as, err)
	}
	if k, err := a.ChangeTags(ctx, "alias/app", map[string]string{"t": "v"}, nil); err != nil || k.ID != x.ID {
		t.Fatalf("ChangeTags = %s (%v)", k.ID, err)
	}
	if k, err := a.Disable(ctx, "alias/app"); err != nil || k.ID != x.ID {
		t.Fatalf("Disable = %s (%v)", k.ID, err)
	}
	if k, _ := a.Describe(bg, y.ID); k.State != StateEnabled || len(k.Tags) != 0 {
		t.Fatalf("the key the alias names now was changed: %+v", k)
	}
	if k, _ := a.Describe(bg, x.ID); k.State != StateDisabled || k.Tags["t"] != "v" {
		t.Fatalf("the pinned key was not changed: %+v", k)
	}
}

// TestPinTable: the table's rules. Without a table nothing is pinned; only
// alias names are; the first pin wins, also among concurrent ones; an
// alias pinned to no key stays missing for the request even once created;
// a pinned key that no longer exists is not found (the alias is not
// consulted instead).
func TestPinTable(t *testing.T) {
	bg := context.Background()
	a, _, _ := twoServices(t)
	x, err := a.Create(bg, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := Pin(bg, "alias/app", x.ID); ok {
		t.Fatal("Pin without a table reported a pin")
	}
	if _, ok := Pinned(bg, "alias/app"); ok {
		t.Fatal("Pinned without a table found one")
	}
	ctx := WithPins(bg)
	if _, ok := Pin(ctx, x.ID, x.ID); ok {
		t.Fatal("a key id was pinned")
	}
	if _, ok := Pinned(ctx, x.ID); ok {
		t.Fatal("a key id is pinned")
	}
	if got, _ := Pin(ctx, "alias/app", x.ID); got != x.ID {
		t.Fatalf("first Pin = %q", got)
	}
	if got, ok := Pin(ctx, "alias/app", "other"); !ok || got != x.ID {
		t.Fatalf("second Pin = %q, %v; the first must win", got, ok)
	}
	if id, ok := Pinned(ctx, "alias/app"); !ok || id != x.ID {
		t.Fatalf("Pinned = %q, %v", id, ok)
	}
	// A table made afresh knows nothing of another request's pins.
	if _, ok := Pinned(WithPins(bg), "alias/app"); ok {
		t.Fatal("a new table holds another's pin")
	}

	// Concurrent first pins: all see one winner.
	cctx := WithPins(bg)
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = Pin(cctx, "alias/race", uuid.NewString())
		}()
	}
	wg.Wait()
	for _, g := range got {
		if g != got[0] {
			t.Fatalf("concurrent pins disagree: %v", got)
		}
	}

	// Pinned to no key, then created: still missing for this request.
	if _, ok := Pin(ctx, "alias/later", ""); !ok {
		t.Fatal("negative pin not recorded")
	}
	if _, err := a.CreateAlias(bg, "alias/later", x.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Encrypt(ctx, "alias/later", []byte("p"), nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an alias that named no key at authorization resolved: %v", err)
	}
	if _, err := a.Encrypt(bg, "alias/later", []byte("p"), nil); err != nil {
		t.Fatalf("unpinned: %v", err)
	}

	// Pinned to a key that is gone: not found, not the alias's key.
	if _, err := a.CreateAlias(bg, "alias/gone", x.ID); err != nil {
		t.Fatal(err)
	}
	Pin(ctx, "alias/gone", uuid.NewString())
	if _, err := a.Encrypt(ctx, "alias/gone", []byte("p"), nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a pinned key that does not exist: %v", err)
	}
	// Names is the authorizer's resolution: it ignores pins (it has no
	// context) and says where the alias points now.
	if id, _, err := a.Names("alias/gone"); err != nil || id != x.ID {
		t.Fatalf("Names = %s (%v)", id, err)
	}
}
