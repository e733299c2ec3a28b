package sys_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"testing"

	"github.com/cofferkms/coffer/internal/keys"
)

// TestReviewRewrapLeavesKeysWritable rotates the barrier keyring and
// rewraps while the server stays unsealed, as `coffer operator rewrap` does.
// Rewrap rewrites every entry, so every stored revision grows; the key
// service commits with compare-and-swap on the revision it cached. A key
// must stay writable afterwards (update, rotate) and must keep encrypting
// past its current use lease, which needs a write of its record.
func TestReviewRewrapLeavesKeysWritable(t *testing.T) {
	const lease = 4
	s, _ := newSys(t, keys.WithUseLimits(1<<20, lease))
	k, err := s.Keys.Create(ctx, keys.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Keys.Encrypt(ctx, k.ID, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Rewrap(ctx); err != nil || res.Rewrapped == 0 {
		t.Fatalf("rewrap: %+v %v", res, err)
	}
	for i := range 3 * lease {
		if _, err := s.Keys.Encrypt(ctx, k.ID, []byte("x"), nil); err != nil {
			t.Fatalf("encryption %d after rewrap: %v", i, err)
		}
	}
	desc := "after rewrap"
	if _, err := s.Keys.Update(ctx, k.ID, keys.UpdateRequest{Description: &desc}); err != nil {
		t.Fatalf("update after rewrap: %v", err)
	}
	if _, err := s.Keys.Rotate(ctx, k.ID); err != nil {
		t.Fatalf("rotate after rewrap: %v", err)
	}
}

// TestReviewUseBoundUnderSealsAndRotations encrypts from several goroutines
// while the server seals and unseals and keys rotate by hand, with a bound
// of 50 uses per version and a lease of 7, and counts the encryptions each
// version made. No version may pass the bound by more than the encryptions
// that can be in flight at a rotation (one per encrypting goroutine).
func TestReviewUseBoundUnderSealsAndRotations(t *testing.T) {
	const bound, workers = 50, 6
	s, share := newSys(t, keys.WithUseLimits(bound, 7))
	var ids []string
	for range 3 {
		k, err := s.Keys.Create(ctx, keys.CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	deadline := time.Now().Add(2 * time.Second)
	var counts sync.Map // "id/version" -> *atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for time.Now().Before(deadline) {
			s.Seal()
			if _, err := s.Unseal(ctx, share); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		}
	})
	wg.Go(func() {
		for time.Now().Before(deadline) {
			time.Sleep(time.Duration(20+rand.IntN(20)) * time.Millisecond)
			_, _ = s.Keys.Rotate(ctx, ids[rand.IntN(len(ids))])
		}
	})
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				out, err := s.Keys.Encrypt(ctx, ids[rand.IntN(len(ids))], []byte("p"), nil)
				if err != nil {
					continue
				}
				v, _ := counts.LoadOrStore(fmt.Sprintf("%s/%d", out.KeyID, out.KeyVersion), new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		})
	}
	wg.Wait()
	var versions, total, most int64
	counts.Range(func(k, v any) bool {
		n := v.(*atomic.Int64).Load()
		versions++
		total += n
		most = max(most, n)
		if n > bound+workers {
			t.Errorf("%s encrypted %d times; the bound is %d", k, n, bound)
		}
		return true
	})
	t.Logf("%d encryptions over %d versions, at most %d under one", total, versions, most)
	if most < bound {
		t.Fatalf("no version reached the bound of %d uses (at most %d): the test did not exercise it", bound, most)
	}
}

// TestReviewRewrapDuringWrites rotates the keyring and rewraps in a loop
// while keys are updated, rotated and used (with a tiny lease, so use
// reservations are written constantly). No request may fail, and every
// ciphertext must decrypt after a restart.
func TestReviewRewrapDuringWrites(t *testing.T) {
	s, share := newSys(t, keys.WithUseLimits(1<<20, 3))
	var ids []string
	for range 3 {
		k, err := s.Keys.Create(ctx, keys.CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	var cts sync.Map // ciphertext string -> plaintext
	var rewraps atomic.Int64
	wg.Go(func() {
		for time.Now().Before(deadline) {
			if _, err := s.RotateKeyring(ctx); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.Rewrap(ctx); err != nil {
				t.Errorf("rewrap: %v", err)
				return
			}
			rewraps.Add(1)
			time.Sleep(2 * time.Millisecond) // far more often than any operator
		}
	})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				id := ids[(w+i)%len(ids)]
				switch i % 5 {
				case 0:
					d := fmt.Sprint(i)
					if _, err := s.Keys.Update(ctx, id, keys.UpdateRequest{Description: &d}); err != nil {
						t.Errorf("update during rewrap: %v", err)
						return
					}
				case 1:
					if _, err := s.Keys.Rotate(ctx, id); err != nil {
						t.Errorf("rotate during rewrap: %v", err)
						return
					}
				default:
					p := fmt.Sprintf("%d/%d", w, i)
					out, err := s.Keys.Encrypt(ctx, id, []byte(p), nil)
					if err != nil {
						t.Errorf("encrypt during rewrap: %v", err)
						return
					}
					cts.Store(string(out.Ciphertext), p)
				}
			}
		})
	}
	wg.Wait()
	s.Seal()
	if _, err := s.Unseal(ctx, share); err != nil {
		t.Fatal(err)
	}
	n := 0
	cts.Range(func(ct, p any) bool {
		n++
		o, err := s.Keys.Decrypt(ctx, []byte(ct.(string)), nil, "")
		if err != nil || string(o.Plaintext) != p.(string) {
			t.Errorf("ciphertext of %q after rewraps and a restart: %v", p, err)
			return false
		}
		return true
	})
	t.Logf("%d rewraps, %d ciphertexts", rewraps.Load(), n)
	if rewraps.Load() == 0 || n == 0 {
		t.Fatal("nothing was rewrapped or encrypted")
	}
}
