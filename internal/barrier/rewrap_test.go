package barrier

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// termOf returns the keyring term a raw stored entry is sealed under.
func termOf(t *testing.T, be storage.Backend, path string) uint32 {
	t.Helper()
	e, err := be.Get(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint32(e.Value[1:5])
}

// racingBackend writes a new value of one path through the barrier the
// first time that path is read, as a client write racing Rewrap would.
type racingBackend struct {
	storage.Backend
	b    *Barrier
	path string
	done atomic.Bool
}

func (r *racingBackend) Get(ctx context.Context, key string) (storage.Entry, error) {
	e, err := r.Backend.Get(ctx, key)
	if key == r.path && r.b.ring != nil && r.b.ring.ActiveTerm > 1 && r.done.CompareAndSwap(false, true) {
		if err := r.b.Apply(ctx, storage.Put(key, []byte("written during rewrap"))); err != nil {
			panic(err)
		}
	}
	return e, err
}

// TestRotateKeyringAndRewrap writes entries before and after a keyring
// rotation, restarts, reads all, rewraps (with a write racing it), checks
// that every stored entry is then under the new term, restarts again and
// reads all. A second rewrap has nothing to do.
func TestRotateKeyringAndRewrap(t *testing.T) {
	mem := inmem.New()
	be := &racingBackend{Backend: mem, path: "keys/07"}
	b := New(be)
	be.b = b
	shares, err := b.Initialize(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	put := func(b *Barrier, p, v string) {
		t.Helper()
		if err := b.Apply(ctx, storage.Put(p, []byte(v))); err != nil {
			t.Fatal(err)
		}
		want[p] = v
	}
	for i := range 20 {
		put(b, fmt.Sprintf("keys/%02d", i), fmt.Sprintf("before %d", i))
	}
	if term, err := b.RotateKeyring(ctx); err != nil || term != 2 {
		t.Fatalf("rotate: %d %v", term, err)
	}
	for i := 20; i < 25; i++ {
		put(b, fmt.Sprintf("keys/%02d", i), fmt.Sprintf("after %d", i))
	}
	readAll := func(b *Barrier) {
		t.Helper()
		for p, v := range want {
			e, err := b.Get(ctx, p)
			if err != nil || string(e.Value) != v {
				t.Fatalf("%s: %q %v, want %q", p, e.Value, err, v)
			}
		}
	}
	restart := func() *Barrier {
		t.Helper()
		b.Seal()
		nb := New(be)
		be.b = nb
		if _, err := nb.Unseal(ctx, shares[0]); err != nil {
			t.Fatal(err)
		}
		return nb
	}
	b = restart()
	readAll(b)
	if termOf(t, mem, "keys/00") != 1 || termOf(t, mem, "keys/24") != 2 {
		t.Fatal("entries are not under the terms they were written with")
	}

	res, err := b.Rewrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want["keys/07"] = "written during rewrap" // the racing write wins
	if res.Term != 2 || res.Scanned != 25 || res.Rewrapped != 19 || res.Current != 6 {
		t.Fatalf("rewrap: %+v, want 19 rewrapped (20 old, one rewritten by the racing write) and 6 current", res)
	}
	for p := range want {
		if got := termOf(t, mem, p); got != 2 {
			t.Fatalf("%s is still under term %d after rewrap", p, got)
		}
	}
	b = restart()
	readAll(b)
	if res, err := b.Rewrap(ctx); err != nil || res.Rewrapped != 0 || res.Current != 25 {
		t.Fatalf("second rewrap: %+v %v", res, err)
	}
	b.Seal()
	if _, err := b.Rewrap(ctx); err != ErrSealed {
		t.Fatalf("rewrap while sealed: %v", err)
	}
}
