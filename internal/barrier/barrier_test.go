package barrier

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

var ctx = context.Background()

func TestShamirThresholds(t *testing.T) {
	for _, tc := range []struct{ n, k int }{{1, 1}, {2, 2}, {3, 2}, {5, 3}, {10, 10}} {
		root, shares, err := splitRootSecret(tc.n, tc.k)
		if err != nil {
			t.Fatal(err)
		}
		if len(shares) != tc.n {
			t.Fatalf("%d shares, want %d", len(shares), tc.n)
		}
		// Every window of k consecutive shares rebuilds the same root key.
		for start := 0; start+tc.k <= tc.n; start++ {
			var sub [][]byte
			for _, s := range shares[start : start+tc.k] {
				sub = append(sub, []byte(s))
			}
			got, err := combineShares(tc.k, sub)
			if err != nil || !bytes.Equal(got, root) {
				t.Fatalf("n=%d k=%d window %d: %v", tc.n, tc.k, start, err)
			}
		}
		if tc.k > 1 {
			var few [][]byte
			for _, s := range shares[:tc.k-1] {
				few = append(few, []byte(s))
			}
			if got, err := combineShares(tc.k-1, few); err == nil && bytes.Equal(got, root) {
				t.Fatalf("n=%d k=%d: %d shares rebuilt the root key", tc.n, tc.k, tc.k-1)
			}
		}
	}
	for _, bad := range []struct{ n, k int }{{0, 0}, {3, 4}, {3, 0}, {256, 2}} {
		if _, _, err := splitRootSecret(bad.n, bad.k); err == nil {
			t.Errorf("n=%d k=%d accepted", bad.n, bad.k)
		}
	}
}

func TestShareTypoDetected(t *testing.T) {
	_, shares, _ := splitRootSecret(3, 2)
	s := []byte(shares[0])
	s[10] ^= 0x01
	if s[10] == '+' || s[10] == '/' { // keep it base64
		s[10] = 'A'
	}
	if _, err := shareID(s); !errors.Is(err, ErrBadShare) {
		t.Fatalf("typo accepted: %v", err)
	}
	for _, junk := range []string{"", "not base64!", "AAAA", strings.Repeat("A", 52)} {
		if _, err := shareID([]byte(junk)); !errors.Is(err, ErrBadShare) {
			t.Errorf("%q accepted: %v", junk, err)
		}
	}
}

func initBarrier(t testing.TB, n, k int) (*Barrier, storage.Backend, []string) {
	t.Helper()
	be := inmem.New()
	b := New(be)
	shares, err := b.Initialize(ctx, n, k)
	if err != nil {
		t.Fatal(err)
	}
	return b, be, shares
}

func TestUnsealFlow(t *testing.T) {
	b, be, shares := initBarrier(t, 5, 3)
	if err := b.Apply(ctx, storage.Put("keys/a", []byte("secret value"))); err != nil {
		t.Fatal(err)
	}
	b.Seal()
	if _, err := b.Get(ctx, "keys/a"); !errors.Is(err, ErrSealed) {
		t.Fatalf("sealed get: %v", err)
	}
	// A fresh barrier over the same storage, as after a restart.
	b = New(be)
	st, _ := b.Status(ctx)
	if !st.Initialized || !st.Sealed || st.Threshold != 3 || st.Shares != 5 {
		t.Fatalf("status %+v", st)
	}
	st, _ = b.Unseal(ctx, shares[4])
	st, _ = b.Unseal(ctx, shares[4]) // repeated share counts once
	if st.Progress != 1 || !st.Sealed {
		t.Fatalf("after a repeated share: %+v", st)
	}
	b.Unseal(ctx, shares[1])
	st, err := b.Unseal(ctx, "  "+shares[2]+"\n")
	if err != nil || st.Sealed {
		t.Fatalf("unseal: %+v %v", st, err)
	}
	e, err := b.Get(ctx, "keys/a")
	if err != nil || string(e.Value) != "secret value" {
		t.Fatalf("get after unseal: %q %v", e.Value, err)
	}
}

func TestUnsealWithForeignShares(t *testing.T) {
	b, _, _ := initBarrier(t, 3, 2)
	_, _, other := initBarrier(t, 3, 2)
	b.Seal()
	b.Unseal(ctx, other[0])
	st, err := b.Unseal(ctx, other[1])
	if !errors.Is(err, ErrBadShare) || !st.Sealed {
		t.Fatalf("foreign shares: %+v %v", st, err)
	}
	if st, _ := b.Status(ctx); st.Progress != 0 {
		t.Fatal("progress not reset after a failed attempt")
	}
}

func TestCiphertextAtRest(t *testing.T) {
	b, be, _ := initBarrier(t, 1, 1)
	b.Apply(ctx, storage.Put("keys/a", []byte("plain-marker")))
	raw, _ := be.Get(ctx, "keys/a")
	if bytes.Contains(raw.Value, []byte("plain-marker")) {
		t.Fatal("plaintext reached the backend")
	}
	// Swapping two entries' values is detected (AAD = path).
	b.Apply(ctx, storage.Put("keys/b", []byte("other")))
	rawB, _ := be.Get(ctx, "keys/b")
	be.Apply(ctx, storage.Put("keys/a", rawB.Value))
	if _, err := b.Get(ctx, "keys/a"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("swapped entry: %v", err)
	}
	// Tampering is detected.
	rawB.Value[len(rawB.Value)-1] ^= 1
	be.Apply(ctx, storage.Put("keys/b", rawB.Value))
	if _, err := b.Get(ctx, "keys/b"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered entry: %v", err)
	}
	if err := b.Apply(ctx, storage.Put("core/keyring", []byte("x"))); err == nil {
		t.Fatal("reserved path writable through the barrier")
	}
}

func TestKeyringRotation(t *testing.T) {
	b, be, shares := initBarrier(t, 1, 1)
	b.Apply(ctx, storage.Put("keys/old", []byte("v1")))
	term, err := b.RotateKeyring(ctx)
	if err != nil || term != 2 {
		t.Fatalf("rotate: %d %v", term, err)
	}
	b.Apply(ctx, storage.Put("keys/new", []byte("v2")))
	b.Seal()
	b2 := New(be)
	if _, err := b2.Unseal(ctx, shares[0]); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"keys/old": "v1", "keys/new": "v2"} {
		e, err := b2.Get(ctx, p)
		if err != nil || string(e.Value) != want {
			t.Fatalf("%s: %q %v", p, e.Value, err)
		}
	}
}

func TestInitializeTwice(t *testing.T) {
	b, _, _ := initBarrier(t, 1, 1)
	if _, err := b.Initialize(ctx, 1, 1); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second init: %v", err)
	}
}

func FuzzShareDecode(f *testing.F) {
	_, shares, _ := splitRootSecret(3, 2)
	for _, s := range shares {
		f.Add([]byte(s))
	}
	f.Add([]byte("AQ=="))
	f.Fuzz(func(t *testing.T, in []byte) {
		id, err := shareID(in)
		if err != nil {
			if !errors.Is(err, ErrBadShare) {
				t.Fatalf("error does not wrap ErrBadShare: %v", err)
			}
			return
		}
		if id == 0 {
			t.Fatal("share id 0 accepted")
		}
		decodeShare(in) // must not panic
	})
}

func FuzzEntryOpen(f *testing.F) {
	b, be, _ := initBarrier(f, 1, 1)
	b.Apply(ctx, storage.Put("keys/a", []byte("v")))
	raw, _ := be.Get(ctx, "keys/a")
	f.Add(raw.Value)
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := b.ring.open("keys/a", in); err == nil && !bytes.Equal(in, raw.Value) {
			t.Fatal("a forged entry opened")
		}
	})
}
