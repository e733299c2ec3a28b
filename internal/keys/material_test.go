package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// TestZeroMaterialNeverStored wipes a live snapshot's material, as a seal
// used to while a write was in flight, and checks that a write of the key
// is refused with an internal error instead of storing 32 zero bytes, and
// that the stored record still opens the old ciphertext.
func TestZeroMaterialNeverStored(t *testing.T) {
	ctx := context.Background()
	b := barrier.New(inmem.New())
	if _, err := b.Initialize(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	s := New(b)
	k, err := s.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := s.Encrypt(ctx, k.ID, []byte("kept"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := s.lookup(k.ID)
	h.cur.Load().wipe()
	if _, err := s.Rotate(ctx, k.ID); !errors.Is(err, errBadMaterial) {
		t.Fatalf("rotating a key whose material was wiped: %v, want the internal error", err)
	}
	r := New(b)
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	o, err := r.Decrypt(ctx, ct.Ciphertext, nil, "")
	if err != nil || !bytes.Equal(o.Plaintext, []byte("kept")) {
		t.Fatalf("stored key no longer opens its ciphertext: %v", err)
	}
}

// TestSupersededSnapshotWiped checks that a write wipes the material of the
// snapshot it replaces, and that the replaced snapshot's cipher, which a
// reader may still hold, keeps working.
func TestSupersededSnapshotWiped(t *testing.T) {
	ctx := context.Background()
	b := barrier.New(inmem.New())
	if _, err := b.Initialize(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	s := New(b)
	k, err := s.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := s.lookup(k.ID)
	old := h.cur.Load()
	if _, err := s.Disable(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if m := old.rec.Versions[0].Material; !bytes.Equal(m, make([]byte, len(m))) {
		t.Fatal("the superseded snapshot still holds its key material")
	}
	nonce := make([]byte, 12)
	sealed := old.aeads[0].Seal(nil, nonce, []byte("x"), nil)
	if _, err := h.cur.Load().aeads[0].Open(nil, nonce, sealed, nil); err != nil {
		t.Fatal("a reader's cipher from the superseded snapshot stopped matching the key")
	}
}

// TestLoadedZeroMaterialNeverUsed: a key whose version was stored as 32
// zero bytes (by the seal race, before it was fixed) must not encrypt under
// the all-zero AES key. Encrypt refuses and says to rotate; the rotation
// works and the new version encrypts.
func TestLoadedZeroMaterialNeverUsed(t *testing.T) {
	ctx := context.Background()
	b := barrier.New(inmem.New())
	if _, err := b.Initialize(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	s := New(b)
	k, err := s.Create(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := s.lookup(k.ID)
	rec := h.cur.Load().rec
	rec.Versions = []versionRecord{{Version: 1, CreatedAt: rec.CreatedAt, Material: make([]byte, 32)}}
	val, _ := json.Marshal(rec)
	if err := b.Apply(ctx, storage.Put(keyPrefix+k.ID, val)); err != nil {
		t.Fatal(err)
	}
	r := New(b)
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Encrypt(ctx, k.ID, []byte("x"), nil); err == nil || !strings.Contains(err.Error(), "rotate the key") {
		t.Fatalf("encrypting under a version stored as zeros: %v", err)
	}
	if _, err := r.Rotate(ctx, k.ID); err != nil {
		t.Fatalf("rotating a key with a lost version: %v", err)
	}
	if out, err := r.Encrypt(ctx, k.ID, []byte("x"), nil); err != nil || out.KeyVersion != 2 {
		t.Fatalf("after rotation: %+v %v", out, err)
	}
}
