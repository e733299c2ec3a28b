package barrier

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/internal/storage"
)

// The root key and what protects it (version 2 stores, docs/formats.md):
//
//	core/seal-config  plaintext JSON SealConfig: version 2, the seal type and
//	                  the unseal or recovery share counts
//	core/root         JSON storedRoot: the seal type and the wrapped root key
//	                  (Shamir: nonce | AES-256-GCM(KEK, root, AAD "core/root")
//	                  with KEK = HKDF(unseal secret, infoShamirKEK); an
//	                  auto-unseal: the blob its Wrap returned)
//	core/recovery     nonce | AES-256-GCM(root, recoveryRecord, AAD
//	                  "core/recovery"), under an auto-unseal only
//
// The root key is random and outlives rekeys and seal migrations: only its
// wrapping changes, so replicas that hold it keep serving, and the keyring
// it seals is never rewritten by them. A version 0 store (before issue 15)
// has no core/root: its root key is derived from the unseal secret, until
// its first rekey or migration writes version 2.

// TypeShamir is the seal type of unseal shares.
const TypeShamir = "shamir"

const (
	pathRoot          = "core/root"
	pathRecovery      = "core/recovery"
	sealConfigVersion = 2
	storedRootVersion = 1
	kekBlobVersion    = 1
	recoveryVersion   = 1
)

// storedRoot is the record at core/root.
type storedRoot struct {
	Version int    `json:"version"`
	Seal    string `json:"seal"`
	Blob    []byte `json:"blob"`
}

// recoveryRecord is what core/recovery seals under the root key: a
// verifier of the recovery secret, never the secret.
type recoveryRecord struct {
	Version  int    `json:"version"`
	Verifier []byte `json:"verifier"`
}

// Errors of the seal operations.
var (
	// ErrMigrationPending means the store is protected by another seal
	// than the one configured: only migrate-seal can unseal it.
	ErrMigrationPending = errors.New("seal migration pending")
	// ErrNoMigration means migrate-seal was called without a pending
	// migration.
	ErrNoMigration = errors.New("no seal migration is pending")
	// ErrSealUnavailable wraps a failure of an auto-unseal (the device or
	// service, its key, its configuration); its text says which.
	ErrSealUnavailable = errors.New("seal unavailable")
	// ErrInvalidRequest wraps parameters out of range.
	ErrInvalidRequest = errors.New("invalid request")
)

// ConfigureSeal sets the auto-unseal this server is configured with (nil:
// Shamir unseal shares) and, to migrate away from an auto-unseal, the seal
// the store is protected by now (prev; nil otherwise). Call it once,
// before the barrier is used: the seals are read without a lock, so that
// seal-status and metrics never wait behind a slow HSM.
func (b *Barrier) ConfigureSeal(cur, prev seal.Seal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seal, b.prev = cur, prev
}

// Seals returns the configured seal and the previous one (either may be
// nil).
func (b *Barrier) Seals() (cur, prev seal.Seal) {
	return b.seal, b.prev
}

func typeOf(s seal.Seal) string {
	if s == nil {
		return TypeShamir
	}
	return s.Type()
}

// migrationError explains a store protected by another seal than the
// configured one. The caller holds mu.
func (b *Barrier) migrationError(cfg SealConfig) error {
	return fmt.Errorf("%w: the store's root key is protected by %s but this server is configured with %s; "+
		"to migrate, submit a quorum of the current %s with `coffer operator migrate-seal` (docs/operations.md, \"Migrating between seals\"); "+
		"to keep %s, configure it again", ErrMigrationPending, cfg.SealType(), typeOf(b.seal), shareKind(cfg), cfg.SealType())
}

func shareKind(cfg SealConfig) string {
	if cfg.Auto() {
		return "recovery shares"
	}
	return "unseal shares"
}

// sealConfigRev reads the seal configuration with its revision.
func (b *Barrier) sealConfigRev(ctx context.Context) (SealConfig, int64, error) {
	var cfg SealConfig
	e, err := b.backend.Get(ctx, pathSealConfig)
	if errors.Is(err, storage.ErrNotFound) {
		return cfg, 0, ErrNotInitialized
	}
	if err != nil {
		return cfg, 0, err
	}
	if err := json.Unmarshal(e.Value, &cfg); err != nil {
		return cfg, 0, fmt.Errorf("reading seal configuration: %w", err)
	}
	return cfg, e.Revision, nil
}

// revisionOf returns the revision of path, 0 when it does not exist.
func (b *Barrier) revisionOf(ctx context.Context, path string) (int64, error) {
	e, err := b.backend.Get(ctx, path)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return e.Revision, nil
}

// sealUnder encrypts plain under key with AES-256-GCM and path as
// additional data: nonce | ciphertext and tag.
func sealUnder(key, plain []byte, path string) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(out)
	return aead.Seal(out, out, plain, []byte(path)), nil
}

// openUnder reverses sealUnder.
func openUnder(key, sealed []byte, path string) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%s: too short: %w", path, ErrCorrupt)
	}
	return aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(path))
}

// wrapWithKEK is a Shamir seal's core/root blob: version | nonce | GCM.
func wrapWithKEK(kek, root []byte) ([]byte, error) {
	sealed, err := sealUnder(kek, root, pathRoot)
	if err != nil {
		return nil, err
	}
	return append([]byte{kekBlobVersion}, sealed...), nil
}

// unwrapWithKEK reverses wrapWithKEK. A KEK that does not open it means
// shares of another store (or of before a rekey).
func unwrapWithKEK(kek, blob []byte) ([]byte, error) {
	if len(blob) < 1 || blob[0] != kekBlobVersion {
		return nil, fmt.Errorf("%s: unknown Shamir blob version: %w", pathRoot, ErrCorrupt)
	}
	root, err := openUnder(kek, blob[1:], pathRoot)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: the shares are valid but do not belong to this server's root key (another server's, or replaced by a rekey)", ErrBadShare)
	}
	return root, nil
}

// readRoot reads core/root.
func (b *Barrier) readRoot(ctx context.Context) (storedRoot, int64, error) {
	var r storedRoot
	e, err := b.backend.Get(ctx, pathRoot)
	if errors.Is(err, storage.ErrNotFound) {
		return r, 0, fmt.Errorf("%s is missing: the store was altered or damaged; restore it from a backup: %w", pathRoot, ErrCorrupt)
	}
	if err != nil {
		return r, 0, fmt.Errorf("reading %s: %w", pathRoot, err)
	}
	if err := json.Unmarshal(e.Value, &r); err != nil || r.Version != storedRootVersion {
		return r, 0, fmt.Errorf("%s is not a version %d record: %w", pathRoot, storedRootVersion, ErrCorrupt)
	}
	return r, e.Revision, nil
}

// rootFromShares returns the root key the unseal secret protects: derived
// from it in a version 0 store, unwrapped from core/root since version 2.
func (b *Barrier) rootFromShares(ctx context.Context, cfg SealConfig, secret []byte) ([]byte, error) {
	if cfg.Version == 0 {
		return deriveKey(secret, infoLegacyRoot)
	}
	r, _, err := b.readRoot(ctx)
	if err != nil {
		return nil, err
	}
	if r.Seal != TypeShamir {
		return nil, fmt.Errorf("%s names seal %q but the seal configuration says shamir: %w", pathRoot, r.Seal, ErrCorrupt)
	}
	kek, err := deriveKey(secret, infoShamirKEK)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	return unwrapWithKEK(kek, r.Blob)
}

// unwrapRoot asks s for the root key in core/root.
func (b *Barrier) unwrapRoot(ctx context.Context, s seal.Seal) ([]byte, error) {
	r, _, err := b.readRoot(ctx)
	if err != nil {
		return nil, err
	}
	if r.Seal != s.Type() {
		return nil, fmt.Errorf("%s was wrapped by a %s seal, not %s: %w", pathRoot, r.Seal, s.Type(), ErrCorrupt)
	}
	root, err := s.Unwrap(ctx, r.Blob)
	if err != nil {
		return nil, fmt.Errorf("%w: the %s seal could not unwrap the root key: %w", ErrSealUnavailable, s.Type(), err)
	}
	if len(root) != 32 {
		clear(root)
		return nil, fmt.Errorf("the %s seal unwrapped %d bytes, not a 32-byte root key: %w", s.Type(), len(root), ErrCorrupt)
	}
	return root, nil
}

// wrapVerified wraps root with s and checks that s unwraps it again, so
// that nothing is committed under a seal that cannot give the key back.
func wrapVerified(ctx context.Context, s seal.Seal, root []byte) ([]byte, error) {
	blob, err := s.Wrap(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("%w: the %s seal could not wrap the root key: %w", ErrSealUnavailable, s.Type(), err)
	}
	back, err := s.Unwrap(ctx, blob)
	if err != nil {
		return nil, fmt.Errorf("%w: the %s seal wrapped the root key but could not unwrap it again (nothing was changed): %w", ErrSealUnavailable, s.Type(), err)
	}
	defer clear(back)
	if subtle.ConstantTimeCompare(back, root) != 1 {
		return nil, fmt.Errorf("%w: the %s seal unwrapped another key than it wrapped (nothing was changed)", ErrSealUnavailable, s.Type())
	}
	return blob, nil
}

// newUnsealShares makes n new unseal shares of threshold t and the Shamir
// core/root blob that wraps root under their KEK.
func newUnsealShares(root []byte, n, t int) ([]string, []byte, error) {
	secret, shares, err := splitSecret(n, t)
	if err != nil {
		return nil, nil, err
	}
	kek, err := deriveKey(secret, infoShamirKEK)
	clear(secret)
	if err != nil {
		return nil, nil, err
	}
	defer clear(kek)
	blob, err := wrapWithKEK(kek, root)
	return shares, blob, err
}

// newRecovery makes recovery shares and the core/recovery record for root.
func newRecovery(root []byte, n, t int) ([]string, []byte, error) {
	secret, shares, err := splitSecret(n, t)
	if err != nil {
		return nil, nil, err
	}
	defer clear(secret)
	v, err := deriveKey(secret, infoRecovery)
	if err != nil {
		return nil, nil, err
	}
	defer clear(v)
	plain, err := json.Marshal(recoveryRecord{Version: recoveryVersion, Verifier: v})
	if err != nil {
		return nil, nil, err
	}
	defer clear(plain)
	sealed, err := sealUnder(root, plain, pathRecovery)
	return shares, sealed, err
}

// verifyRecovery checks a recovery secret against core/recovery, which
// only root opens, so a storage writer cannot substitute a verifier of
// shares of their own.
func (b *Barrier) verifyRecovery(ctx context.Context, root, secret []byte) error {
	e, err := b.backend.Get(ctx, pathRecovery)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%s is missing: the store was altered or damaged; restore it from a backup: %w", pathRecovery, ErrCorrupt)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", pathRecovery, err)
	}
	plain, err := openUnder(root, e.Value, pathRecovery)
	if err != nil {
		return fmt.Errorf("%s does not open with the root key: %w", pathRecovery, ErrCorrupt)
	}
	defer clear(plain)
	var rec recoveryRecord
	if err := json.Unmarshal(plain, &rec); err != nil || rec.Version != recoveryVersion {
		return fmt.Errorf("%s is not a version %d record: %w", pathRecovery, recoveryVersion, ErrCorrupt)
	}
	defer clear(rec.Verifier)
	v, err := deriveKey(secret, infoRecovery)
	if err != nil {
		return err
	}
	defer clear(v)
	if subtle.ConstantTimeCompare(v, rec.Verifier) != 1 {
		return fmt.Errorf("%w: the recovery shares are valid but do not belong to this server (another server's, or replaced by a rekey)", ErrBadShare)
	}
	return nil
}

// checkQuorumSecret checks that secret, combined from submitted shares,
// is this store's: the unseal secret under Shamir (it must give back the
// root key in memory), the recovery secret under an auto-unseal. root is
// the root key in memory.
func (b *Barrier) checkQuorumSecret(ctx context.Context, cfg SealConfig, root, secret []byte) error {
	if cfg.Auto() {
		return b.verifyRecovery(ctx, root, secret)
	}
	got, err := b.rootFromShares(ctx, cfg, secret)
	if err != nil {
		return err
	}
	defer clear(got)
	if subtle.ConstantTimeCompare(got, root) != 1 {
		return fmt.Errorf("%w: the shares are valid but do not belong to this server's root key (another server's, or replaced by a rekey)", ErrBadShare)
	}
	return nil
}

// AutoUnseal asks the configured auto-unseal for the root key and opens
// the keyring. It does nothing when already unsealed. It fails wrapping
// ErrMigrationPending when the store is protected by another seal.
func (b *Barrier) AutoUnseal(ctx context.Context) error {
	cfg, err := b.sealConfig(ctx)
	if err != nil {
		return err
	}
	if !b.Sealed() {
		return nil
	}
	if b.seal == nil {
		return fmt.Errorf("%w: no auto-unseal is configured: unseal with `coffer operator unseal`", ErrSealUnavailable)
	}
	if cfg.SealType() != b.seal.Type() {
		return b.migrationError(cfg)
	}
	// The device is asked without the lock: a slow HSM or an unreachable
	// unsealing Coffer must not hold up Seal or the status of this replica.
	root, err := b.unwrapRoot(ctx, b.seal)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ring != nil {
		clear(root)
		return nil
	}
	ring, err := b.openKeyring(ctx, root, "the root key the seal unwrapped does not open the keyring")
	if err != nil {
		clear(root)
		return err
	}
	b.ring = ring
	b.open.Store(true)
	b.resetLocked() // recovery shares submitted meanwhile are of no more use
	return nil
}

// MigrateResult reports a migrate-seal submission.
type MigrateResult struct {
	Status
	// Done is set when the migration was committed; the barrier is then
	// unsealed under the new seal.
	Done bool
	// Shares are the new unseal shares (migration to Shamir) and
	// RecoveryShares the new recovery shares (from Shamir to an
	// auto-unseal), shown once.
	Shares, RecoveryShares []string
}

// MigrateSeal submits one share toward a seal migration: the store is
// protected by one seal and the server is configured with another (the
// previous auto-unseal configured as prev, see ConfigureSeal). The shares
// are the current unseal shares, or recovery shares when the store is
// under an auto-unseal. With the last one it recovers the root key through
// the old seal, checks the shares, wraps the root key with the new seal and
// checks that it unwraps again, and then commits the new seal
// configuration, core/root and core/recovery in one compare-and-swap
// batch: until then the old seal keeps working, and an interrupted
// migration leaves the store as it was. n and t are the new share counts
// (unseal shares when migrating to Shamir, recovery shares when migrating
// from it); zero keeps the current counts. Every submission of one
// migration must give the same n and t.
func (b *Barrier) MigrateSeal(ctx context.Context, share string, n, t int) (MigrateResult, error) {
	cfg, cfgRev, err := b.sealConfigRev(ctx)
	if err != nil {
		return MigrateResult{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	res := MigrateResult{Status: Status{Initialized: true, Sealed: true, SealConfig: cfg, Configured: typeOf(b.seal)}}
	if cfg.SealType() == typeOf(b.seal) {
		res.Sealed = b.ring == nil
		return res, fmt.Errorf("%w: the store is protected by %s, the seal this server is configured with; to migrate, configure the new seal (and the current one as previous_seal when it is an auto-unseal) and restart", ErrNoMigration, cfg.SealType())
	}
	res.MigrationPending = true
	if b.ring != nil {
		return res, fmt.Errorf("%w on an unsealed server: a seal migration runs on a sealed server started with the new seal configured", ErrNoMigration)
	}
	if err := cfg.validate(); err != nil {
		b.resetLocked()
		return res, err
	}
	if n == 0 && t == 0 {
		n, t = cfg.Shares, cfg.Threshold
		if cfg.Auto() {
			n, t = cfg.RecoveryShares, cfg.RecoveryThreshold
		}
	}
	if t < 1 || t > n || n > MaxShares {
		return res, fmt.Errorf("%w: the new shares must satisfy 1 <= threshold <= shares <= %d, got shares=%d threshold=%d", ErrInvalidRequest, MaxShares, n, t)
	}
	if cfg.Auto() && (b.prev == nil || b.prev.Type() != cfg.SealType()) {
		return res, fmt.Errorf("%w: the store is protected by a %s seal: configure it as previous_seal so the root key can be recovered from it for the migration", ErrSealUnavailable, cfg.SealType())
	}
	if len(b.pending) > 0 && b.migrateNT != [2]int{n, t} {
		res.Progress = len(b.pending)
		return res, fmt.Errorf("%w: this migration was started for %d new shares with a threshold of %d; give the same values, or discard the submitted shares with `coffer operator migrate-seal --reset`", ErrInvalidRequest, b.migrateNT[0], b.migrateNT[1])
	}
	b.migrateNT = [2]int{n, t}
	done, err := b.pending.add(share, cfg.quorum())
	res.Progress = len(b.pending)
	if err != nil || !done {
		return res, err
	}
	secret, err := b.pending.combine(cfg.quorum())
	b.resetLocked()
	res.Progress = 0
	if err != nil {
		return res, err
	}
	defer clear(secret)

	// The root key, through the old seal.
	var root []byte
	if cfg.Auto() {
		if root, err = b.unwrapRoot(ctx, b.prev); err != nil {
			return res, err
		}
		if err = b.verifyRecovery(ctx, root, secret); err != nil {
			clear(root)
			return res, err
		}
	} else if root, err = b.rootFromShares(ctx, cfg, secret); err != nil {
		return res, err
	}
	ring, err := b.openKeyring(ctx, root, "the shares are valid but do not belong to this server's root key")
	if err != nil {
		clear(root)
		return res, err
	}
	fail := func(err error) (MigrateResult, error) {
		ring.wipe()
		return res, err
	}
	var ops []storage.Op
	if cfg.Version == 0 {
		// A version 0 root key is derived from the unseal secret: the old
		// shares would keep opening this store. It is replaced.
		next, op, err := b.newRootKeyring(ctx, root)
		if err != nil {
			return fail(err)
		}
		clear(root)
		ring.root, root = next, next
		ops = append(ops, op)
	}

	// The new protection, verified before anything is written.
	rootRev, err := b.revisionOf(ctx, pathRoot)
	if err != nil {
		return fail(err)
	}
	recRev, err := b.revisionOf(ctx, pathRecovery)
	if err != nil {
		return fail(err)
	}
	next := SealConfig{Version: sealConfigVersion, Type: typeOf(b.seal)}
	var blob []byte
	if b.seal != nil {
		if blob, err = wrapVerified(ctx, b.seal, root); err != nil {
			return fail(err)
		}
		if cfg.Auto() { // the recovery shares stay
			next.RecoveryShares, next.RecoveryThreshold = cfg.RecoveryShares, cfg.RecoveryThreshold
		} else {
			shares, rec, err := newRecovery(root, n, t)
			if err != nil {
				return fail(err)
			}
			res.RecoveryShares = shares
			next.RecoveryShares, next.RecoveryThreshold = n, t
			ops = append(ops, storage.Op{Kind: storage.OpPut, Key: pathRecovery, Value: rec, IfRevision: recRev})
		}
	} else {
		shares, b2, err := newUnsealShares(root, n, t)
		if err != nil {
			return fail(err)
		}
		blob, res.Shares = b2, shares
		next.Shares, next.Threshold = n, t
		if recRev != 0 {
			ops = append(ops, storage.Op{Kind: storage.OpDelete, Key: pathRecovery, IfRevision: recRev})
		}
	}
	if err := b.commitSeal(ctx, next, cfgRev, blob, rootRev, ops...); err != nil {
		return fail(err)
	}
	b.ring = ring
	b.open.Store(true)
	res.Done, res.Sealed, res.MigrationPending = true, false, false
	res.SealConfig = next
	return res, nil
}

// commitSeal writes a new seal configuration and core/root (plus ops)
// in one batch, each with compare-and-swap on the revision it was read at.
func (b *Barrier) commitSeal(ctx context.Context, cfg SealConfig, cfgRev int64, blob []byte, rootRev int64, ops ...storage.Op) error {
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	rootJSON, err := json.Marshal(storedRoot{Version: storedRootVersion, Seal: cfg.SealType(), Blob: blob})
	if err != nil {
		return err
	}
	all := append([]storage.Op{
		{Kind: storage.OpPut, Key: pathSealConfig, Value: cfgJSON, IfRevision: cfgRev},
		{Kind: storage.OpPut, Key: pathRoot, Value: rootJSON, IfRevision: rootRev},
	}, ops...)
	// Not cut short by a client that hangs up: the new shares exist
	// only in this call's answer.
	ctx = context.WithoutCancel(ctx)
	err = b.backend.Apply(ctx, all...)
	if errors.Is(err, storage.ErrConflict) {
		return fmt.Errorf("the seal configuration changed meanwhile (a rekey or migration on another replica); nothing was changed, start again: %w", err)
	}
	if err != nil {
		// A batch that failed in transit (etcd unreachable at the
		// answer) may have been committed: look before saying either.
		if done, rerr := b.applied(ctx, all); rerr == nil && done {
			return nil
		} else if rerr != nil {
			return fmt.Errorf("writing the seal configuration failed, and whether it was committed cannot be read now (check `coffer operator status` once the storage answers; the new shares are lost if it was): %w", errors.Join(err, rerr))
		}
		return fmt.Errorf("writing the seal configuration (nothing was changed): %w", err)
	}
	return nil
}

// applied reports whether the store holds what ops write: every put's
// value and no deleted key.
func (b *Barrier) applied(ctx context.Context, ops []storage.Op) (bool, error) {
	for _, op := range ops {
		e, err := b.backend.Get(ctx, op.Key)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			if op.Kind == storage.OpPut {
				return false, nil
			}
		case err != nil:
			return false, err
		case op.Kind == storage.OpDelete || !bytes.Equal(e.Value, op.Value):
			return false, nil
		}
	}
	return true, nil
}
