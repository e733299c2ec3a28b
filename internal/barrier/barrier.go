// Package barrier is the cryptographic wall between Coffer and its storage.
//
// Everything Coffer stores passes through the barrier, which encrypts it with
// AES-256-GCM under the active keyring term before it reaches the backend, with
// the entry's path as additional data (so entries cannot be swapped). The
// keyring is itself stored encrypted under the root key, and the root key
// exists only in memory while the barrier is unsealed: it is rebuilt from
// Shamir shares (see shares.go) and forgotten (zeroed) on Seal.
//
// Storage layout owned by the barrier:
//
//	core/seal-config   plaintext JSON: number of shares and threshold
//	core/keyring       keyring JSON sealed by the root key (AAD "core/keyring")
//
// Every other path is an encrypted entry: version (1 byte) | keyring term
// (uint32) | nonce (12) | AES-GCM ciphertext and tag. docs/formats.md has
// the details.
//
// RotateKeyring adds a keyring term that every later write is sealed under;
// entries keep the term they were written with and stay readable. Rewrap
// rewrites the entries of older terms under the active one, entry by entry
// with compare-and-swap, beside normal traffic and resumable by running it
// again (`coffer operator rotate-keyring`, `coffer operator rewrap`).
package barrier

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/internal/storage"
)

// Errors of the barrier.
var (
	// ErrSealed is returned by every data operation while sealed.
	ErrSealed = errors.New("the server is sealed; unseal it with `coffer operator unseal`")
	// ErrNotInitialized is returned before Initialize.
	ErrNotInitialized = errors.New("the server is not initialized; run `coffer operator init`")
	// ErrAlreadyInitialized is returned by a second Initialize.
	ErrAlreadyInitialized = errors.New("the server is already initialized")
	// ErrBadShare is wrapped when an unseal share is malformed or does not
	// belong to this server.
	ErrBadShare = errBadShare
	// ErrCorrupt means a stored entry failed authentication.
	ErrCorrupt = errors.New("stored entry failed authentication (corrupted or tampered storage)")
)

const (
	pathSealConfig = "core/seal-config"
	pathKeyring    = "core/keyring"
	reservedPrefix = "core/"

	entryVersion = 1
	entryHeader  = 1 + 4 + 12
)

// SealConfig is how the root key is protected: by Shamir unseal shares
// (Type "shamir", Shares and Threshold) or by an auto-unseal (Type the
// seal's, RecoveryShares and RecoveryThreshold). It is stored in plaintext;
// nothing in it is trusted for security (see validate).
type SealConfig struct {
	// Version 0 (absent) is a store from before issue 15: the unseal
	// secret derives the root key itself and there is no core/root.
	// Version 2 wraps a random root key in core/root.
	Version   int    `json:"version,omitempty"`
	Type      string `json:"type,omitempty"`
	Shares    int    `json:"shares"`
	Threshold int    `json:"threshold"`
	// Recovery shares authorise generate-root, rekey, migrate-seal and an
	// unseal after a manual seal under an auto-unseal; they decrypt
	// nothing.
	RecoveryShares    int `json:"recovery_shares,omitempty"`
	RecoveryThreshold int `json:"recovery_threshold,omitempty"`
}

// SealType returns the seal's type, "shamir" for a version 0 store.
func (c SealConfig) SealType() string {
	if c.Type == "" {
		return TypeShamir
	}
	return c.Type
}

// Auto reports whether an auto-unseal protects the root key.
func (c SealConfig) Auto() bool { return c.SealType() != TypeShamir }

// quorum returns the threshold of the shares that authorise operations:
// the unseal shares under Shamir, the recovery shares otherwise.
func (c SealConfig) quorum() int {
	if c.Auto() {
		return c.RecoveryThreshold
	}
	return c.Threshold
}

// validate checks 1 <= threshold <= shares <= MaxShares for the shares in
// use. The seal configuration is stored in plaintext without
// authentication, so Unseal must not trust it: a threshold of 0 or less
// used to panic in the share recovery. (A threshold lowered by a storage
// writer gains nothing: fewer shares reconstruct another secret, which
// opens nothing.)
func (c SealConfig) validate() error {
	n, t, what := c.Shares, c.Threshold, "shares"
	if c.Auto() {
		n, t, what = c.RecoveryShares, c.RecoveryThreshold, "recovery shares"
	}
	if t < 1 || t > n || n > MaxShares || (c.Version != 0 && c.Version != sealConfigVersion) {
		return fmt.Errorf("the seal configuration (%s) says version %d, %d %s with a threshold of %d; it must be version %d with 1 <= threshold <= shares <= %d. "+
			"The store was altered or damaged: restore core/seal-config from a backup: %w",
			pathSealConfig, c.Version, n, what, t, sealConfigVersion, MaxShares, ErrCorrupt)
	}
	return nil
}

// Status is the barrier's state for the seal-status endpoint.
type Status struct {
	Initialized bool
	Sealed      bool
	SealConfig
	Progress int
	// Configured is the type of the seal this server is configured with
	// ("shamir" without one); it differs from SealType while a seal
	// migration is pending (MigrationPending).
	Configured       string
	MigrationPending bool
}

type term struct {
	Term    uint32    `json:"term"`
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
	aead    cipher.AEAD
}

type keyring struct {
	ActiveTerm uint32  `json:"active_term"`
	Terms      []*term `json:"terms"`
	root       []byte
}

func (k *keyring) term(n uint32) *term {
	for _, t := range k.Terms {
		if t.Term == n {
			return t
		}
	}
	return nil
}

func (k *keyring) wipe() {
	for _, t := range k.Terms {
		clear(t.Key)
	}
	clear(k.root)
}

// Barrier encrypts a storage.Backend. It is safe for concurrent use; data
// operations take only a read lock.
type Barrier struct {
	backend storage.Backend

	mu   sync.RWMutex
	ring *keyring // nil while sealed
	// open is true while ring is set and no Seal is under way. It is read
	// without mu, so that a Seal waiting for a slow storage call in flight
	// does not queue seal-status and every new request behind it.
	open    atomic.Bool
	pending shareSet // unseal (or migrate-seal) shares by id, while sealed
	// migrateNT are the new share counts of the migration in progress.
	migrateNT [2]int

	// seal is the configured auto-unseal (nil: Shamir shares), prev the
	// one the store is protected by during a migration away from an
	// auto-unseal (rootkey.go).
	seal, prev seal.Seal

	amu      sync.Mutex // attempts; taken after mu when both are held
	attempts map[string]*attempt
}

// New wraps backend. The barrier starts sealed.
func New(backend storage.Backend) *Barrier {
	return &Barrier{backend: backend, pending: shareSet{}, attempts: map[string]*attempt{}}
}

// Status reports initialization, seal state and unseal progress.
func (b *Barrier) Status(ctx context.Context) (Status, error) {
	cfg, err := b.sealConfig(ctx)
	if errors.Is(err, ErrNotInitialized) {
		return Status{Sealed: true, Configured: typeOf(b.seal)}, nil
	}
	if err != nil {
		return Status{}, err
	}
	st := Status{Initialized: true, Sealed: !b.open.Load(), SealConfig: cfg, Configured: typeOf(b.seal)}
	if b.mu.TryRLock() { // fails while a Seal or Unseal holds or waits for mu
		st.Progress = len(b.pending)
		b.mu.RUnlock()
	}
	st.MigrationPending = st.Configured != cfg.SealType()
	return st, nil
}

// Sealed reports whether data operations are refused.
func (b *Barrier) Sealed() bool {
	return !b.open.Load()
}

func (b *Barrier) sealConfig(ctx context.Context) (SealConfig, error) {
	var cfg SealConfig
	e, err := b.backend.Get(ctx, pathSealConfig)
	if errors.Is(err, storage.ErrNotFound) {
		return cfg, ErrNotInitialized
	}
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(e.Value, &cfg); err != nil {
		return cfg, fmt.Errorf("reading seal configuration: %w", err)
	}
	return cfg, nil
}

// Initialize creates a random root key and the first keyring, and
// protects the root key: under Shamir it is wrapped by a key derived from
// a new secret split into shares unseal shares of which threshold unseal;
// under an auto-unseal (ConfigureSeal) the seal wraps it (and must unwrap
// it again before anything is written), and shares and threshold are the
// counts of the recovery shares, which authorise sensitive operations but
// decrypt nothing. The barrier is left unsealed so the caller can
// bootstrap (create the root token); the shares are returned once and
// never stored.
func (b *Barrier) Initialize(ctx context.Context, shares, threshold int) ([]string, error) {
	if _, err := b.sealConfig(ctx); err == nil {
		return nil, ErrAlreadyInitialized
	} else if !errors.Is(err, ErrNotInitialized) {
		return nil, err
	}
	autoSeal := b.seal
	root := make([]byte, 32)
	rand.Read(root)
	ring := &keyring{ActiveTerm: 1, root: root}
	t := &term{Term: 1, Key: make([]byte, 32), Created: time.Now().UTC()}
	rand.Read(t.Key)
	ring.Terms = []*term{t}
	fail := func(err error) ([]string, error) {
		ring.wipe()
		return nil, err
	}
	if err := ring.prepare(); err != nil {
		return fail(err)
	}
	sealedRing, err := ring.seal()
	if err != nil {
		return fail(err)
	}
	cfg := SealConfig{Version: sealConfigVersion, Type: typeOf(autoSeal)}
	var blob []byte
	var parts []string
	var extra []storage.Op
	if autoSeal == nil {
		sh, b2, err := newUnsealShares(root, shares, threshold)
		if err != nil {
			return fail(err)
		}
		blob, parts, cfg.Shares, cfg.Threshold = b2, sh, shares, threshold
	} else {
		sh, rec, err := newRecovery(root, shares, threshold)
		if err != nil {
			return fail(err)
		}
		if blob, err = wrapVerified(ctx, autoSeal, root); err != nil {
			return fail(err)
		}
		parts, cfg.RecoveryShares, cfg.RecoveryThreshold = sh, shares, threshold
		extra = append(extra, storage.Op{Kind: storage.OpPut, Key: pathRecovery, Value: rec, IfRevision: 0})
	}
	extra = append(extra, storage.Op{Kind: storage.OpPut, Key: pathKeyring, Value: sealedRing, IfRevision: 0})
	err = b.commitSeal(ctx, cfg, 0, blob, 0, extra...)
	if errors.Is(err, storage.ErrConflict) {
		return fail(ErrAlreadyInitialized)
	}
	if err != nil {
		return fail(fmt.Errorf("writing keyring: %w", err))
	}
	b.mu.Lock()
	b.ring = ring
	b.open.Store(true)
	b.mu.Unlock()
	return parts, nil
}

// Unseal submits one share. When the threshold is reached it rebuilds the
// root key, opens the keyring and returns a Status with Sealed false. A
// malformed share is refused (the shares submitted so far are kept); a full
// set that does not open the keyring resets the progress. Both errors wrap
// ErrBadShare.
//
// Under an auto-unseal the shares are recovery shares: they do not give the
// root key (the seal does) but prove the authority to unseal a server an
// operator sealed; the seal is asked for the root key once they check.
func (b *Barrier) Unseal(ctx context.Context, share string) (Status, error) {
	cfg, err := b.sealConfig(ctx)
	if err != nil {
		return Status{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Status{Initialized: true, SealConfig: cfg, Configured: typeOf(b.seal)}
	if b.ring != nil {
		return st, nil
	}
	st.Sealed = true
	if cfg.SealType() != typeOf(b.seal) {
		st.MigrationPending = true
		return st, b.migrationError(cfg)
	}
	if err := cfg.validate(); err != nil {
		b.resetLocked()
		return st, err
	}
	done, err := b.pending.add(share, cfg.quorum())
	st.Progress = len(b.pending)
	if err != nil || !done {
		return st, err
	}
	secret, err := b.pending.combine(cfg.quorum())
	b.resetLocked() // wipes the submitted shares
	st.Progress = 0
	if err != nil {
		return st, err
	}
	defer clear(secret)
	var root []byte
	if cfg.Auto() {
		if root, err = b.unwrapRoot(ctx, b.seal); err != nil {
			return st, err
		}
		if err := b.verifyRecovery(ctx, root, secret); err != nil {
			clear(root)
			return st, err
		}
	} else if root, err = b.rootFromShares(ctx, cfg, secret); err != nil {
		return st, err
	}
	ring, err := b.openKeyring(ctx, root, "the shares are valid but do not belong to this server's root key")
	if err != nil {
		clear(root)
		return st, err
	}
	b.ring = ring
	b.open.Store(true)
	st.Sealed = false
	return st, nil
}

// ResetUnseal forgets the shares submitted so far.
func (b *Barrier) ResetUnseal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.resetLocked()
}

func (b *Barrier) resetLocked() {
	b.pending.wipe()
	b.migrateNT = [2]int{}
}

// Seal forgets the root key and keyring. Data operations fail with ErrSealed
// until the next Unseal.
func (b *Barrier) Seal() {
	b.open.Store(false) // new operations fail now, not once mu is ours
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ring != nil {
		b.ring.wipe()
		b.ring = nil
	}
	b.resetLocked()
	b.amu.Lock()
	for kind, a := range b.attempts {
		a.wipe()
		delete(b.attempts, kind)
	}
	b.amu.Unlock()
}

// openKeyring opens the stored keyring with root; when root does not open
// it the error wraps ErrBadShare and says why (a wrong key's origin).
func (b *Barrier) openKeyring(ctx context.Context, root []byte, why string) (*keyring, error) {
	e, err := b.backend.Get(ctx, pathKeyring)
	if err != nil {
		return nil, fmt.Errorf("reading keyring: %w", err)
	}
	aead, err := newAEAD(root)
	if err != nil {
		return nil, err
	}
	if len(e.Value) < aead.NonceSize() {
		return nil, fmt.Errorf("keyring: %w", ErrCorrupt)
	}
	plain, err := aead.Open(nil, e.Value[:aead.NonceSize()], e.Value[aead.NonceSize():], []byte(pathKeyring))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadShare, why)
	}
	defer clear(plain)
	ring := &keyring{root: root}
	if err := json.Unmarshal(plain, ring); err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	if err := ring.prepare(); err != nil {
		return nil, err
	}
	return ring, nil
}

func (k *keyring) prepare() error {
	for _, t := range k.Terms {
		a, err := newAEAD(t.Key)
		if err != nil {
			return err
		}
		t.aead = a
	}
	if k.term(k.ActiveTerm) == nil {
		return fmt.Errorf("keyring: active term %d missing: %w", k.ActiveTerm, ErrCorrupt)
	}
	return nil
}

func (k *keyring) seal() ([]byte, error) {
	plain, err := json.Marshal(k)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	aead, err := newAEAD(k.root)
	if err != nil {
		return nil, err
	}
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(out)
	return aead.Seal(out, out, plain, []byte(pathKeyring)), nil
}

// RotateKeyring adds a new keyring term and makes it active. New writes use
// it; entries written under older terms stay readable.
func (b *Barrier) RotateKeyring(ctx context.Context) (uint32, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ring == nil {
		return 0, ErrSealed
	}
	// Build on the stored keyring, and write it back only if no other
	// replica rotated meanwhile: a lost term loses every entry under it.
	old, rev, err := b.storedRingLocked(ctx)
	if err != nil {
		return 0, err
	}
	if old != b.ring {
		prev := b.ring
		b.ring = old
		for _, t := range prev.Terms {
			clear(t.Key)
		}
	}
	next := &keyring{ActiveTerm: old.ActiveTerm + 1, root: old.root}
	t := &term{Term: next.ActiveTerm, Key: make([]byte, 32), Created: time.Now().UTC()}
	rand.Read(t.Key)
	next.Terms = append(append([]*term{}, old.Terms...), t)
	if err := next.prepare(); err != nil {
		return 0, err
	}
	sealed, err := next.seal()
	if err != nil {
		return 0, err
	}
	if err := b.backend.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: pathKeyring, Value: sealed, IfRevision: rev}); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return 0, errKeyringRotated
		}
		return 0, fmt.Errorf("writing keyring: %w", err)
	}
	b.ring = next
	return next.ActiveTerm, nil
}

// RewrapResult reports a Rewrap.
type RewrapResult struct {
	// Term is the active keyring term entries were rewritten under.
	Term uint32
	// Scanned counts the entries looked at, Rewrapped those rewritten and
	// Current those already under the active term.
	Scanned, Rewrapped, Current int
}

// Rewrap rewrites every entry that is sealed under an older keyring term
// under the active one, so that old terms protect nothing. Each entry is
// rewritten with compare-and-swap on its revision: a concurrent write wins
// (and is under the active term already), and the entry is looked at again.
// Rewrap holds no lock between entries, so writes go on meanwhile; it is
// idempotent, so an interrupted run is resumed by running it again. Old
// terms stay in the keyring: an entry restored from a backup made before
// the rotation still opens.
func (b *Barrier) Rewrap(ctx context.Context) (RewrapResult, error) {
	var res RewrapResult
	if b.Sealed() {
		return res, ErrSealed
	}
	paths, err := b.backend.List(ctx, "")
	if err != nil {
		return res, err
	}
	for _, p := range paths {
		if strings.HasPrefix(p, reservedPrefix) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		res.Scanned++
		done, err := b.rewrapEntry(ctx, p, &res)
		for tries := 1; err == nil && !done; tries++ {
			if tries == 10 {
				return res, fmt.Errorf("entry %q keeps changing during rewrap; run rewrap again: %w", p, storage.ErrConflict)
			}
			done, err = b.rewrapEntry(ctx, p, &res)
		}
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// rewrapEntry rewrites one entry under the active term. It reports false
// when a concurrent write changed the entry first.
func (b *Barrier) rewrapEntry(ctx context.Context, path string, res *RewrapResult) (bool, error) {
	// The read lock keeps Seal and RotateKeyring out while one entry is
	// rewritten, as in Apply.
	b.mu.RLock()
	defer b.mu.RUnlock()
	ring := b.ring
	if ring == nil {
		return false, ErrSealed
	}
	res.Term = ring.ActiveTerm
	e, err := b.backend.Get(ctx, path)
	if errors.Is(err, storage.ErrNotFound) {
		return true, nil // deleted meanwhile
	}
	if err != nil {
		return false, err
	}
	if len(e.Value) >= entryHeader && binary.BigEndian.Uint32(e.Value[1:5]) == ring.ActiveTerm {
		res.Current++
		return true, nil
	}
	plain, err := ring.open(path, e.Value)
	if err != nil {
		return false, err
	}
	sealed := ring.sealEntry(path, plain)
	clear(plain)
	err = b.backend.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: path, Value: sealed, IfRevision: e.Revision})
	if errors.Is(err, storage.ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rewrapping %q: %w", path, err)
	}
	res.Rewrapped++
	return true, nil
}

// ActiveTerm returns the keyring term new writes are sealed under.
func (b *Barrier) ActiveTerm() (uint32, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ring == nil {
		return 0, ErrSealed
	}
	return b.ring.ActiveTerm, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, reservedPrefix) {
		return fmt.Errorf("barrier: path %q is reserved", p)
	}
	return nil
}

// get returns the decrypted entry at path (Get, reload.go, adds a
// keyring reload for a term rotated in by another replica).
func (b *Barrier) get(ctx context.Context, path string) (storage.Entry, error) {
	return b.unsealed(path, func(ring *keyring) (storage.Entry, error) {
		e, err := b.backend.Get(ctx, path)
		if err != nil {
			return e, err
		}
		e.Value, err = ring.open(path, e.Value)
		return e, err
	})
}

// openEntry decrypts a raw entry of path obtained elsewhere (Open,
// reload.go), with the checks of get.
func (b *Barrier) openEntry(path string, e storage.Entry) (storage.Entry, error) {
	return b.unsealed(path, func(ring *keyring) (storage.Entry, error) {
		var err error
		e.Key = path
		e.Value, err = ring.open(path, e.Value)
		return e, err
	})
}

// unsealed checks path and runs fn with the keyring, holding the read lock
// to the end so Seal waits for reads in flight.
func (b *Barrier) unsealed(path string, fn func(*keyring) (storage.Entry, error)) (storage.Entry, error) {
	if err := checkPath(path); err != nil {
		return storage.Entry{}, err
	}
	if !b.open.Load() {
		return storage.Entry{}, ErrSealed
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	ring := b.ring
	if ring == nil {
		return storage.Entry{}, ErrSealed
	}
	return fn(ring)
}

func (k *keyring) open(path string, v []byte) ([]byte, error) {
	if len(v) < entryHeader+16 || v[0] != entryVersion {
		return nil, fmt.Errorf("entry %q: %w", path, ErrCorrupt)
	}
	t := k.term(binary.BigEndian.Uint32(v[1:5]))
	if t == nil {
		return nil, fmt.Errorf("entry %q names an unknown keyring term (%w): %w", path, errUnknownTerm, ErrCorrupt)
	}
	plain, err := t.aead.Open(nil, v[5:entryHeader], v[entryHeader:], []byte(path))
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", path, ErrCorrupt)
	}
	return plain, nil
}

func (k *keyring) sealEntry(path string, plain []byte) []byte {
	t := k.term(k.ActiveTerm)
	out := make([]byte, entryHeader, entryHeader+len(plain)+t.aead.Overhead())
	out[0] = entryVersion
	binary.BigEndian.PutUint32(out[1:5], t.Term)
	rand.Read(out[5:entryHeader])
	return t.aead.Seal(out, out[5:entryHeader], plain, []byte(path))
}

// List returns the paths under prefix. Paths are not secret; only values
// are encrypted.
func (b *Barrier) List(ctx context.Context, prefix string) ([]string, error) {
	if b.Sealed() {
		return nil, ErrSealed
	}
	if strings.HasPrefix(prefix, reservedPrefix) {
		return nil, fmt.Errorf("barrier: prefix %q is reserved", prefix)
	}
	keys, err := b.backend.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := keys[:0]
	for _, k := range keys {
		if !strings.HasPrefix(k, reservedPrefix) {
			out = append(out, k)
		}
	}
	return out, nil
}

// Apply encrypts the values of ops and applies them atomically. Seal waits
// for an Apply in flight; an Apply that starts after Seal fails with
// ErrSealed and writes nothing.
func (b *Barrier) Apply(ctx context.Context, ops ...storage.Op) error {
	if !b.open.Load() {
		return ErrSealed
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	ring := b.ring
	if ring == nil {
		return ErrSealed
	}
	enc := make([]storage.Op, len(ops))
	for i, op := range ops {
		if err := checkPath(op.Key); err != nil {
			return err
		}
		enc[i] = op
		if op.Kind == storage.OpPut {
			enc[i].Value = ring.sealEntry(op.Key, op.Value)
		}
	}
	return b.backend.Apply(ctx, enc...)
}
