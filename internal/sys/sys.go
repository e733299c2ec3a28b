// Package sys is the system service: it owns the barrier and the lifecycle
// of the services that live behind it. Initializing, unsealing and sealing
// go through here so that key and token caches are loaded exactly when the
// barrier opens and wiped exactly when it closes.
package sys

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/iam"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/secrets"
)

// Version is the server version reported by seal-status.
var Version = "0.1.0-dev"

// ErrInvalidArgument wraps bad init parameters.
var ErrInvalidArgument = errors.New("invalid argument")

// Sys ties the barrier to the services stored behind it.
type Sys struct {
	Barrier *barrier.Barrier
	Keys    *keys.Service
	Tokens  *auth.Tokens
	// IAM, when set, holds policies, roles, access keys and clusters.
	IAM *iam.Service
	// Secrets is the secrets manager (it caches only the default key's
	// id, forgotten on seal).
	Secrets *secrets.Service

	mu sync.Mutex // serializes init, unseal and seal
	// loaded is set once every cache is loaded after an unseal and cleared
	// first thing on a seal: the barrier opens before the caches are
	// loaded, and a request served in between would find a valid token
	// unknown (test/ha saw 401s, then 429s, on a replica being unsealed).
	loaded atomic.Bool

	// follow keeps the caches coherent with other replicas (follow.go).
	follow follower

	// auto is the auto-unseal's state (seal.go).
	auto autoState
	// OnAutoUnseal, when set, records each auto-unseal attempt (err nil
	// on success) in the audit trail. A success it cannot record is
	// undone: the server seals again (fail closed).
	OnAutoUnseal func(ctx context.Context, err error) error

	// sealHooks run at the end of every seal (OnSeal).
	sealHooks []func()
}

// OnSeal adds f to what a seal runs after it wiped the keys: a front door
// forgets what it derived from secrets the barrier held (the AWS door's
// SigV4 signing keys).
func (s *Sys) OnSeal(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealHooks = append(s.sealHooks, f)
}

// Status reports the seal state.
func (s *Sys) Status(ctx context.Context) (SealStatus, error) {
	st, err := s.Barrier.Status(ctx)
	if err != nil {
		return SealStatus{}, err
	}
	return s.statusOf(st), nil
}

// statusOf is the seal status of a barrier status on this replica.
func (s *Sys) statusOf(st barrier.Status) SealStatus {
	out := SealStatus{Initialized: st.Initialized, Sealed: st.Sealed || !s.loaded.Load(), Shares: st.Shares,
		Threshold: st.Threshold, Progress: st.Progress, Version: Version, Seal: s.SealHealth()}
	out.ConfiguredType = st.Configured
	if st.Initialized {
		out.Type, out.RecoveryShares, out.RecoveryThreshold = st.SealType(), st.RecoveryShares, st.RecoveryThreshold
		out.MigrationPending = st.MigrationPending
	}
	return out
}

// Init creates the root key and the root token. Under Shamir it leaves the
// server sealed, as a production server must be unsealed by its share
// holders; under an auto-unseal the shares are recovery shares and the
// server unseals itself through its seal at once.
func (s *Sys) Init(ctx context.Context, shares, threshold int) (InitResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if shares == 0 && threshold == 0 {
		shares, threshold = 5, 3
	}
	if shares < 1 || shares > barrier.MaxShares || threshold < 1 || threshold > shares {
		return InitResult{}, fmt.Errorf("%w: need 1 <= threshold <= shares <= %d, got shares=%d threshold=%d",
			ErrInvalidArgument, barrier.MaxShares, shares, threshold)
	}
	parts, err := s.Barrier.Initialize(ctx, shares, threshold)
	if err != nil {
		return InitResult{}, err
	}
	tok, _, err := s.Tokens.Create(ctx, "root", true, 0, "")
	s.sealLocked()
	if err != nil {
		return InitResult{}, fmt.Errorf("creating the root token: %w", err)
	}
	if cur, _ := s.Barrier.Seals(); cur != nil {
		// The shares are recovery shares; the seal unseals. A failure
		// here is retried by the auto-unseal loop, and the answer
		// (shown once) must reach the operator all the same.
		if err := s.autoUnsealLocked(ctx); err != nil {
			s.auto.mu.Lock()
			s.auto.lastErr = err.Error()
			s.auto.mu.Unlock()
		}
		s.auto.wake()
		return InitResult{RootToken: tok, Type: cur.Type(), RecoveryShares: parts}, nil
	}
	return InitResult{Shares: parts, RootToken: tok, Type: barrier.TypeShamir}, nil
}

// Unseal submits one share; on the last one it loads the services.
func (s *Sys) Unseal(ctx context.Context, share string) (SealStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wasSealed := s.Barrier.Sealed()
	if _, err := s.Barrier.Unseal(ctx, share); err != nil {
		return SealStatus{}, err
	}
	if wasSealed && !s.Barrier.Sealed() {
		if err := s.afterUnsealLocked(ctx); err != nil {
			return SealStatus{}, err
		}
		s.auto.mu.Lock()
		s.auto.manual = false // a quorum unsealed it: the loop may keep it so
		s.auto.mu.Unlock()
	}
	return s.Status(ctx)
}

// afterUnsealLocked loads the caches once the barrier opened, and starts
// following other replicas; on a failure it seals again.
func (s *Sys) afterUnsealLocked(ctx context.Context) error {
	// The revision is read before the caches load, so the follow loop
	// misses no change made meanwhile (follow.go).
	rev, at, err := s.follow.revision(ctx)
	if err == nil {
		err = s.load(ctx)
	}
	if err != nil {
		s.sealLocked()
		return fmt.Errorf("loading state after unseal: %w", err)
	}
	s.follow.start(s, rev, at)
	s.loaded.Store(true)
	return nil
}

func (s *Sys) load(ctx context.Context) error {
	if err := s.Keys.Load(ctx); err != nil {
		return err
	}
	if err := s.Tokens.Load(ctx); err != nil {
		return err
	}
	if s.IAM != nil {
		return s.IAM.Load(ctx)
	}
	return nil
}

// Sealed reports whether requests must be refused as sealed: the barrier
// is closed, or it is open but the caches behind it are not loaded yet.
func (s *Sys) Sealed() bool { return !s.loaded.Load() || s.Barrier.Sealed() }

// ResetUnseal discards submitted shares.
func (s *Sys) ResetUnseal() { s.Barrier.ResetUnseal() }

// Seal wipes every key from memory. Under an auto-unseal the server then
// stays sealed until it restarts or a quorum of recovery shares unseals it:
// an emergency seal must not be undone by the seal a second later.
func (s *Sys) Seal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auto.mu.Lock()
	s.auto.manual = true
	s.auto.mu.Unlock()
	s.sealLocked()
}

// sealLocked closes the barrier first and wipes the caches after. Sealing
// the barrier waits for its reads and writes in flight and makes every later
// one fail with barrier.ErrSealed; Keys.Unload then waits for the key writers
// still running (their writes fail) before it wipes key material. Wiping
// first, as before, let a key write that overlapped the seal store the
// wiped (all-zero) material.
// sealFlushTimeout bounds the access-key usage flush before a seal.
const sealFlushTimeout = 3 * time.Second

func (s *Sys) sealLocked() {
	s.loaded.Store(false)
	s.follow.stop()
	if s.IAM != nil && !s.Barrier.Sealed() {
		// Keep the access keys' last use across a seal or shutdown;
		// a failure only loses last-used times, so the flush gets a few
		// seconds (where the store honours cancellation), not the power
		// to hold up an emergency seal.
		ctx, cancel := context.WithTimeout(context.Background(), sealFlushTimeout)
		_ = s.IAM.FlushUsage(ctx)
		cancel()
	}
	s.Barrier.Seal()
	if s.IAM != nil {
		s.IAM.Unload()
	}
	s.Keys.Unload()
	s.Tokens.Unload()
	if s.Secrets != nil {
		s.Secrets.Unload()
	}
	for _, f := range s.sealHooks {
		f()
	}
}

// RotateKeyring adds a new barrier keyring term that every later write is
// sealed under; entries written before stay readable under their term.
func (s *Sys) RotateKeyring(ctx context.Context) (uint32, error) {
	return s.Barrier.RotateKeyring(ctx)
}

// Rewrap rewrites every stored entry that is sealed under an older keyring
// term under the active one. It runs beside normal traffic and can be run
// again to resume.
func (s *Sys) Rewrap(ctx context.Context) (barrier.RewrapResult, error) {
	return s.Barrier.Rewrap(ctx)
}

// DevBootstrap initializes a fresh store with one share, or unseals an
// existing one with the share given, and makes sure rootToken (when not
// empty) is a valid root token. It returns the share and the root token.
func (s *Sys) DevBootstrap(ctx context.Context, share, rootToken string) (string, string, error) {
	st, err := s.Barrier.Status(ctx)
	if err != nil {
		return "", "", err
	}
	if !st.Initialized {
		res, err := s.Init(ctx, 1, 1)
		if err != nil {
			return "", "", err
		}
		share = res.Shares[0]
		if rootToken == "" {
			rootToken = res.RootToken
		}
	} else if share == "" {
		return "", "", errors.New("the dev store is initialized but its unseal share is missing")
	}
	if _, err := s.Unseal(ctx, share); err != nil {
		return "", "", err
	}
	if p, err := s.Tokens.Lookup(rootToken, netip.Addr{}); err != nil || !p.Root {
		tok, _, err := s.Tokens.Create(ctx, "dev root", true, 0, rootToken)
		if err != nil {
			return "", "", err
		}
		rootToken = tok
	}
	return share, rootToken, nil
}

// New builds the system service and the services behind bar. now is
// time.Now when nil (tests pass a fake clock).
func New(bar *barrier.Barrier, now func() time.Time) *Sys {
	var kopts []keys.Option
	if now != nil {
		kopts = append(kopts, keys.WithClock(now))
	}
	k := keys.New(bar, kopts...)
	t := auth.NewTokens(bar, now)
	var sopts []secrets.Option
	if now != nil {
		sopts = append(sopts, secrets.WithClock(now))
	}
	return &Sys{Barrier: bar, Keys: k, Tokens: t, IAM: iam.New(bar, t, k, now), Secrets: secrets.New(bar, k, sopts...)}
}
