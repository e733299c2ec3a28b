package keys_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// clock is a fake clock tests move by hand.
type clock struct{ t atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time      { return time.Unix(0, c.t.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.t.Add(int64(d)) }

// env is a key service over an unsealed barrier on an in-memory store.
type env struct {
	store *barrier.Barrier
	svc   *keys.Service
	clk   *clock
}

func newEnv(t testing.TB) *env {
	t.Helper()
	b := barrier.New(inmem.New())
	if _, err := b.Initialize(context.Background(), 1, 1); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	return &env{store: b, svc: keys.New(b, keys.WithClock(clk.now)), clk: clk}
}

func (e *env) create(t testing.TB, req keys.CreateRequest) keys.Key {
	t.Helper()
	k, err := e.svc.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var ctx = context.Background()

func TestEncryptDecryptAcrossRotation(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{Alias: "alias/app"})
	ec := map[string]string{"tenant": "a"}
	var cts [][]byte
	for i := 0; i < 4; i++ {
		s, err := e.svc.Encrypt(ctx, "alias/app", []byte{byte(i)}, ec)
		if err != nil {
			t.Fatal(err)
		}
		if s.KeyVersion != uint32(i+1) || s.KeyID != k.ID {
			t.Fatalf("sealed under %s v%d, want %s v%d", s.KeyID, s.KeyVersion, k.ID, i+1)
		}
		cts = append(cts, s.Ciphertext)
		if _, err := e.svc.Rotate(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	for i, ct := range cts {
		o, err := e.svc.Decrypt(ctx, ct, ec, "")
		if err != nil {
			t.Fatalf("ciphertext %d: %v", i, err)
		}
		if !bytes.Equal(o.Plaintext, []byte{byte(i)}) || o.KeyVersion != uint32(i+1) {
			t.Fatalf("ciphertext %d opened to %v v%d", i, o.Plaintext, o.KeyVersion)
		}
		if _, err := e.svc.Decrypt(ctx, ct, map[string]string{"tenant": "b"}, ""); !errors.Is(err, keys.ErrInvalidCiphertext) {
			t.Fatalf("wrong context: %v", err)
		}
	}
}

func TestStateGatesUse(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{})
	s, _ := e.svc.Encrypt(ctx, k.ID, []byte("x"), nil)
	steps := []struct {
		name string
		do   func() error
		want error // for Encrypt and Decrypt afterwards; nil = usable
	}{
		{"disable", func() error { _, err := e.svc.Disable(ctx, k.ID); return err }, keys.ErrDisabled},
		{"enable", func() error { _, err := e.svc.Enable(ctx, k.ID); return err }, nil},
		{"schedule deletion", func() error { _, err := e.svc.ScheduleDeletion(ctx, k.ID, 7); return err }, keys.ErrPendingDeletion},
		{"cancel deletion (comes back disabled)", func() error { _, err := e.svc.CancelDeletion(ctx, k.ID); return err }, keys.ErrDisabled},
		{"enable again", func() error { _, err := e.svc.Enable(ctx, k.ID); return err }, nil},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		_, errE := e.svc.Encrypt(ctx, k.ID, []byte("y"), nil)
		_, errD := e.svc.Decrypt(ctx, s.Ciphertext, nil, "")
		for _, err := range []error{errE, errD} {
			if st.want == nil && err != nil || st.want != nil && !errors.Is(err, st.want) {
				t.Fatalf("after %s: got %v, want %v", st.name, err, st.want)
			}
		}
	}
}

func TestScheduleDeletionBounds(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{})
	for _, d := range []int{-1, 1, 6, 31, 365} {
		if _, err := e.svc.ScheduleDeletion(ctx, k.ID, d); !errors.Is(err, keys.ErrInvalidArgument) {
			t.Errorf("pending days %d: %v", d, err)
		}
	}
	got, err := e.svc.ScheduleDeletion(ctx, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clk.now().Add(30 * 24 * time.Hour); !got.DeletionDate.Equal(want) {
		t.Fatalf("deletion date %v, want %v (default 30 days)", got.DeletionDate, want)
	}
	if _, err := e.svc.ScheduleDeletion(ctx, k.ID, 7); !errors.Is(err, keys.ErrInvalidState) {
		t.Fatalf("scheduling twice: %v", err)
	}
}

func TestAutomaticRotation(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{RotationPeriod: "90d"})
	other := e.create(t, keys.CreateRequest{})
	old, _ := e.svc.Encrypt(ctx, k.ID, []byte("old"), nil)

	e.clk.add(89 * 24 * time.Hour)
	if r, _, err := e.svc.Tick(ctx); err != nil || r != 0 {
		t.Fatalf("before the period: rotated %d, err %v", r, err)
	}
	e.clk.add(24 * time.Hour)
	if r, _, err := e.svc.Tick(ctx); err != nil || r != 1 {
		t.Fatalf("at the period: rotated %d, err %v", r, err)
	}
	d, _ := e.svc.Describe(ctx, k.ID)
	if d.PrimaryVersion != 2 || len(d.Versions) != 2 {
		t.Fatalf("after rotation: %+v", d)
	}
	if d.NextRotationAt == nil || !d.NextRotationAt.Equal(e.clk.now().Add(90*24*time.Hour)) {
		t.Fatalf("next rotation %v", d.NextRotationAt)
	}
	if o, _ := e.svc.Describe(ctx, other.ID); o.PrimaryVersion != 1 {
		t.Fatal("a key without a period rotated")
	}
	if r, _, _ := e.svc.Tick(ctx); r != 0 {
		t.Fatal("rotated twice in one period")
	}
	if _, err := e.svc.Decrypt(ctx, old.Ciphertext, nil, ""); err != nil {
		t.Fatalf("old ciphertext after rotation: %v", err)
	}
	s, _ := e.svc.Encrypt(ctx, k.ID, []byte("new"), nil)
	if s.KeyVersion != 2 {
		t.Fatalf("new encryption used v%d", s.KeyVersion)
	}
	// Disabled keys do not rotate.
	e.svc.Disable(ctx, k.ID)
	e.clk.add(91 * 24 * time.Hour)
	if r, _, _ := e.svc.Tick(ctx); r != 0 {
		t.Fatal("a disabled key rotated")
	}
}

func TestDeletionDestroysMaterial(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{Alias: "alias/doomed"})
	s, _ := e.svc.Encrypt(ctx, k.ID, []byte("secret"), nil)
	if _, err := e.svc.ScheduleDeletion(ctx, k.ID, 7); err != nil {
		t.Fatal(err)
	}
	e.clk.add(7*24*time.Hour - time.Second)
	if _, d, _ := e.svc.Tick(ctx); d != 0 {
		t.Fatal("destroyed before the waiting period ended")
	}
	if _, err := e.svc.CancelDeletion(ctx, k.ID); err != nil {
		t.Fatal("cancel inside the window:", err)
	}
	e.svc.ScheduleDeletion(ctx, k.ID, 7)
	e.clk.add(7*24*time.Hour + time.Second)
	if _, d, err := e.svc.Tick(ctx); d != 1 || err != nil {
		t.Fatalf("destroyed %d, err %v", d, err)
	}
	if _, err := e.svc.Decrypt(ctx, s.Ciphertext, nil, ""); !errors.Is(err, keys.ErrDeleted) {
		t.Fatalf("decrypt after deletion: %v", err)
	}
	if _, err := e.svc.Describe(ctx, "alias/doomed"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("alias survived deletion: %v", err)
	}
	if _, err := e.svc.CancelDeletion(ctx, k.ID); !errors.Is(err, keys.ErrDeleted) {
		t.Fatalf("cancel after deletion: %v", err)
	}
	// The material is gone from storage too, not only from memory.
	reloaded := keys.New(e.store, keys.WithClock(e.clk.now))
	if err := reloaded.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := reloaded.Decrypt(ctx, s.Ciphertext, nil, ""); !errors.Is(err, keys.ErrDeleted) {
		t.Fatalf("decrypt after reload: %v", err)
	}
	raw, _ := e.store.Get(ctx, "keys/"+k.ID)
	if bytes.Contains(raw.Value, []byte("material")) {
		t.Fatal("stored tombstone still holds material")
	}
	for _, l := range reloaded.List(ctx) {
		if l.ID == k.ID {
			t.Fatal("deleted key is listed")
		}
	}
}

func TestPersistAndReload(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{Alias: "alias/a", Description: "d", Tags: map[string]string{"team": "x"}, RotationPeriod: "30d"})
	e.svc.Rotate(ctx, k.ID)
	s, _ := e.svc.Encrypt(ctx, "alias/a", []byte("p"), nil)
	e.svc.CreateAlias(ctx, "alias/b", k.ID)

	r := keys.New(e.store)
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := r.Describe(ctx, "alias/b")
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != k.ID || d.PrimaryVersion != 2 || d.Description != "d" || d.Tags["team"] != "x" || d.RotationPeriod != 30*24*time.Hour ||
		len(d.Aliases) != 2 {
		t.Fatalf("reloaded key differs: %+v", d)
	}
	if o, err := r.Decrypt(ctx, s.Ciphertext, nil, "alias/a"); err != nil || string(o.Plaintext) != "p" {
		t.Fatalf("decrypt after reload: %v", err)
	}
}

func TestAliases(t *testing.T) {
	e := newEnv(t)
	a := e.create(t, keys.CreateRequest{Alias: "alias/one"})
	b := e.create(t, keys.CreateRequest{})
	if _, err := e.svc.Create(ctx, keys.CreateRequest{Alias: "alias/one"}); !errors.Is(err, keys.ErrAliasExists) {
		t.Fatalf("duplicate alias on create: %v", err)
	}
	if len(e.svc.List(ctx)) != 2 {
		t.Fatal("a failed create left a key behind")
	}
	for _, bad := range []string{"one", "alias/", "alias/has space", "alias/coffer/x", "alias/" + string(make([]byte, 300))} {
		if _, err := e.svc.CreateAlias(ctx, bad, b.ID); !errors.Is(err, keys.ErrInvalidArgument) {
			t.Errorf("alias %q: %v", bad, err)
		}
	}
	if _, err := e.svc.CreateAlias(ctx, "alias/two", b.ID); err != nil {
		t.Fatal(err)
	}
	as, _ := e.svc.ListAliases(ctx, b.ID)
	if len(as) != 1 || as[0].Name != "alias/two" {
		t.Fatalf("aliases of b: %+v", as)
	}
	if err := e.svc.DeleteAlias(ctx, "alias/one"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteAlias(ctx, "alias/one"); !errors.Is(err, keys.ErrAliasNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := e.svc.Describe(ctx, a.ID); err != nil {
		t.Fatal("deleting an alias touched its key:", err)
	}
}

func TestReEncryptAndDataKeys(t *testing.T) {
	e := newEnv(t)
	a := e.create(t, keys.CreateRequest{})
	b := e.create(t, keys.CreateRequest{})
	s, _ := e.svc.Encrypt(ctx, a.ID, []byte("move me"), map[string]string{"k": "1"})
	e.svc.Rotate(ctx, a.ID)
	src, dst, err := e.svc.ReEncrypt(ctx, s.Ciphertext, map[string]string{"k": "1"}, "", nil)
	if err != nil || src.KeyVersion != 1 || dst.KeyVersion != 2 || dst.KeyID != a.ID {
		t.Fatalf("reencrypt to primary: %+v %+v %v", src, dst, err)
	}
	_, dst2, err := e.svc.ReEncrypt(ctx, dst.Ciphertext, map[string]string{"k": "1"}, b.ID, map[string]string{"k": "2"})
	if err != nil || dst2.KeyID != b.ID {
		t.Fatalf("reencrypt to b: %v", err)
	}
	o, err := e.svc.Decrypt(ctx, dst2.Ciphertext, map[string]string{"k": "2"}, "")
	if err != nil || string(o.Plaintext) != "move me" {
		t.Fatalf("decrypt re-encrypted: %v", err)
	}
	for _, n := range []int{0, 1, 16, 1024} {
		dk, sealed, err := e.svc.GenerateDataKey(ctx, a.ID, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := n
		if n == 0 {
			want = 32
		}
		o, _ := e.svc.Decrypt(ctx, sealed.Ciphertext, nil, "")
		if len(dk) != want || !bytes.Equal(o.Plaintext, dk) {
			t.Fatalf("data key of %d bytes: len %d", n, len(dk))
		}
	}
	for _, n := range []int{-1, 1025} {
		if _, _, err := e.svc.GenerateDataKey(ctx, a.ID, n, nil); !errors.Is(err, keys.ErrInvalidArgument) {
			t.Errorf("data key %d: %v", n, err)
		}
	}
	if _, err := e.svc.Encrypt(ctx, a.ID, make([]byte, keys.MaxPlaintext+1), nil); !errors.Is(err, keys.ErrTooLarge) {
		t.Fatalf("oversized plaintext: %v", err)
	}
	if _, err := e.svc.Encrypt(ctx, a.ID, make([]byte, keys.MaxPlaintext), nil); err != nil {
		t.Fatalf("max plaintext: %v", err)
	}
}

// TestConcurrentUseAndRotation runs encryptions and decryptions in parallel
// with rotations (run with -race).
func TestConcurrentUseAndRotation(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{})
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				s, err := e.svc.Encrypt(ctx, k.ID, []byte("p"), nil)
				if err == nil {
					_, err = e.svc.Decrypt(ctx, s.Ciphertext, nil, "")
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if _, err := e.svc.Rotate(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if d, _ := e.svc.Describe(ctx, k.ID); d.PrimaryVersion != 21 {
		t.Fatalf("primary %d after 20 rotations", d.PrimaryVersion)
	}
}

func TestParsePeriod(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "12h": 12 * time.Hour, "30m": 30 * time.Minute} {
		if got, err := keys.ParsePeriod(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
		if keys.FormatPeriod(want) != in {
			t.Errorf("format %s", in)
		}
	}
	for _, bad := range []string{"", "d", "-1d", "0d", "banana", "1.5d", "-5m"} {
		if _, err := keys.ParsePeriod(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func benchKey(b *testing.B) (*env, string) {
	e := newEnv(b)
	return e, e.create(b, keys.CreateRequest{}).ID
}

func benchEncrypt(b *testing.B, size int) {
	e, id := benchKey(b)
	p := make([]byte, size)
	ec := map[string]string{"namespace": "prod"}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.svc.Encrypt(ctx, id, p, ec); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchDecrypt(b *testing.B, size int) {
	e, id := benchKey(b)
	ec := map[string]string{"namespace": "prod"}
	s, _ := e.svc.Encrypt(ctx, id, make([]byte, size), ec)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.svc.Decrypt(ctx, s.Ciphertext, ec, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkEncrypt32B(b *testing.B)  { benchEncrypt(b, 32) }
func BenchmarkEncrypt4KiB(b *testing.B) { benchEncrypt(b, 4096) }
func BenchmarkDecrypt32B(b *testing.B)  { benchDecrypt(b, 32) }
func BenchmarkDecrypt4KiB(b *testing.B) { benchDecrypt(b, 4096) }

// TestRunRotatesWithoutRequests: the background loop rotates a due key on
// its own.
func TestRunRotatesWithoutRequests(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{RotationPeriod: "1h"})
	e.clk.add(time.Hour)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.svc.Run(runCtx, 5*time.Millisecond, func(err error) { t.Error(err) }); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.After(5 * time.Second)
	for {
		d, _ := e.svc.Describe(ctx, k.ID)
		if d.PrimaryVersion == 2 {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("no automatic rotation: primary %d", d.PrimaryVersion)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestUseCountSurvivesReload checks that the count of encryptions under a
// version, which forces a rotation at the random-nonce bound, survives a
// reload (a restart or an unseal): with a bound of 10 uses, no version may
// encrypt more than 10 times however often the service is reloaded. Before
// the count was persisted every reload restarted it at zero.
func TestUseCountSurvivesReload(t *testing.T) {
	e := newEnv(t)
	const bound = 10
	svc := keys.New(e.store, keys.WithUseLimits(bound, 4))
	k, err := svc.Create(ctx, keys.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	perVersion := map[uint32]int{}
	for i := 0; i < 60; i++ {
		if i%3 == 0 {
			svc = keys.New(e.store, keys.WithUseLimits(bound, 4))
			if err := svc.Load(ctx); err != nil {
				t.Fatal(err)
			}
		}
		s, err := svc.Encrypt(ctx, k.ID, []byte("p"), nil)
		if err != nil {
			t.Fatal(err)
		}
		perVersion[s.KeyVersion]++
		if n := perVersion[s.KeyVersion]; n > bound {
			t.Fatalf("version %d encrypted %d times across reloads; the bound is %d", s.KeyVersion, n, bound)
		}
		if _, err := svc.Decrypt(ctx, s.Ciphertext, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	if len(perVersion) < 6 {
		t.Fatalf("60 encryptions with a bound of %d made only %d versions", bound, len(perVersion))
	}
}

// TestUseCountRotatesInProcess checks the bound without reloads: the
// version rotates after exactly the bound, and old ciphertexts still open.
func TestUseCountRotatesInProcess(t *testing.T) {
	e := newEnv(t)
	svc := keys.New(e.store, keys.WithUseLimits(5, 2))
	k, err := svc.Create(ctx, keys.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var cts [][]byte
	for i := 0; i < 12; i++ {
		s, err := svc.Encrypt(ctx, k.ID, []byte{byte(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := uint32(i/5 + 1); s.KeyVersion != want {
			t.Fatalf("encryption %d used version %d, want %d", i, s.KeyVersion, want)
		}
		cts = append(cts, s.Ciphertext)
	}
	for i, ct := range cts {
		if o, err := svc.Decrypt(ctx, ct, nil, ""); err != nil || o.Plaintext[0] != byte(i) {
			t.Fatalf("ciphertext %d: %v", i, err)
		}
	}
}

// TestAliasRefusesCredentials: a token or access-key secret pasted into an
// alias (a Vault path, a misplaced argument) is refused on every way in,
// without the error repeating it; an access key id, which is no secret,
// and names that only look alike are fine.
func TestAliasRefusesCredentials(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k, err := e.svc.Create(ctx, keys.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id, secret := credential.NewAccessKey()
	token := credential.New(credential.TokenPrefix)
	for _, c := range []string{token, secret} {
		// Also where another rule would refuse the name and quote it.
		for _, name := range []string{"alias/" + c, "alias/team/" + c + "/x", "alias//" + c, "alias/" + c + "/has space"} {
			if _, err := e.svc.CreateAlias(ctx, name, k.ID); !errors.Is(err, keys.ErrInvalidArgument) || strings.Contains(err.Error(), c) {
				t.Errorf("CreateAlias with a credential: %v", err)
			}
			if _, err := e.svc.Create(ctx, keys.CreateRequest{Alias: name}); !errors.Is(err, keys.ErrInvalidArgument) || strings.Contains(err.Error(), c) {
				t.Errorf("Create with a credential alias: %v", err)
			}
		}
	}
	// One character of the random part changed: the checksum no longer
	// holds. (Not the last character: its low bits are padding.)
	i := len(credential.TokenPrefix) + 5
	c := byte('A')
	if token[i] == 'A' {
		c = 'B'
	}
	altered := token[:i] + string(c) + token[i+1:]
	for _, name := range []string{"alias/" + id, "alias/" + altered, "alias/cft_short"} {
		if _, err := e.svc.CreateAlias(ctx, name, k.ID); err != nil {
			t.Errorf("alias %s: %v", name, err)
		}
	}
}
