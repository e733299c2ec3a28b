package barrier

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// fakeSeal is an auto-unseal for unit tests: AES-GCM under a key in
// memory. The real seals (PKCS#11 on SoftHSM2, TPM on swtpm, transit on a
// second Coffer) are tested in their packages and through the server.
type fakeSeal struct {
	typ        string
	key        []byte
	failUnwrap atomic.Bool
	wrongKey   atomic.Bool // Unwrap answers another key
}

func newFakeSeal(typ string) *fakeSeal {
	k := make([]byte, 32)
	rand.Read(k)
	return &fakeSeal{typ: typ, key: k}
}

func (f *fakeSeal) Type() string { return f.typ }
func (f *fakeSeal) Wrap(_ context.Context, p []byte) ([]byte, error) {
	return sealUnder(f.key, p, "fake")
}
func (f *fakeSeal) Unwrap(_ context.Context, b []byte) ([]byte, error) {
	if f.failUnwrap.Load() {
		return nil, fmt.Errorf("device gone: %w", seal.ErrMisconfigured)
	}
	p, err := openUnder(f.key, b, "fake")
	if err != nil {
		return nil, seal.ErrBlob
	}
	if f.wrongKey.Load() {
		p[0] ^= 1
	}
	return p, nil
}
func (f *fakeSeal) Health(context.Context) error { return nil }
func (f *fakeSeal) Info() map[string]string      { return map[string]string{"fake": f.typ} }
func (f *fakeSeal) Close() error                 { return nil }

func mustPut(t *testing.T, b *Barrier, path, value string) {
	t.Helper()
	if err := b.Apply(ctx, storage.Put(path, []byte(value))); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, b *Barrier, path, want string) {
	t.Helper()
	e, err := b.Get(ctx, path)
	if err != nil || string(e.Value) != want {
		t.Fatalf("%s: %q %v, want %q", path, e.Value, err, want)
	}
}

func unsealWith(b *Barrier, shares []string) (Status, error) {
	var st Status
	var err error
	for _, s := range shares {
		if st, err = b.Unseal(ctx, s); err != nil || !st.Sealed {
			return st, err
		}
	}
	return st, err
}

func rawGet(t *testing.T, be storage.Backend, path string) storage.Entry {
	t.Helper()
	e, err := be.Get(ctx, path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return e
}

// submitAll submits shares to a started attempt of kind until it is done
// or fails.
func submitAll(b *Barrier, kind, nonce string, shares []string) (AttemptResult, error) {
	var res AttemptResult
	var err error
	for _, s := range shares {
		if res, err = b.SubmitAttempt(ctx, kind, nonce, s); err != nil || res.Done {
			return res, err
		}
	}
	return res, err
}

// TestShamirRootIsWrapped: a new store keeps a random root key wrapped in
// core/root; the unseal shares open it, and without core/root they open
// nothing (the shares do not derive the root key any more).
func TestShamirRootIsWrapped(t *testing.T) {
	b, be, shares := initBarrier(t, 3, 2)
	mustPut(t, b, "keys/a", "v")
	var cfg SealConfig
	json.Unmarshal(rawGet(t, be, pathSealConfig).Value, &cfg)
	if cfg.Version != sealConfigVersion || cfg.SealType() != TypeShamir || cfg.Shares != 3 || cfg.Threshold != 2 {
		t.Fatalf("seal config %+v", cfg)
	}
	root := append([]byte(nil), b.ring.root...)
	b.Seal()
	if _, err := unsealWith(b, shares[:2]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.ring.root, root) {
		t.Fatal("another root key after unseal")
	}
	mustRead(t, b, "keys/a", "v")
	// The legacy derivation of these shares is not the root key.
	legacy, _ := combineShares(2, [][]byte{[]byte(shares[0]), []byte(shares[1])})
	if bytes.Equal(legacy, root) {
		t.Fatal("the root key is still derived from the shares")
	}
	b.Seal()
	be.Apply(ctx, storage.Delete(pathRoot))
	if _, err := unsealWith(b, shares[:2]); !errors.Is(err, ErrCorrupt) || !b.Sealed() {
		t.Fatalf("unseal without core/root: %v", err)
	}
}

// legacyStore builds a store as Coffer wrote it before issue 15: no
// version, no core/root, the root key derived from the shares.
func legacyStore(t *testing.T) (storage.Backend, []string) {
	t.Helper()
	root, shares, err := splitRootSecret(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	ring := &keyring{ActiveTerm: 1, root: root, Terms: []*term{{Term: 1, Key: bytes.Repeat([]byte{7}, 32)}}}
	if err := ring.prepare(); err != nil {
		t.Fatal(err)
	}
	sealed, _ := ring.seal()
	be := inmem.New()
	if err := be.Apply(ctx, storage.Put(pathSealConfig, []byte(`{"shares":3,"threshold":2}`)), storage.Put(pathKeyring, sealed)); err != nil {
		t.Fatal(err)
	}
	return be, shares
}

// TestLegacyStoreUnsealsAndRekeyUpgradesIt: a store written before the
// root key was wrapped keeps unsealing with its shares; its first rekey
// writes version 2 and replaces the root key (the old shares derive the old
// one, which would otherwise keep opening the store), re-sealing the
// keyring, so every entry stays readable and the old shares stop working,
// even for someone who reads the store directly.
func TestLegacyStoreUnsealsAndRekeyUpgradesIt(t *testing.T) {
	be, old := legacyStore(t)
	b := New(be)
	if _, err := unsealWith(b, old[1:]); err != nil || b.Sealed() {
		t.Fatalf("legacy unseal: %v", err)
	}
	mustPut(t, b, "keys/a", "before")
	root := append([]byte(nil), b.ring.root...)

	// A foreign share set of the legacy kind must not pass the check (in a
	// version 0 store only the comparison with the root key in memory
	// tells them apart).
	_, foreign, _ := splitRootSecret(3, 2)
	a, err := b.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 4, NewThreshold: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := submitAll(b, Rekey, a.Nonce, foreign[:2]); !errors.Is(err, ErrBadShare) {
		t.Fatalf("foreign shares: %v", err)
	}
	if _, ok := b.AttemptStatus(Rekey); ok {
		t.Fatal("the attempt survived a failed quorum")
	}
	a, _ = b.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 4, NewThreshold: 3})
	res, err := submitAll(b, Rekey, a.Nonce, old[:2])
	if err != nil || !res.Done || len(res.Shares) != 4 {
		t.Fatalf("rekey: %+v %v", res, err)
	}
	var cfg SealConfig
	json.Unmarshal(rawGet(t, be, pathSealConfig).Value, &cfg)
	if cfg.Version != sealConfigVersion || cfg.Shares != 4 || cfg.Threshold != 3 {
		t.Fatalf("config after rekey %+v", cfg)
	}
	b.Seal()
	if _, err := unsealWith(b, old); !errors.Is(err, ErrBadShare) || !b.Sealed() {
		t.Fatalf("old shares after rekey: %v", err)
	}
	b.ResetUnseal()
	if _, err := unsealWith(b, res.Shares[1:]); err != nil || b.Sealed() {
		t.Fatalf("new shares: %v", err)
	}
	if bytes.Equal(b.ring.root, root) {
		t.Fatal("the upgrade kept the root key the old shares derive")
	}
	if _, err := openUnder(root, rawGet(t, be, pathKeyring).Value, pathKeyring); err == nil {
		t.Fatal("the old shares' key still opens the stored keyring")
	}
	mustRead(t, b, "keys/a", "before")
	mustPut(t, b, "keys/b", "after")
	b.Seal()
	if _, err := unsealWith(b, res.Shares[:3]); err != nil || b.Sealed() {
		t.Fatal(err)
	}
	mustRead(t, b, "keys/b", "after")
}

// TestLegacyStoreMigrationReplacesTheRootKey: migrating a version 0 store
// to an auto-unseal replaces the root key the same way.
func TestLegacyStoreMigrationReplacesTheRootKey(t *testing.T) {
	be, old := legacyStore(t)
	b := New(be)
	unsealWith(b, old[:2])
	mustPut(t, b, "keys/a", "v")
	legacy := append([]byte(nil), b.ring.root...)
	b.Seal()
	fs := newFakeSeal("fake")
	b = New(be)
	b.ConfigureSeal(fs, nil)
	b.MigrateSeal(ctx, old[0], 3, 2)
	res, err := b.MigrateSeal(ctx, old[1], 3, 2)
	if err != nil || !res.Done {
		t.Fatalf("migration: %v", err)
	}
	if _, err := openUnder(legacy, rawGet(t, be, pathKeyring).Value, pathKeyring); err == nil {
		t.Fatal("the old shares' key still opens the stored keyring")
	}
	mustRead(t, b, "keys/a", "v")
	b.Seal()
	b = New(be)
	b.ConfigureSeal(fs, nil)
	if err := b.AutoUnseal(ctx); err != nil {
		t.Fatal(err)
	}
	mustRead(t, b, "keys/a", "v")
}

// TestRekeyKeepsOtherReplicasServing: the root key outlives a rekey, so a
// replica unsealed before it keeps reading, writing and rotating.
func TestRekeyKeepsOtherReplicasServing(t *testing.T) {
	b, be, shares := initBarrier(t, 3, 2)
	other := New(be)
	if _, err := unsealWith(other, shares[:2]); err != nil {
		t.Fatal(err)
	}
	a, _ := b.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 2, NewThreshold: 2})
	res, err := submitAll(b, Rekey, a.Nonce, shares[1:])
	if err != nil || !res.Done {
		t.Fatalf("rekey: %v", err)
	}
	mustPut(t, other, "keys/o", "x")
	if _, err := other.RotateKeyring(ctx); err != nil {
		t.Fatalf("rotate on the other replica: %v", err)
	}
	mustRead(t, b, "keys/o", "x")
	b.Seal()
	if _, err := unsealWith(b, res.Shares); err != nil || b.Sealed() {
		t.Fatal(err)
	}
	mustRead(t, b, "keys/o", "x")
}

// TestAttemptNonceAndLifecycle: a submission must name the attempt's
// nonce; one attempt of a kind at a time; cancel and seal discard the
// shares.
func TestAttemptNonceAndLifecycle(t *testing.T) {
	b, _, shares := initBarrier(t, 3, 2)
	a, err := b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot, Params: []byte("pad")})
	if err != nil || a.Required != 2 || len(a.Nonce) != 32 {
		t.Fatalf("begin: %+v %v", a, err)
	}
	if _, err := b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot}); !errors.Is(err, ErrAttemptInProgress) {
		t.Fatalf("second attempt: %v", err)
	}
	wrong := strings.Repeat("0", 32)
	if _, err := b.SubmitAttempt(ctx, GenerateRoot, wrong, shares[0]); !errors.Is(err, ErrNoAttempt) {
		t.Fatalf("wrong nonce: %v", err)
	}
	if _, err := b.SubmitAttempt(ctx, Rekey, a.Nonce, shares[0]); !errors.Is(err, ErrNoAttempt) {
		t.Fatalf("nonce of another kind: %v", err)
	}
	res, err := b.SubmitAttempt(ctx, GenerateRoot, a.Nonce, shares[0])
	if err != nil || res.Progress != 1 || res.Done {
		t.Fatalf("first share: %+v %v", res, err)
	}
	res, _ = b.SubmitAttempt(ctx, GenerateRoot, a.Nonce, shares[0]) // repeated: counts once
	if res.Progress != 1 || res.Done {
		t.Fatalf("repeated share: %+v", res)
	}
	if st, _ := b.AttemptStatus(GenerateRoot); st.Progress != 1 || st.Params != nil {
		t.Fatalf("status %+v", st)
	}
	res, err = b.SubmitAttempt(ctx, GenerateRoot, a.Nonce, shares[2])
	if err != nil || !res.Done || string(res.Params) != "pad" {
		t.Fatalf("quorum: %+v %v", res, err)
	}
	if _, ok := b.AttemptStatus(GenerateRoot); ok {
		t.Fatal("attempt left after completion")
	}
	// Seal discards an attempt in progress, and a sealed barrier starts none.
	a, _ = b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	b.SubmitAttempt(ctx, GenerateRoot, a.Nonce, shares[0])
	b.Seal()
	if _, ok := b.AttemptStatus(GenerateRoot); ok {
		t.Fatal("attempt survived a seal")
	}
	if _, err := b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot}); !errors.Is(err, ErrSealed) {
		t.Fatalf("begin while sealed: %v", err)
	}
	if _, err := b.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 2, NewThreshold: 3}); err == nil {
		t.Fatal("threshold above shares accepted")
	}
}

// TestForeignSharesCancelGenerateRoot: a quorum of another store's shares
// ends the attempt with an error and changes nothing.
func TestForeignSharesCancelGenerateRoot(t *testing.T) {
	b, _, own := initBarrier(t, 3, 2)
	_, _, foreign := initBarrier(t, 3, 2)
	a, _ := b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	if _, err := submitAll(b, GenerateRoot, a.Nonce, foreign[:2]); !errors.Is(err, ErrBadShare) {
		t.Fatalf("foreign quorum: %v", err)
	}
	// Mixed: one own, one foreign (distinct ids).
	a, _ = b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	if _, err := submitAll(b, GenerateRoot, a.Nonce, []string{own[0], foreign[1]}); !errors.Is(err, ErrBadShare) {
		t.Fatalf("mixed quorum: %v", err)
	}
	a, _ = b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	if res, err := submitAll(b, GenerateRoot, a.Nonce, own[1:]); err != nil || !res.Done {
		t.Fatalf("own quorum: %v", err)
	}
}

func autoBarrier(t *testing.T, s seal.Seal, n, k int) (*Barrier, storage.Backend, []string) {
	t.Helper()
	be := inmem.New()
	b := New(be)
	b.ConfigureSeal(s, nil)
	rec, err := b.Initialize(ctx, n, k)
	if err != nil {
		t.Fatal(err)
	}
	return b, be, rec
}

// TestAutoUnsealAndRecoveryShares: under an auto-unseal the seal wraps the
// root key; recovery shares are not unseal shares (they derive nothing the
// keyring opens with) but authorise an unseal after a manual seal, and
// foreign recovery shares are refused.
func TestAutoUnsealAndRecoveryShares(t *testing.T) {
	fs := newFakeSeal("fake")
	b, be, rec := autoBarrier(t, fs, 5, 3)
	mustPut(t, b, "keys/a", "v")
	st, _ := b.Status(ctx)
	if st.SealType() != "fake" || st.RecoveryShares != 5 || st.RecoveryThreshold != 3 || st.Shares != 0 || st.MigrationPending {
		t.Fatalf("status %+v", st)
	}
	b.Seal()
	// A restart: a fresh barrier unseals through the seal alone.
	b = New(be)
	b.ConfigureSeal(fs, nil)
	if err := b.AutoUnseal(ctx); err != nil || b.Sealed() {
		t.Fatalf("auto-unseal: %v", err)
	}
	mustRead(t, b, "keys/a", "v")
	// Recovery shares are no unseal shares: as Shamir shares of a version
	// 2 store they would be a KEK that opens nothing.
	b.Seal()
	_, _, foreign := autoBarrier(t, newFakeSeal("fake"), 5, 3)
	if _, err := unsealWith(b, foreign[:3]); !errors.Is(err, ErrBadShare) || !b.Sealed() {
		t.Fatalf("foreign recovery shares: %v", err)
	}
	if _, err := unsealWith(b, rec[2:]); err != nil || b.Sealed() {
		t.Fatalf("recovery-share unseal: %v", err)
	}
	// A seal with another key is refused with the seal's error.
	other := New(be)
	other.ConfigureSeal(newFakeSeal("fake"), nil)
	if err := other.AutoUnseal(ctx); !errors.Is(err, seal.ErrBlob) || !errors.Is(err, ErrSealUnavailable) || !other.Sealed() {
		t.Fatalf("another seal key: %v", err)
	}
}

// TestRecoveryRecordIsBoundToTheRootKey: core/recovery from another store
// does not open under this root key, so a storage writer cannot swap in a
// verifier of shares they hold.
func TestRecoveryRecordIsBoundToTheRootKey(t *testing.T) {
	fs := newFakeSeal("fake")
	b, be, _ := autoBarrier(t, fs, 3, 2)
	_, be2, theirs := autoBarrier(t, fs, 3, 2)
	be.Apply(ctx, storage.Put(pathRecovery, rawGet(t, be2, pathRecovery).Value))
	a, _ := b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	if _, err := submitAll(b, GenerateRoot, a.Nonce, theirs[:2]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("swapped recovery record: %v", err)
	}
}

// TestRecoveryRekey: rekeying under an auto-unseal replaces the recovery
// shares and leaves the wrapped root key alone.
func TestRecoveryRekey(t *testing.T) {
	fs := newFakeSeal("fake")
	b, be, rec := autoBarrier(t, fs, 3, 2)
	blob := rawGet(t, be, pathRoot).Value
	a, _ := b.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 5, NewThreshold: 2})
	res, err := submitAll(b, Rekey, a.Nonce, rec[:2])
	if err != nil || !res.Done || len(res.Shares) != 5 {
		t.Fatalf("rekey: %v", err)
	}
	if !bytes.Equal(rawGet(t, be, pathRoot).Value, blob) {
		t.Fatal("a recovery rekey rewrapped the root key")
	}
	a, _ = b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	if _, err := submitAll(b, GenerateRoot, a.Nonce, rec[:2]); !errors.Is(err, ErrBadShare) {
		t.Fatalf("old recovery shares after a rekey: %v", err)
	}
	a, _ = b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	if r, err := submitAll(b, GenerateRoot, a.Nonce, res.Shares[3:]); err != nil || !r.Done {
		t.Fatalf("new recovery shares: %v", err)
	}
}

// TestMigrateShamirToAutoAndBack: the whole round trip with data written
// at each step; each migration needs the quorum of the shares in force and
// keeps the root key.
func TestMigrateShamirToAutoAndBack(t *testing.T) {
	b, be, shares := initBarrier(t, 3, 2)
	mustPut(t, b, "keys/1", "one")
	root := append([]byte(nil), b.ring.root...)
	b.Seal()

	// Restart with an auto-unseal configured: a migration is pending.
	fs := newFakeSeal("fake")
	b = New(be)
	b.ConfigureSeal(fs, nil)
	st, _ := b.Status(ctx)
	if !st.MigrationPending || st.Configured != "fake" || st.SealType() != TypeShamir {
		t.Fatalf("status %+v", st)
	}
	if _, err := b.Unseal(ctx, shares[0]); !errors.Is(err, ErrMigrationPending) {
		t.Fatalf("plain unseal during a migration: %v", err)
	}
	if err := b.AutoUnseal(ctx); !errors.Is(err, ErrMigrationPending) {
		t.Fatalf("auto-unseal during a migration: %v", err)
	}
	res, err := b.MigrateSeal(ctx, shares[0], 4, 2)
	if err != nil || res.Done || res.Progress != 1 {
		t.Fatalf("first share: %+v %v", res, err)
	}
	if _, err := b.MigrateSeal(ctx, shares[1], 5, 2); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("other counts mid-migration: %v", err)
	}
	res, err = b.MigrateSeal(ctx, shares[1], 4, 2)
	if err != nil || !res.Done || len(res.RecoveryShares) != 4 || res.Shares != nil || b.Sealed() {
		t.Fatalf("migration: %+v %v", res, err)
	}
	mustRead(t, b, "keys/1", "one")
	mustPut(t, b, "keys/2", "two")
	if !bytes.Equal(b.ring.root, root) {
		t.Fatal("the migration changed the root key")
	}
	b.Seal()
	b = New(be)
	b.ConfigureSeal(fs, nil)
	if err := b.AutoUnseal(ctx); err != nil {
		t.Fatalf("auto-unseal after migration: %v", err)
	}
	// The old unseal shares are gone with Shamir.
	a, _ := b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	if _, err := submitAll(b, GenerateRoot, a.Nonce, shares[:2]); err == nil {
		t.Fatal("old unseal shares authorise under the auto-unseal")
	}
	b.Seal()

	// And back: Shamir configured, the auto-unseal as previous seal; the
	// recovery shares authorise.
	b = New(be)
	b.ConfigureSeal(nil, nil)
	if _, err := b.MigrateSeal(ctx, res.RecoveryShares[0], 3, 2); !errors.Is(err, ErrSealUnavailable) {
		t.Fatalf("migration away from an auto-unseal without previous_seal: %v", err)
	}
	b.ConfigureSeal(nil, fs)
	// Foreign recovery shares end the migration with nothing changed.
	_, _, foreign := autoBarrier(t, fs, 4, 2)
	b.MigrateSeal(ctx, foreign[0], 3, 2)
	if _, err := b.MigrateSeal(ctx, foreign[1], 3, 2); !errors.Is(err, ErrBadShare) || !b.Sealed() {
		t.Fatalf("foreign recovery shares: %v", err)
	}
	b.MigrateSeal(ctx, res.RecoveryShares[3], 3, 2)
	back, err := b.MigrateSeal(ctx, res.RecoveryShares[1], 3, 2)
	if err != nil || !back.Done || len(back.Shares) != 3 {
		t.Fatalf("migration back: %+v %v", back, err)
	}
	if _, err := be.Get(ctx, pathRecovery); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("core/recovery left under Shamir: %v", err)
	}
	mustRead(t, b, "keys/2", "two")
	b.Seal()
	b = New(be)
	if _, err := unsealWith(b, back.Shares[:2]); err != nil || b.Sealed() {
		t.Fatalf("unseal with the new shares: %v", err)
	}
	mustRead(t, b, "keys/1", "one")
	mustRead(t, b, "keys/2", "two")
}

// TestMigrateAutoToAuto keeps the recovery shares.
func TestMigrateAutoToAuto(t *testing.T) {
	from, to := newFakeSeal("fake-a"), newFakeSeal("fake-b")
	b, be, rec := autoBarrier(t, from, 3, 2)
	mustPut(t, b, "keys/a", "v")
	b.Seal()
	b = New(be)
	b.ConfigureSeal(to, from)
	b.MigrateSeal(ctx, rec[0], 0, 0)
	res, err := b.MigrateSeal(ctx, rec[1], 0, 0)
	if err != nil || !res.Done || res.RecoveryShares != nil || res.RecoveryThreshold != 2 {
		t.Fatalf("migration: %+v %v", res, err)
	}
	b.Seal()
	b = New(be)
	b.ConfigureSeal(to, nil)
	if err := b.AutoUnseal(ctx); err != nil {
		t.Fatal(err)
	}
	mustRead(t, b, "keys/a", "v")
	a, _ := b.BeginAttempt(ctx, Attempt{Kind: GenerateRoot})
	if r, err := submitAll(b, GenerateRoot, a.Nonce, rec[1:]); err != nil || !r.Done {
		t.Fatalf("recovery shares after the migration: %v", err)
	}
}

// failingApply fails every Apply.
type failingApply struct{ storage.Backend }

func (failingApply) Apply(context.Context, ...storage.Op) error { return errors.New("disk full") }

// TestFailedMigrationChangesNothing: a new seal that wraps but cannot
// unwrap, or a store that cannot write, leaves the old seal in force.
func TestFailedMigrationChangesNothing(t *testing.T) {
	b, be, shares := initBarrier(t, 3, 2)
	mustPut(t, b, "keys/a", "v")
	b.Seal()
	before := map[string][]byte{}
	for _, p := range []string{pathSealConfig, pathRoot, pathKeyring} {
		before[p] = rawGet(t, be, p).Value
	}
	check := func(what string) {
		t.Helper()
		for p, v := range before {
			if !bytes.Equal(rawGet(t, be, p).Value, v) {
				t.Fatalf("%s changed %s", what, p)
			}
		}
		if _, err := be.Get(ctx, pathRecovery); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("%s wrote core/recovery", what)
		}
	}

	broken := newFakeSeal("fake")
	broken.failUnwrap.Store(true)
	m := New(be)
	m.ConfigureSeal(broken, nil)
	m.MigrateSeal(ctx, shares[0], 0, 0)
	if _, err := m.MigrateSeal(ctx, shares[1], 0, 0); !errors.Is(err, ErrSealUnavailable) || !m.Sealed() {
		t.Fatalf("unverifiable seal: %v", err)
	}
	check("a seal that cannot unwrap")

	liar := newFakeSeal("fake")
	liar.wrongKey.Store(true)
	m = New(be)
	m.ConfigureSeal(liar, nil)
	m.MigrateSeal(ctx, shares[0], 0, 0)
	if _, err := m.MigrateSeal(ctx, shares[1], 0, 0); !errors.Is(err, ErrSealUnavailable) || !m.Sealed() {
		t.Fatalf("a seal that unwraps another key: %v", err)
	}
	check("a seal that unwraps another key")

	m = New(failingApply{be})
	m.ConfigureSeal(newFakeSeal("fake"), nil)
	m.MigrateSeal(ctx, shares[0], 0, 0)
	if _, err := m.MigrateSeal(ctx, shares[1], 0, 0); err == nil || !m.Sealed() {
		t.Fatalf("failed write: %v", err)
	}
	check("a failed write")

	// The old seal still works.
	b = New(be)
	if _, err := unsealWith(b, shares[:2]); err != nil || b.Sealed() {
		t.Fatal(err)
	}
	mustRead(t, b, "keys/a", "v")
	if _, err := b.MigrateSeal(ctx, shares[0], 0, 0); !errors.Is(err, ErrNoMigration) {
		t.Fatalf("migrate without a pending migration: %v", err)
	}
}

// TestConcurrentRekeysOneWins: two replicas rekeying at once: the
// compare-and-swap lets exactly one commit, and the shares it returned
// are the ones in force.
func TestConcurrentRekeysOneWins(t *testing.T) {
	b, be, shares := initBarrier(t, 3, 2)
	other := New(be)
	unsealWith(other, shares[:2])
	a1, _ := b.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 2, NewThreshold: 2})
	a2, _ := other.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 2, NewThreshold: 2})
	b.SubmitAttempt(ctx, Rekey, a1.Nonce, shares[0])
	other.SubmitAttempt(ctx, Rekey, a2.Nonce, shares[0])
	// Both read the seal configuration; b commits first.
	r1, err := b.SubmitAttempt(ctx, Rekey, a1.Nonce, shares[1])
	if err != nil || !r1.Done {
		t.Fatal(err)
	}
	// other's quorum now checks against the new configuration: the old
	// shares no longer open core/root.
	if _, err := other.SubmitAttempt(ctx, Rekey, a2.Nonce, shares[1]); err == nil {
		t.Fatal("a second rekey with the replaced shares succeeded")
	}
	b.Seal()
	if _, err := unsealWith(b, r1.Shares); err != nil || b.Sealed() {
		t.Fatalf("the winner's shares: %v", err)
	}
}

// TestAutoUnsealRefusesShortKey: a seal that returns something other than
// a 32-byte key is refused before it reaches the keyring.
func TestAutoUnsealRefusesShortKey(t *testing.T) {
	fs := newFakeSeal("fake")
	_, be, _ := autoBarrier(t, fs, 1, 1)
	var r storedRoot
	json.Unmarshal(rawGet(t, be, pathRoot).Value, &r)
	r.Blob, _ = sealUnder(fs.key, []byte("short"), "fake")
	raw, _ := json.Marshal(r)
	be.Apply(ctx, storage.Put(pathRoot, raw))
	b := New(be)
	b.ConfigureSeal(fs, nil)
	if err := b.AutoUnseal(ctx); !errors.Is(err, ErrCorrupt) || !b.Sealed() {
		t.Fatalf("short key: %v", err)
	}
}

// FuzzRootRecord: core/root, core/recovery and the Shamir blob are read
// from storage a writer may control; no input panics or opens.
func FuzzRootRecord(f *testing.F) {
	b, be, shares := initBarrier(f, 1, 1)
	genuine, err := be.Get(ctx, pathRoot)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(genuine.Value)
	f.Add([]byte(`{"version":1,"seal":"shamir","blob":"AQ=="}`))
	f.Add([]byte(`{"version":1,"seal":"shamir"}`))
	b.Seal()
	f.Fuzz(func(t *testing.T, data []byte) {
		be.Apply(ctx, storage.Put(pathRoot, data))
		b.ResetUnseal()
		if _, err := b.Unseal(ctx, shares[0]); err == nil {
			// Only the genuine record opens.
			b.Seal()
			var r storedRoot
			if json.Unmarshal(data, &r) != nil || r.Seal != TypeShamir {
				t.Fatalf("unsealed with %q", data)
			}
		}
		if _, err := unwrapWithKEK(make([]byte, 32), data); err == nil {
			t.Fatalf("an all-zero KEK opened %q", data)
		}
	})
}

// bumpSealConfig rewrites core/seal-config (same content, new revision)
// just before the first conditional batch that writes it, as a rekey or
// migration committed by another replica in between would.
type bumpSealConfig struct {
	storage.Backend
	done atomic.Bool
}

func (r *bumpSealConfig) Apply(ctx context.Context, ops ...storage.Op) error {
	for _, op := range ops {
		if op.Key == pathSealConfig && op.IfRevision != storage.AnyRevision && r.done.CompareAndSwap(false, true) {
			e, err := r.Backend.Get(ctx, pathSealConfig)
			if err != nil {
				return err
			}
			if err := r.Backend.Apply(ctx, storage.Put(pathSealConfig, e.Value)); err != nil {
				return err
			}
		}
	}
	return r.Backend.Apply(ctx, ops...)
}

// TestRekeyLosesToAConcurrentChange: a rekey whose seal configuration
// changed after it was read commits nothing (compare-and-swap), and the
// shares in force keep working.
func TestRekeyLosesToAConcurrentChange(t *testing.T) {
	_, be, shares := initBarrier(t, 3, 2)
	racy := &bumpSealConfig{Backend: be}
	b := New(racy)
	unsealWith(b, shares[:2])
	a, _ := b.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 2, NewThreshold: 2})
	if _, err := submitAll(b, Rekey, a.Nonce, shares[:2]); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("rekey over a concurrent change: %v", err)
	}
	b.Seal()
	if _, err := unsealWith(b, shares[1:]); err != nil || b.Sealed() {
		t.Fatalf("the shares in force: %v", err)
	}
}

// slowSeal blocks Unwrap until release is closed.
type slowSeal struct {
	*fakeSeal
	entered chan struct{}
	release chan struct{}
}

func (s *slowSeal) Unwrap(ctx context.Context, b []byte) ([]byte, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.fakeSeal.Unwrap(ctx, b)
}

// TestStatusAnswersDuringSlowAutoUnseal: the device is asked without the
// barrier's lock, so status (seal-status, /readyz, metrics) and Seal do not
// wait behind a slow HSM or an unreachable unsealing Coffer.
func TestStatusAnswersDuringSlowAutoUnseal(t *testing.T) {
	fs := newFakeSeal("fake")
	_, be, _ := autoBarrier(t, fs, 1, 1)
	slow := &slowSeal{fakeSeal: fs, entered: make(chan struct{}, 1), release: make(chan struct{})}
	b := New(be)
	b.ConfigureSeal(slow, nil)
	done := make(chan error, 1)
	go func() { done <- b.AutoUnseal(ctx) }()
	<-slow.entered
	got := make(chan Status, 1)
	go func() {
		st, _ := b.Status(ctx)
		b.Seal()
		got <- st
	}()
	select {
	case st := <-got:
		if !st.Sealed || st.Configured != "fake" || st.MigrationPending {
			t.Fatalf("status during the unwrap: %+v", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("status or seal waited for the device")
	}
	close(slow.release)
	if err := <-done; err != nil || b.Sealed() {
		t.Fatalf("auto-unseal after the device answered: %v", err)
	}
}

// TestAutoUnsealWipesPendingShares: recovery shares submitted while an
// auto-unseal succeeds are wiped, not kept for a later unseal.
func TestAutoUnsealWipesPendingShares(t *testing.T) {
	fs := newFakeSeal("fake")
	_, be, rec := autoBarrier(t, fs, 3, 2)
	b := New(be)
	b.ConfigureSeal(fs, nil)
	if st, err := b.Unseal(ctx, rec[0]); err != nil || st.Progress != 1 {
		t.Fatalf("one recovery share: %+v %v", st, err)
	}
	if err := b.AutoUnseal(ctx); err != nil {
		t.Fatal(err)
	}
	if len(b.pending) != 0 {
		t.Fatalf("%d shares kept after the auto-unseal", len(b.pending))
	}
}

// lostAnswer applies a batch and then reports an error, as a store whose
// answer was lost in transit (etcd unreachable after the commit) would.
type lostAnswer struct {
	storage.Backend
	apply bool // apply the batch before failing
}

func (l lostAnswer) Apply(ctx context.Context, ops ...storage.Op) error {
	if l.apply {
		if err := l.Backend.Apply(ctx, ops...); err != nil {
			return err
		}
	}
	return errors.New("connection reset")
}

// TestRekeyWithALostAnswer: a batch that was committed although the store
// reported an error is recognised as committed, so the new shares (the
// only copy) are returned; one that was not says nothing changed.
func TestRekeyWithALostAnswer(t *testing.T) {
	_, be, shares := initBarrier(t, 3, 2)
	for _, applied := range []bool{true, false} {
		b := New(lostAnswer{Backend: be, apply: applied})
		unsealWith(b, shares[:2])
		a, _ := b.BeginAttempt(ctx, Attempt{Kind: Rekey, NewShares: 3, NewThreshold: 2})
		res, err := submitAll(b, Rekey, a.Nonce, shares[:2])
		if applied {
			if err != nil || !res.Done || len(res.Shares) != 3 {
				t.Fatalf("committed with a lost answer: %v", err)
			}
			shares = res.Shares // in force from now on
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "nothing was changed") {
			t.Fatalf("not committed: %v", err)
		}
	}
	b := New(be)
	if _, err := unsealWith(b, shares[1:]); err != nil || b.Sealed() {
		t.Fatalf("the returned shares: %v", err)
	}
}
