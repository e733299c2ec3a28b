package sys_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

var ctx = context.Background()

// newSys returns an initialized, unsealed system service over an in-memory
// store, and its one unseal share. The key service gets opts.
func newSys(t testing.TB, opts ...keys.Option) (*sys.Sys, string) {
	t.Helper()
	b := barrier.New(inmem.New())
	s := &sys.Sys{Barrier: b, Keys: keys.New(b, opts...), Tokens: auth.NewTokens(b, nil)}
	res, err := s.Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, res.Shares[0]); err != nil {
		t.Fatal(err)
	}
	return s, res.Shares[0]
}

// storedKey is the part of a stored key record these tests inspect.
type storedKey struct {
	ID       string     `json:"id"`
	State    keys.State `json:"state"`
	Versions []struct {
		Version  uint32 `json:"version"`
		Material []byte `json:"material"`
	} `json:"versions"`
}

// checkStoredMaterial reads every key record through the barrier and fails
// when a version of a key that is not deleted has material that is missing,
// the wrong size or all zero.
func checkStoredMaterial(t testing.TB, b *barrier.Barrier) int {
	t.Helper()
	paths, err := b.List(ctx, "keys/")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		e, err := b.Get(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var k storedKey
		if err := json.Unmarshal(e.Value, &k); err != nil {
			t.Fatal(err)
		}
		if k.State == keys.StateDeleted {
			continue
		}
		for _, v := range k.Versions {
			if len(v.Material) != 32 || bytes.Equal(v.Material, make([]byte, 32)) {
				t.Errorf("key %s version %d: stored material is %x", k.ID, v.Version, v.Material)
			}
		}
	}
	return len(paths)
}

// gateClock is a clock that, once armed, stops the next caller until
// released. The key service reads the clock in the middle of a write (after
// copying the record, before encoding it), which is the window a seal used
// to race.
type gateClock struct {
	armed   atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (g *gateClock) now() time.Time {
	if g.armed.CompareAndSwap(true, false) {
		close(g.reached)
		<-g.release
	}
	return time.Now()
}

// TestSealDuringKeyWriteKeepsMaterial stops a key update between copying
// the record and writing it, seals (and, if the seal does not wait for the
// writer, unseals again), then lets the writer go on. The key must still
// decrypt what it encrypted before, from storage, and no stored version may
// be all zero. Before the fix the seal wiped the material the writer's copy
// shared and the writer then stored 32 zero bytes.
func TestSealDuringKeyWriteKeepsMaterial(t *testing.T) {
	g := &gateClock{reached: make(chan struct{}), release: make(chan struct{})}
	s, share := newSys(t, keys.WithClock(g.now))
	k, err := s.Keys.Create(ctx, keys.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Keys.Encrypt(ctx, k.ID, []byte("before"), nil)
	if err != nil {
		t.Fatal(err)
	}

	g.armed.Store(true)
	werr := make(chan error, 1)
	go func() {
		desc := "changed during a seal"
		_, err := s.Keys.Update(ctx, k.ID, keys.UpdateRequest{Description: &desc})
		werr <- err
	}()
	<-g.reached
	sealDone := make(chan struct{})
	go func() { s.Seal(); close(sealDone) }()
	select {
	case <-sealDone:
		// The seal did not wait for the writer: unseal before it resumes,
		// so its write reaches storage.
		if _, err := s.Unseal(ctx, share); err != nil {
			t.Fatal(err)
		}
	case <-time.After(300 * time.Millisecond):
		// The seal waits for the writer, as it must.
	}
	close(g.release)
	err = <-werr
	t.Logf("update overlapping the seal: %v", err)
	<-sealDone

	// Read everything back from storage.
	s.Seal()
	if _, err := s.Unseal(ctx, share); err != nil {
		t.Fatal(err)
	}
	checkStoredMaterial(t, s.Barrier)
	o, err := s.Keys.Decrypt(ctx, sealed.Ciphertext, nil, "")
	if err != nil {
		t.Fatalf("decrypting a ciphertext made before the seal: %v", err)
	}
	if string(o.Plaintext) != "before" {
		t.Fatalf("plaintext %q", o.Plaintext)
	}
}

// gateStore passes through to a barrier; once armed, the next Get of a key
// record reads the entry and then waits for release before returning it:
// the moment a Create has written its key and not yet published it.
type gateStore struct {
	*barrier.Barrier
	armed   atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (g *gateStore) Get(ctx context.Context, path string) (storage.Entry, error) {
	e, err := g.Barrier.Get(ctx, path)
	if strings.HasPrefix(path, "keys/") && g.armed.CompareAndSwap(true, false) {
		close(g.reached)
		<-g.release
	}
	return e, err
}

// TestCreateDuringSealLeavesNoHandle checks that a key created while the
// server seals is either refused or dropped with the rest: a sealed service
// holds no key. Before the fix a Create that had written its key published
// it after the seal had emptied the cache.
func TestCreateDuringSealLeavesNoHandle(t *testing.T) {
	b := barrier.New(inmem.New())
	g := &gateStore{Barrier: b, reached: make(chan struct{}), release: make(chan struct{})}
	s := &sys.Sys{Barrier: b, Keys: keys.New(g), Tokens: auth.NewTokens(b, nil)}
	res, err := s.Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, res.Shares[0]); err != nil {
		t.Fatal(err)
	}
	g.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.Keys.Create(ctx, keys.CreateRequest{})
		done <- err
	}()
	<-g.reached
	sealDone := make(chan struct{})
	go func() { s.Seal(); close(sealDone) }()
	select {
	case <-sealDone:
	case <-time.After(300 * time.Millisecond):
	}
	close(g.release)
	t.Logf("create overlapping the seal: %v", <-done)
	<-sealDone
	if n := len(s.Keys.List(ctx)); n != 0 {
		t.Fatalf("a sealed key service holds %d keys", n)
	}
}

var stressDuration = flag.Duration("stress.duration", 3*time.Second,
	"how long TestSealRaceStress seals and unseals against concurrent key writes (e.g. 10m)")

// sample is one ciphertext the stress test made and must decrypt at the end.
type sample struct {
	ct    []byte
	plain []byte
	ec    map[string]string
}

// TestSealRaceStress seals and unseals in a loop while other goroutines
// create keys, update, enable, disable, rotate, schedule and cancel their
// deletion, run the background Tick, and encrypt and decrypt. The use
// counter is made tiny, so the lease of uses and the rotation at the bound
// are written constantly too. Afterwards every ciphertext must decrypt, from
// storage, and no stored key version may be all zero. The default run is
// short; run it longer with
//
//	go test -run TestSealRaceStress ./internal/sys/ -stress.duration=10m
func TestSealRaceStress(t *testing.T) {
	s, share := newSys(t, keys.WithUseLimits(97, 7))
	var ids []string
	for range 4 {
		k, err := s.Keys.Create(ctx, keys.CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	var idsMu sync.Mutex
	pick := func(r *rand.Rand) string {
		idsMu.Lock()
		defer idsMu.Unlock()
		return ids[r.IntN(len(ids))]
	}

	deadline := time.Now().Add(*stressDuration)
	var (
		wg       sync.WaitGroup
		failMu   sync.Mutex
		failures []string
		samples  sync.Map // *sample -> struct{}
		cycles   atomic.Int64
		writes   atomic.Int64
		encrypts atomic.Int64
		decrypts atomic.Int64
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	// expected reports whether err is one a request can meet while the
	// server seals and keys change state under it.
	expected := func(err error) bool {
		return err == nil || errors.Is(err, barrier.ErrSealed) ||
			(keys.IsClientError(err) && !errors.Is(err, keys.ErrInvalidCiphertext))
	}

	wg.Go(func() { // the sealer
		for time.Now().Before(deadline) {
			s.Seal()
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			if _, err := s.Unseal(ctx, share); err != nil {
				fail("unseal: %v", err)
				return
			}
			cycles.Add(1)
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		}
	})
	for w := range 4 { // key writers
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for time.Now().Before(deadline) {
				id := pick(r)
				var err error
				// Enabling and cancelling outweigh disabling and
				// scheduling, so keys are usable most of the time.
				switch r.IntN(11) {
				case 0:
					d := fmt.Sprintf("d%d", r.IntN(1000))
					_, err = s.Keys.Update(ctx, id, keys.UpdateRequest{Description: &d})
				case 1, 2:
					_, err = s.Keys.Enable(ctx, id)
				case 3:
					_, err = s.Keys.Disable(ctx, id)
				case 4, 5:
					_, err = s.Keys.Rotate(ctx, id)
				case 6:
					_, err = s.Keys.ScheduleDeletion(ctx, id, 7)
				case 7, 8:
					_, err = s.Keys.CancelDeletion(ctx, id)
				case 9:
					_, _, err = s.Keys.Tick(ctx)
				case 10:
					if r.IntN(20) == 0 {
						var k keys.Key
						k, err = s.Keys.Create(ctx, keys.CreateRequest{})
						if err == nil {
							idsMu.Lock()
							ids = append(ids, k.ID)
							idsMu.Unlock()
						}
					}
				}
				if !expected(err) && !errors.Is(err, storage.ErrConflict) {
					fail("key write on %s: %v", id, err)
				}
				if errors.Is(err, barrier.ErrSealed) {
					time.Sleep(50 * time.Microsecond) // do not spin while sealed
				}
				writes.Add(1)
			}
		})
	}
	for w := range 4 { // encrypters and decrypters
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 2))
			var mine []*sample
			for time.Now().Before(deadline) {
				if len(mine) > 0 && r.IntN(2) == 0 {
					smp := mine[r.IntN(len(mine))]
					o, err := s.Keys.Decrypt(ctx, smp.ct, smp.ec, "")
					if !expected(err) {
						fail("decrypt: %v", err)
					} else if err == nil && !bytes.Equal(o.Plaintext, smp.plain) {
						fail("decrypt returned %x, want %x", o.Plaintext, smp.plain)
					}
					decrypts.Add(1)
					continue
				}
				plain := []byte(fmt.Sprintf("p%d", r.Uint64()))
				ec := map[string]string{"n": fmt.Sprint(r.IntN(10))}
				out, err := s.Keys.Encrypt(ctx, pick(r), plain, ec)
				if !expected(err) {
					fail("encrypt: %v", err)
				}
				if errors.Is(err, barrier.ErrSealed) || errors.Is(err, keys.ErrNotFound) {
					time.Sleep(50 * time.Microsecond) // do not spin while sealed
				}
				if err == nil {
					smp := &sample{ct: out.Ciphertext, plain: plain, ec: ec}
					samples.Store(smp, struct{}{})
					if len(mine) < 1000 {
						mine = append(mine, smp)
					}
				}
				encrypts.Add(1)
			}
		})
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}

	// From storage: seal, unseal, make every key usable, decrypt all.
	s.Seal()
	if _, err := s.Unseal(ctx, share); err != nil {
		t.Fatal(err)
	}
	nkeys := checkStoredMaterial(t, s.Barrier)
	for _, id := range ids {
		s.Keys.CancelDeletion(ctx, id)
		s.Keys.Enable(ctx, id)
	}
	var n, bad int
	samples.Range(func(v, _ any) bool {
		smp := v.(*sample)
		n++
		o, err := s.Keys.Decrypt(ctx, smp.ct, smp.ec, "")
		if err != nil || !bytes.Equal(o.Plaintext, smp.plain) {
			if bad++; bad <= 10 {
				t.Errorf("ciphertext %d does not decrypt after the run: %v", n, err)
			}
		}
		return true
	})
	t.Logf("%s: %d seal/unseal cycles, %d key writes, %d encryptions, %d decryptions; %d keys, %d ciphertexts checked, %d lost",
		*stressDuration, cycles.Load(), writes.Load(), encrypts.Load(), decrypts.Load(), nkeys, n, bad)
	if cycles.Load() == 0 || n == 0 {
		t.Fatal("the stress run sealed or encrypted nothing")
	}
}

// OnSeal's hooks run on every seal, after the keys are wiped.
func TestOnSealHooksRun(t *testing.T) {
	s, _ := newSys(t)
	var ran int
	s.OnSeal(func() {
		if !s.Barrier.Sealed() {
			t.Error("a seal hook ran before the barrier was sealed")
		}
		ran++
	})
	s.Seal()
	if ran != 1 {
		t.Fatalf("the seal hook ran %d times, want 1", ran)
	}
}
