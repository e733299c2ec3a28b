package barrier

import (
	"errors"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
)

// twoBarriers returns two unsealed barriers over one store, as two
// replicas.
func twoBarriers(t *testing.T) (*Barrier, *Barrier, storage.Backend) {
	t.Helper()
	a, store, shares := initBarrier(t, 1, 1)
	b := New(store)
	if _, err := b.Unseal(ctx, shares[0]); err != nil {
		t.Fatal(err)
	}
	return a, b, store
}

// TestKeyringRotatedElsewhere: a keyring rotated on A is adopted by B's
// ReloadKeyring, and B's Get of an entry under the new term reloads by
// itself; what B writes then, A reads.
func TestKeyringRotatedElsewhere(t *testing.T) {
	a, b, _ := twoBarriers(t)
	if _, err := a.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, storage.Put("x", []byte("under term 2"))); err != nil {
		t.Fatal(err)
	}
	if e, err := b.Get(ctx, "x"); err != nil || string(e.Value) != "under term 2" {
		t.Fatalf("B reads an entry under a term rotated in by A: %q %v", e.Value, err)
	}
	if term, _ := b.ActiveTerm(); term != 2 {
		t.Fatalf("B's active term after adopting A's keyring: %d", term)
	}
	if _, err := b.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, storage.Put("y", []byte("under term 3"))); err != nil {
		t.Fatal(err)
	}
	if err := a.ReloadKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if e, err := a.Get(ctx, "y"); err != nil || string(e.Value) != "under term 3" {
		t.Fatalf("A reads B's entry: %q %v", e.Value, err)
	}
}

// TestConcurrentKeyringRotationsLoseNoTerm: a rotation on B made from a
// keyring older than the stored one builds on the stored one: no term A
// made is lost, so A's entries stay readable.
func TestConcurrentKeyringRotationsLoseNoTerm(t *testing.T) {
	a, b, _ := twoBarriers(t)
	if _, err := a.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, storage.Put("x", []byte("A's term 2"))); err != nil {
		t.Fatal(err)
	}
	term, err := b.RotateKeyring(ctx) // B has not reloaded: it still holds term 1 only
	if err != nil {
		t.Fatal(err)
	}
	if term != 3 {
		t.Fatalf("B's rotation made term %d, want 3 (on top of A's 2)", term)
	}
	if e, err := b.Get(ctx, "x"); err != nil || string(e.Value) != "A's term 2" {
		t.Fatalf("A's entry after B's rotation: %q %v", e.Value, err)
	}
	if err := a.ReloadKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if term, _ := a.ActiveTerm(); term != 3 {
		t.Fatalf("A's active term after reloading: %d", term)
	}
}

// TestReloadRefusesForeignKeyring: a stored keyring this root key cannot
// open, or one without a term this replica holds, is refused with
// ErrKeyringMismatch and the replica keeps its own keyring.
func TestReloadRefusesForeignKeyring(t *testing.T) {
	_, b, store := twoBarriers(t)
	_, otherStore, _ := initBarrier(t, 1, 1)
	foreign, err := otherStore.Get(ctx, pathKeyring)
	if err != nil {
		t.Fatal(err)
	}
	own, err := store.Get(ctx, pathKeyring)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Apply(ctx, storage.Put(pathKeyring, foreign.Value)); err != nil {
		t.Fatal(err)
	}
	if err := b.ReloadKeyring(ctx); !errors.Is(err, ErrKeyringMismatch) {
		t.Fatalf("a foreign keyring: %v", err)
	}
	// A keyring of this root key that lacks a term B holds.
	if err := store.Apply(ctx, storage.Put(pathKeyring, own.Value)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.Apply(ctx, storage.Put(pathKeyring, own.Value)); err != nil {
		t.Fatal(err)
	}
	if err := b.ReloadKeyring(ctx); !errors.Is(err, ErrKeyringMismatch) {
		t.Fatalf("a keyring without a term this replica holds: %v", err)
	}
	if term, _ := b.ActiveTerm(); term != 2 {
		t.Fatalf("B's keyring after refusing: active term %d", term)
	}
}

// TestOpenRawEntry: Open decrypts a raw stored entry (a watch event's
// value) with Get's checks: the right path opens it, another path or a
// tampered value is ErrCorrupt, and an entry under a term rotated in by
// another replica makes it reload the keyring once.
func TestOpenRawEntry(t *testing.T) {
	a, b, store := twoBarriers(t)
	if err := a.Apply(ctx, storage.Put("x", []byte("plain"))); err != nil {
		t.Fatal(err)
	}
	raw, err := store.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.Open(ctx, "x", raw)
	if err != nil || string(e.Value) != "plain" || e.Revision != raw.Revision || e.Key != "x" {
		t.Fatalf("Open(x) = %q rev %d key %q, %v; want plain rev %d", e.Value, e.Revision, e.Key, err, raw.Revision)
	}
	if string(raw.Value) == "plain" || len(raw.Value) < 10 {
		t.Fatal("Open changed the raw value it was given")
	}
	if _, err := b.Open(ctx, "y", raw); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of x's entry as y: %v, want ErrCorrupt", err)
	}
	tampered := storage.Entry{Key: "x", Revision: raw.Revision, Value: append([]byte(nil), raw.Value...)}
	tampered.Value[len(tampered.Value)-1] ^= 1
	if _, err := b.Open(ctx, "x", tampered); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a tampered value: %v, want ErrCorrupt", err)
	}
	if _, err := b.Open(ctx, "core/keyring", raw); err == nil {
		t.Fatal("Open of a reserved path succeeded")
	}

	if _, err := a.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, storage.Put("z", []byte("under term 2"))); err != nil {
		t.Fatal(err)
	}
	raw, err = store.Get(ctx, "z")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := b.Open(ctx, "z", raw); err != nil || string(e.Value) != "under term 2" {
		t.Fatalf("B opens an entry under a term rotated in by A: %q %v", e.Value, err)
	}
	if term, _ := b.ActiveTerm(); term != 2 {
		t.Fatalf("B's active term after Open reloaded: %d, want 2", term)
	}

	b.Seal()
	if _, err := b.Open(ctx, "x", raw); !errors.Is(err, ErrSealed) {
		t.Fatalf("Open while sealed: %v, want ErrSealed", err)
	}
}
