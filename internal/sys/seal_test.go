package sys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// testSeal is an in-memory auto-unseal whose Unwrap can be made to fail.
type testSeal struct {
	aead    cipher.AEAD
	mu      sync.Mutex
	fail    error // returned by Unwrap while set
	unwraps atomic.Int32
	// wrapped is set by Wrap; with keyless, Health fails until then (a
	// key generate_key makes at init).
	wrapped, keyless atomic.Bool
}

func newTestSeal(t *testing.T) *testSeal {
	k := make([]byte, 32)
	rand.Read(k)
	b, _ := aes.NewCipher(k)
	a, _ := cipher.NewGCM(b)
	return &testSeal{aead: a}
}

func (s *testSeal) setFail(err error) { s.mu.Lock(); s.fail = err; s.mu.Unlock() }
func (s *testSeal) Type() string      { return "test" }
func (s *testSeal) Wrap(_ context.Context, p []byte) ([]byte, error) {
	s.wrapped.Store(true)
	n := make([]byte, 12)
	rand.Read(n)
	return s.aead.Seal(n, n, p, nil), nil
}
func (s *testSeal) Unwrap(_ context.Context, b []byte) ([]byte, error) {
	s.unwraps.Add(1)
	s.mu.Lock()
	err := s.fail
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.aead.Open(nil, b[:12], b[12:], nil)
}
func (s *testSeal) Health(context.Context) error {
	if s.keyless.Load() && !s.wrapped.Load() {
		return errors.New("no key yet")
	}
	return nil
}
func (s *testSeal) Info() map[string]string { return map[string]string{"where": "memory"} }
func (s *testSeal) Close() error            { return nil }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// autoSys is a Sys over be with seal configured and its auto-unseal loop
// running until the test ends.
func autoSys(t *testing.T, be storage.Backend, s seal.Seal) *Sys {
	t.Helper()
	bar := barrier.New(be)
	bar.ConfigureSeal(s, nil)
	sy := New(bar, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sy.RunAutoUnseal(ctx, quiet); close(done) }()
	t.Cleanup(func() { cancel(); <-done; sy.Seal() })
	return sy
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAutoUnsealLifecycle: init under an auto-unseal returns recovery
// shares and leaves the server unsealed; a restart unseals by itself; an
// operator's seal holds (the loop does not undo it) until a quorum of
// recovery shares unseals.
func TestAutoUnsealLifecycle(t *testing.T) {
	ctx := context.Background()
	be := inmem.New()
	ts := newTestSeal(t)
	ts.keyless.Store(true) // the key comes with the init, as with generate_key
	s := autoSys(t, be, ts)
	eventually(t, "the first health check", func() bool { return !s.SealHealth().CheckedAt.IsZero() })
	if st, _ := s.Status(ctx); st.Initialized || st.ConfiguredType != "test" || st.Seal.Healthy {
		t.Fatalf("before init: %+v %+v", st, st.Seal)
	}
	ini, err := s.Init(ctx, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	// The health check runs again at once, not at its next period.
	eventually(t, "a healthy seal after init", func() bool { return s.SealHealth().Healthy })
	if len(ini.Shares) != 0 || len(ini.RecoveryShares) != 3 || ini.Type != "test" || s.Sealed() {
		t.Fatalf("init: %+v sealed=%v", ini, s.Sealed())
	}
	st, _ := s.Status(ctx)
	if st.Type != "test" || st.RecoveryThreshold != 2 || st.Seal == nil || st.Seal.UnsealDuration <= 0 {
		t.Fatalf("status %+v %+v", st, st.Seal)
	}

	// A restart: a second Sys over the same store unseals by itself.
	r := autoSys(t, be, ts)
	eventually(t, "the auto-unseal after a restart", func() bool { return !r.Sealed() })
	if p, err := r.Tokens.Lookup(ini.RootToken, netip.Addr{}); err != nil || !p.Root {
		t.Fatalf("root token after the auto-unseal: %v", err)
	}

	r.Seal()
	before := ts.unwraps.Load()
	time.Sleep(2500 * time.Millisecond) // two and a half loop turns
	if !r.Sealed() || ts.unwraps.Load() != before {
		t.Fatalf("the loop undid an operator's seal (sealed=%v, unwraps %d -> %d)", r.Sealed(), before, ts.unwraps.Load())
	}
	if h := r.SealHealth(); !h.SealedByOperator || h.Retrying {
		t.Fatalf("health after a manual seal: %+v", h)
	}
	if _, err := r.Unseal(ctx, ini.RecoveryShares[0]); err != nil || !r.Sealed() {
		t.Fatalf("one recovery share: %v", err)
	}
	if _, err := r.Unseal(ctx, ini.RecoveryShares[2]); err != nil || r.Sealed() {
		t.Fatalf("recovery-share unseal: %v", err)
	}
	if h := r.SealHealth(); h.SealedByOperator || !h.Retrying {
		t.Fatalf("health after the recovery unseal: %+v", h)
	}
}

// TestAutoUnsealRetriesTransientFailures: an unreachable seal is retried
// with backoff until it answers; each failure is counted and said.
func TestAutoUnsealRetriesTransientFailures(t *testing.T) {
	ctx := context.Background()
	be := inmem.New()
	ts := newTestSeal(t)
	s := autoSys(t, be, ts)
	if _, err := s.Init(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	ts.setFail(errors.New("connection refused"))
	r := autoSys(t, be, ts)
	eventually(t, "two failed attempts", func() bool { return r.SealHealth().Failures >= 2 })
	h := r.SealHealth()
	if !r.Sealed() || !h.Retrying || !strings.Contains(h.LastUnsealError, "connection refused") {
		t.Fatalf("while failing: sealed=%v %+v", r.Sealed(), h)
	}
	ts.setFail(nil)
	eventually(t, "the auto-unseal once the seal answers", func() bool { return !r.Sealed() })
	if r.SealHealth().LastUnsealError != "" {
		t.Fatal("the last error outlived the success")
	}
}

// TestAutoUnsealStopsOnMisconfiguration: a wrong PIN is not retried (a
// real HSM locks the token after a few).
func TestAutoUnsealStopsOnMisconfiguration(t *testing.T) {
	ctx := context.Background()
	be := inmem.New()
	ts := newTestSeal(t)
	if _, err := autoSys(t, be, ts).Init(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	ts.setFail(fmt.Errorf("the PIN was refused: %w", seal.ErrMisconfigured))
	r := autoSys(t, be, ts)
	eventually(t, "the first failure", func() bool { return r.SealHealth().Failures == 1 })
	time.Sleep(2500 * time.Millisecond)
	h := r.SealHealth()
	if h.Failures != 1 || h.Retrying || !r.Sealed() || !strings.Contains(h.LastUnsealError, "restart") {
		t.Fatalf("after a misconfiguration: %+v", h)
	}
}

// TestAutoUnsealFailsClosedOnAudit: a successful auto-unseal that the
// audit trail cannot record is undone.
func TestAutoUnsealFailsClosedOnAudit(t *testing.T) {
	ctx := context.Background()
	be := inmem.New()
	ts := newTestSeal(t)
	if _, err := autoSys(t, be, ts).Init(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	bar := barrier.New(be)
	bar.ConfigureSeal(ts, nil)
	r := New(bar, nil)
	var recorded []error
	r.OnAutoUnseal = func(_ context.Context, err error) error {
		recorded = append(recorded, err)
		return errors.New("audit disk full")
	}
	err := r.AutoUnseal(ctx)
	if err == nil || !strings.Contains(err.Error(), "audit") || !r.Sealed() || !bar.Sealed() {
		t.Fatalf("unrecorded auto-unseal: %v sealed=%v", err, r.Sealed())
	}
	if len(recorded) != 1 || recorded[0] != nil {
		t.Fatalf("recorded %v", recorded)
	}
	r.OnAutoUnseal = func(_ context.Context, err error) error { recorded = append(recorded, err); return nil }
	ts.setFail(errors.New("device gone"))
	if err := r.AutoUnseal(ctx); err == nil || len(recorded) != 2 || recorded[1] == nil {
		t.Fatalf("a failure is recorded too: %v %v", err, recorded)
	}
}

// TestAutoUnsealWaitsForMigration: with a migration pending the loop does
// not touch the seal and says what to do.
func TestAutoUnsealWaitsForMigration(t *testing.T) {
	ctx := context.Background()
	be := inmem.New()
	sh := New(barrier.New(be), nil)
	if _, err := sh.Init(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	ts := newTestSeal(t)
	r := autoSys(t, be, ts)
	eventually(t, "the migration notice", func() bool {
		return strings.Contains(r.SealHealth().LastUnsealError, "migrate-seal")
	})
	if ts.unwraps.Load() != 0 || !r.Sealed() {
		t.Fatalf("unwraps %d, sealed %v", ts.unwraps.Load(), r.Sealed())
	}
	st, _ := r.Status(ctx)
	if !st.MigrationPending || st.Type != "shamir" || st.ConfiguredType != "test" {
		t.Fatalf("status %+v", st)
	}
}

// TestDecodeRootToken: the pad must be the attempt's.
func TestDecodeRootToken(t *testing.T) {
	for _, c := range []struct{ enc, otp string }{{"!", "AAAA"}, {"AAAA", "!"}, {"AAAA", "AAAAAAAA"}} {
		if _, err := DecodeRootToken(c.enc, c.otp); err == nil {
			t.Errorf("%q with %q decoded", c.enc, c.otp)
		}
	}
}

// TestAutoUnsealRetriesABlobRarely: a blob the seal's key does not open
// (another key label, changed PCRs) is retried only every few minutes: a
// configuration fix needs a restart anyway.
func TestAutoUnsealRetriesABlobRarely(t *testing.T) {
	ctx := context.Background()
	be := inmem.New()
	ts := newTestSeal(t)
	if _, err := autoSys(t, be, ts).Init(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	ts.setFail(fmt.Errorf("another key label: %w", seal.ErrBlob))
	r := autoSys(t, be, ts)
	eventually(t, "the first failure", func() bool { return r.SealHealth().Failures == 1 })
	time.Sleep(2500 * time.Millisecond)
	h := r.SealHealth()
	if h.Failures != 1 || !h.Retrying || !strings.Contains(h.LastUnsealError, "retried every 5m0s") {
		t.Fatalf("after a blob the key does not open: %+v", h)
	}
}

// TestAutoUnsealRefusedAfterOperatorSeal: an attempt that reaches
// AutoUnseal after an operator's seal (it passed the loop's check first)
// does not undo the seal.
func TestAutoUnsealRefusedAfterOperatorSeal(t *testing.T) {
	ctx := context.Background()
	be := inmem.New()
	ts := newTestSeal(t)
	bar := barrier.New(be)
	bar.ConfigureSeal(ts, nil)
	s := New(bar, nil)
	if _, err := s.Init(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	s.Seal()
	if err := s.AutoUnseal(ctx); !errors.Is(err, errSealedByOperator) || !s.Sealed() {
		t.Fatalf("auto-unseal after an operator's seal: %v sealed=%v", err, s.Sealed())
	}
}

// failListAfterRoot lets every call through until a batch writes
// core/root, and fails List after that (loading the caches fails).
type failListAfterRoot struct {
	storage.Backend
	failing atomic.Bool
}

func (f *failListAfterRoot) Apply(ctx context.Context, ops ...storage.Op) error {
	err := f.Backend.Apply(ctx, ops...)
	for _, op := range ops {
		if err == nil && op.Key == "core/root" {
			f.failing.Store(true)
		}
	}
	return err
}

func (f *failListAfterRoot) List(ctx context.Context, prefix string) ([]string, error) {
	if f.failing.Load() {
		return nil, errors.New("storage hiccup")
	}
	return f.Backend.List(ctx, prefix)
}

// TestMigrateSealAnswersTheSharesWhenLoadingFails: once a migration is
// committed its new shares are the only copy: a failure to load the
// caches afterwards leaves the server sealed but still answers them.
func TestMigrateSealAnswersTheSharesWhenLoadingFails(t *testing.T) {
	ctx := context.Background()
	be := inmem.New()
	ini, err := New(barrier.New(be), nil).Init(ctx, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	flaky := &failListAfterRoot{Backend: be}
	bar := barrier.New(flaky)
	bar.ConfigureSeal(newTestSeal(t), nil)
	s := New(bar, nil)
	s.MigrateSeal(ctx, MigrateSealRequest{Share: ini.Shares[0]})
	res, err := s.MigrateSeal(ctx, MigrateSealRequest{Share: ini.Shares[1]})
	if err != nil || !res.Complete || len(res.RecoveryShares) != 3 {
		t.Fatalf("committed migration: %+v %v", res, err)
	}
	if !s.Sealed() || !strings.Contains(s.SealHealth().LastUnsealError, "loading state") {
		t.Fatalf("after the failed load: sealed=%v %+v", s.Sealed(), s.SealHealth())
	}
}
