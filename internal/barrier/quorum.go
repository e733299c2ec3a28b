package barrier

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// shareSet collects distinct shares by id.
type shareSet map[byte][]byte

// add records share. It reports done once threshold distinct shares are
// in. A repeated share counts once; another share with an id already
// submitted is refused and the first one kept.
func (s shareSet) add(share string, threshold int) (done bool, err error) {
	enc := []byte(strings.TrimSpace(share))
	id, err := shareID(enc)
	if err != nil {
		clear(enc)
		return false, err
	}
	if prev, ok := s[id]; ok {
		same := subtle.ConstantTimeCompare(prev, enc) == 1
		clear(enc)
		if same {
			return len(s) >= threshold, nil // a repeated share counts once
		}
		return false, fmt.Errorf("%w: a different share with id %d was already submitted; the first one is kept. "+
			"If that one was wrong, discard the submitted shares (--reset or --cancel) and start again", ErrBadShare, id)
	}
	s[id] = enc
	return len(s) >= threshold, nil
}

// combine reconstructs the secret from the shares.
func (s shareSet) combine(threshold int) ([]byte, error) {
	all := make([][]byte, 0, len(s))
	for _, sh := range s {
		all = append(all, sh)
	}
	secret, err := combineSecret(threshold, all)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadShare, err)
	}
	return secret, nil
}

func (s shareSet) wipe() {
	for id, sh := range s {
		clear(sh)
		delete(s, id)
	}
}

// Kinds of quorum attempt on an unsealed server.
const (
	// GenerateRoot makes a new root token.
	GenerateRoot = "generate-root"
	// Rekey replaces the unseal shares (Shamir) or the recovery shares
	// (an auto-unseal).
	Rekey = "rekey"
)

// ErrNoAttempt means a submission names no attempt in progress, or
// another one.
var ErrNoAttempt = errors.New("no such attempt in progress")

// ErrAttemptInProgress means an attempt of that kind is already running.
var ErrAttemptInProgress = errors.New("an attempt is already in progress")

// Attempt is the public state of a generate-root or rekey attempt: a
// quorum of the shares that authorise operations (unseal shares under
// Shamir, recovery shares under an auto-unseal) is collected, on this
// server, under a nonce that every submission must repeat.
type Attempt struct {
	Kind     string
	Nonce    string
	Started  time.Time
	Progress int
	Required int
	// Rekey: the new share counts.
	NewShares, NewThreshold int
	// Fingerprint identifies the attempt's Params (generate-root: the
	// pad's) so share holders can check whose attempt they serve.
	Fingerprint string
	// Params is opaque data of the caller (generate-root: the one-time
	// pad), returned when the attempt completes.
	Params []byte
}

type attempt struct {
	Attempt
	shares shareSet
}

func (a *attempt) wipe() {
	a.shares.wipe()
	clear(a.Params)
}

// BeginAttempt starts an attempt of a.Kind with a.NewShares and
// a.NewThreshold (rekey) and a.Params; it fills in the nonce and the
// required number of shares. One attempt of each kind runs at a time.
func (b *Barrier) BeginAttempt(ctx context.Context, a Attempt) (Attempt, error) {
	cfg, err := b.sealConfig(ctx)
	if err != nil {
		return Attempt{}, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ring == nil {
		return Attempt{}, ErrSealed
	}
	if err := cfg.validate(); err != nil {
		return Attempt{}, err
	}
	if a.Kind != GenerateRoot && a.Kind != Rekey {
		return Attempt{}, fmt.Errorf("%w: unknown attempt kind %q", ErrInvalidRequest, a.Kind)
	}
	if a.Kind == Rekey && (a.NewThreshold < 1 || a.NewThreshold > a.NewShares || a.NewShares > MaxShares) {
		return Attempt{}, fmt.Errorf("%w: the new shares must satisfy 1 <= threshold <= shares <= %d, got shares=%d threshold=%d", ErrInvalidRequest, MaxShares, a.NewShares, a.NewThreshold)
	}
	b.amu.Lock()
	defer b.amu.Unlock()
	if cur, ok := b.attempts[a.Kind]; ok {
		return cur.Attempt, fmt.Errorf("%w: a %s attempt started at %s is in progress (%d of %d shares); cancel it first",
			ErrAttemptInProgress, a.Kind, cur.Started.Format(time.RFC3339), len(cur.shares), cur.Required)
	}
	var n [16]byte
	rand.Read(n[:])
	a.Nonce, a.Started, a.Required, a.Progress = hex.EncodeToString(n[:]), time.Now().UTC(), cfg.quorum(), 0
	b.attempts[a.Kind] = &attempt{Attempt: a, shares: shareSet{}}
	out := a
	out.Params = nil
	return out, nil
}

// AttemptStatus returns the attempt of kind in progress, without its
// Params.
func (b *Barrier) AttemptStatus(kind string) (Attempt, bool) {
	b.amu.Lock()
	defer b.amu.Unlock()
	a, ok := b.attempts[kind]
	if !ok {
		return Attempt{}, false
	}
	out := a.Attempt
	out.Params, out.Progress = nil, len(a.shares)
	return out, true
}

// CancelAttempt discards the attempt of kind and the shares submitted to
// it. It reports whether there was one.
func (b *Barrier) CancelAttempt(kind string) bool {
	b.amu.Lock()
	defer b.amu.Unlock()
	a, ok := b.attempts[kind]
	if ok {
		a.wipe()
		delete(b.attempts, kind)
	}
	return ok
}

// AttemptResult is the answer to a submission.
type AttemptResult struct {
	Attempt
	// Done is set once the quorum was reached and checked; the attempt is
	// then over. For GenerateRoot, Params holds the attempt's Params; for
	// Rekey, Shares holds the new shares (shown once) and the new
	// configuration is committed.
	Done   bool
	Shares []string
}

// SubmitAttempt submits one share to the attempt of kind with nonce. When
// the quorum is reached the shares are combined and checked against this
// store (they must be this server's unseal shares under Shamir, its
// recovery shares under an auto-unseal); a set that does not check ends the
// attempt with an error wrapping ErrBadShare, so that a wrong share cannot
// be worked around by guessing. A rekey is then committed: new shares are
// made, the root key (which does not change) is wrapped under the new
// unseal secret, or a new recovery verifier is sealed, with
// compare-and-swap on the stored seal configuration.
func (b *Barrier) SubmitAttempt(ctx context.Context, kind, nonce, share string) (AttemptResult, error) {
	cfg, cfgRev, err := b.sealConfigRev(ctx)
	if err != nil {
		return AttemptResult{}, err
	}
	// Lock order: mu before amu (Seal holds mu and wipes attempts).
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ring == nil {
		return AttemptResult{}, ErrSealed
	}
	b.amu.Lock()
	defer b.amu.Unlock()
	a, ok := b.attempts[kind]
	if !ok || subtle.ConstantTimeCompare([]byte(a.Nonce), []byte(nonce)) != 1 {
		return AttemptResult{}, fmt.Errorf("%w: no %s attempt with this nonce; start one (or check the nonce it printed)", ErrNoAttempt, kind)
	}
	done, err := a.shares.add(share, a.Required)
	res := AttemptResult{Attempt: a.Attempt}
	res.Params, res.Progress = nil, len(a.shares)
	if err != nil || !done {
		return res, err
	}
	// The quorum is in: whatever happens next, this attempt is over.
	delete(b.attempts, kind)
	defer a.wipe()
	res.Progress = 0
	if cfg.quorum() != a.Required {
		return res, fmt.Errorf("the seal configuration changed during the attempt (a rekey or migration elsewhere); start again: %w", storage.ErrConflict)
	}
	secret, err := a.shares.combine(a.Required)
	if err != nil {
		return res, err
	}
	defer clear(secret)
	root := b.ring.root
	if err := b.checkQuorumSecret(ctx, cfg, root, secret); err != nil {
		return res, fmt.Errorf("%w; the %s attempt is cancelled, start again with the right shares", err, kind)
	}
	switch kind {
	case GenerateRoot:
		res.Params = append([]byte(nil), a.Params...)
	case Rekey:
		shares, err := b.rekeyLocked(ctx, cfg, cfgRev, root, a.NewShares, a.NewThreshold)
		if err != nil {
			return res, err
		}
		res.Shares = shares
	}
	res.Done = true
	return res, nil
}

// rekeyLocked replaces the shares that protect (Shamir) or authorise
// (auto-unseal) with n new shares of threshold t. The caller holds mu
// for reading with the barrier unsealed.
func (b *Barrier) rekeyLocked(ctx context.Context, cfg SealConfig, cfgRev int64, root []byte, n, t int) ([]string, error) {
	next := cfg
	next.Version = sealConfigVersion
	next.Type = cfg.SealType()
	if cfg.Auto() {
		recRev, err := b.revisionOf(ctx, pathRecovery)
		if err != nil {
			return nil, err
		}
		shares, rec, err := newRecovery(root, n, t)
		if err != nil {
			return nil, err
		}
		next.RecoveryShares, next.RecoveryThreshold = n, t
		r, rootRev, err := b.readRoot(ctx)
		if err != nil {
			return nil, err
		}
		if err := b.commitSeal(ctx, next, cfgRev, r.Blob, rootRev,
			storage.Op{Kind: storage.OpPut, Key: pathRecovery, Value: rec, IfRevision: recRev}); err != nil {
			return nil, err
		}
		return shares, nil
	}
	rootRev, err := b.revisionOf(ctx, pathRoot)
	if err != nil {
		return nil, err
	}
	var extra []storage.Op
	newRoot := root
	if cfg.Version == 0 {
		// A version 0 root key is derived from the unseal secret: the old
		// shares, with any copy of the store, would keep giving it. The
		// upgrade replaces it (and seals the keyring under the new one).
		var op storage.Op
		if newRoot, op, err = b.newRootKeyring(ctx, root); err != nil {
			return nil, err
		}
		extra = append(extra, op)
	}
	shares, blob, err := newUnsealShares(newRoot, n, t)
	if err == nil {
		next.Shares, next.Threshold = n, t
		err = b.commitSeal(ctx, next, cfgRev, blob, rootRev, extra...)
	}
	if err != nil {
		if cfg.Version == 0 {
			clear(newRoot)
		}
		return nil, err
	}
	if cfg.Version == 0 {
		// The caller holds mu for reading and amu: the readers of the
		// root key are the keyring writers, which take mu for writing,
		// and other attempts, which take amu, so the swap is safe here.
		old := b.ring.root
		b.ring.root = newRoot
		clear(old)
	}
	return shares, nil
}

// newRootKeyring makes a new root key and the batch operation that stores
// the keyring sealed under it instead of under root (compare-and-swap on
// the keyring's revision: a rotation elsewhere meanwhile fails the batch).
// It is how a version 0 store leaves a root key its old shares derive.
// Other replicas, which hold the old root key, then find the keyring
// foreign (keyring_mismatch) until they are unsealed again.
func (b *Barrier) newRootKeyring(ctx context.Context, root []byte) ([]byte, storage.Op, error) {
	e, err := b.backend.Get(ctx, pathKeyring)
	if err != nil {
		return nil, storage.Op{}, fmt.Errorf("reading keyring: %w", err)
	}
	plain, err := openUnder(root, e.Value, pathKeyring)
	if err != nil {
		return nil, storage.Op{}, fmt.Errorf("%w: the root key does not open the stored keyring", ErrKeyringMismatch)
	}
	defer clear(plain)
	next := make([]byte, 32)
	rand.Read(next)
	sealed, err := sealUnder(next, plain, pathKeyring)
	if err != nil {
		clear(next)
		return nil, storage.Op{}, err
	}
	return next, storage.Op{Kind: storage.OpPut, Key: pathKeyring, Value: sealed, IfRevision: e.Revision}, nil
}
