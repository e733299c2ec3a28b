package sys

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/seal"
)

// OTPLength is the length in bytes of a generate-root one-time pad: that
// of a token.
var OTPLength = len(credential.TokenPrefix) + 1 + credential.BodyLen

// Auto-unseal retry pacing and health checks.
const (
	autoRetryMin     = time.Second
	autoRetryMax     = 30 * time.Second
	autoAttemptLimit = 30 * time.Second
	autoRetryBlob    = 5 * time.Minute
	healthEvery      = 30 * time.Second
	healthLimit      = 10 * time.Second
)

// autoState is what the auto-unseal loop knows, for seal-status and
// metrics.
type autoState struct {
	mu sync.Mutex
	// manual: sealed by an operator; no auto-unseal until a restart or a
	// quorum of recovery shares.
	manual     bool
	stopped    bool // a misconfiguration: retrying would not help
	lastErr    string
	failures   int64
	healthy    bool
	healthErr  string
	checkedAt  time.Time
	unsealDur  time.Duration
	unsealedAt time.Time
	kick       chan struct{}
	// healthDue asks the loop for a health check now: after an init, an
	// auto-unseal or a migration, the last one may predate the key.
	healthDue bool
}

func (a *autoState) wake() {
	a.mu.Lock()
	ch := a.kick
	a.healthDue = true
	a.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// SealHealth returns the state of the auto-unseal, nil without one.
func (s *Sys) SealHealth() *SealHealth {
	cur, _ := s.Barrier.Seals()
	if cur == nil {
		return nil
	}
	a := &s.auto
	a.mu.Lock()
	defer a.mu.Unlock()
	return &SealHealth{Type: cur.Type(), Info: cur.Info(), Healthy: a.healthy, HealthError: a.healthErr,
		CheckedAt: a.checkedAt, LastUnsealError: a.lastErr, Retrying: !a.stopped && !a.manual, Failures: a.failures,
		UnsealDuration: a.unsealDur, UnsealedAt: a.unsealedAt, SealedByOperator: a.manual}
}

// errSealedByOperator refuses an auto-unseal after an operator's seal.
var errSealedByOperator = errors.New("sealed by an operator: restart the server, or unseal it with a quorum of recovery shares")

// AutoUnseal asks the configured auto-unseal for the root key and loads
// the services, once. It does nothing when unsealed, and refuses after an
// operator's seal (checked under the lock Seal takes, so an attempt
// already on its way cannot undo a seal).
func (s *Sys) AutoUnseal(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auto.mu.Lock()
	manual := s.auto.manual
	s.auto.mu.Unlock()
	if manual {
		return errSealedByOperator
	}
	return s.autoUnsealLocked(ctx)
}

func (s *Sys) autoUnsealLocked(ctx context.Context) error {
	wasSealed := s.Barrier.Sealed()
	start := time.Now()
	err := s.Barrier.AutoUnseal(ctx)
	if err == nil && wasSealed {
		err = s.afterUnsealLocked(ctx)
	}
	if !wasSealed && err == nil {
		return nil
	}
	if s.OnAutoUnseal != nil {
		if rerr := s.OnAutoUnseal(ctx, err); rerr != nil && err == nil {
			s.sealLocked()
			return fmt.Errorf("auto-unsealed, but the audit trail could not record it, so the server sealed again: %w", rerr)
		}
	}
	if err != nil {
		return err
	}
	a := &s.auto
	a.mu.Lock()
	a.unsealDur, a.unsealedAt, a.lastErr = time.Since(start), time.Now().UTC(), ""
	a.mu.Unlock()
	return nil
}

// RunAutoUnseal keeps the server unsealed through its configured
// auto-unseal until ctx ends: it tries at once, again after each failure
// with a backoff from 1 s to 30 s, and checks the seal's health every 30
// s. It leaves the server sealed, and says why in SealHealth, after a
// manual seal (until restart or a recovery-share unseal), while a seal
// migration is pending, and after a misconfiguration (a wrong PIN, a
// missing key: retrying could lock an HSM token). It does nothing without
// an auto-unseal.
func (s *Sys) RunAutoUnseal(ctx context.Context, logger *slog.Logger) {
	cur, _ := s.Barrier.Seals()
	if cur == nil {
		return
	}
	a := &s.auto
	a.mu.Lock()
	a.kick = make(chan struct{}, 1)
	kick := a.kick
	a.mu.Unlock()
	backoff := autoRetryMin
	var nextHealth time.Time
	for {
		wait := time.Second
		a.mu.Lock()
		due := a.healthDue
		a.healthDue = false
		a.mu.Unlock()
		if due || time.Now().After(nextHealth) {
			s.checkHealth(ctx, cur)
			nextHealth = time.Now().Add(healthEvery)
		}
		if retry, ok := s.autoStep(ctx, logger); !ok {
			wait = backoff
			backoff = min(2*backoff, autoRetryMax)
			if retry > 0 {
				wait = retry
			}
		} else {
			backoff = autoRetryMin
			if retry > 0 {
				wait = retry
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-time.After(wait):
		}
	}
}

// autoStep tries one auto-unseal when one is due. ok is false after a
// failed attempt (the caller backs off).
func (s *Sys) autoStep(ctx context.Context, logger *slog.Logger) (time.Duration, bool) {
	a := &s.auto
	st, err := s.Barrier.Status(ctx)
	if err != nil {
		return 0, true // storage unreachable: the storage reports it
	}
	a.mu.Lock()
	skip := a.manual || a.stopped
	a.mu.Unlock()
	if !st.Initialized || !s.Sealed() || skip {
		return 0, true
	}
	if st.MigrationPending {
		a.mu.Lock()
		a.lastErr = fmt.Sprintf("a seal migration from %s to %s is pending: submit a quorum of the current %s with `coffer operator migrate-seal`",
			st.SealType(), st.Configured, map[bool]string{true: "recovery shares", false: "unseal shares"}[st.Auto()])
		a.mu.Unlock()
		return 5 * time.Second, true
	}
	actx, cancel := context.WithTimeout(ctx, autoAttemptLimit)
	err = s.AutoUnseal(actx)
	cancel()
	if err == nil {
		logger.Info("auto-unsealed", "seal", st.SealType(), "seconds", s.SealHealth().UnsealDuration.Seconds())
		a.mu.Lock()
		a.healthDue = true
		a.mu.Unlock()
		return 0, true
	}
	if ctx.Err() != nil || errors.Is(err, errSealedByOperator) {
		return 0, true
	}
	a.mu.Lock()
	a.failures++
	a.lastErr = err.Error()
	var retry time.Duration
	switch {
	case errors.Is(err, seal.ErrMisconfigured):
		a.stopped = true
		a.lastErr += " (not retried: fix the seal configuration and restart the server)"
	case errors.Is(err, seal.ErrBlob):
		// The stored blob does not open with this seal's key: that
		// takes a configuration fix (and a restart) or the device's old
		// state back; a rare retry covers a device that answered wrongly.
		retry = autoRetryBlob
		a.lastErr += fmt.Sprintf(" (retried every %s; this usually needs a configuration fix and a restart)", autoRetryBlob)
	}
	a.mu.Unlock()
	logger.Warn("auto-unseal failed; the server stays sealed", "seal", st.SealType(), "error", err.Error())
	return retry, false
}

// checkHealth runs the seal's health check and records the outcome.
func (s *Sys) checkHealth(ctx context.Context, cur seal.Seal) {
	hctx, cancel := context.WithTimeout(ctx, healthLimit)
	err := cur.Health(hctx)
	cancel()
	a := &s.auto
	a.mu.Lock()
	a.healthy, a.healthErr, a.checkedAt = err == nil, "", time.Now().UTC()
	if err != nil {
		a.healthErr = err.Error()
	}
	a.mu.Unlock()
}

// GenerateRootStart starts a generate-root attempt with a one-time pad
// (base64 of OTPLength random bytes) that the new token will be XORed
// with. The server must be unsealed.
func (s *Sys) GenerateRootStart(ctx context.Context, otp string) (GenerateRootStatus, error) {
	pad, err := base64.StdEncoding.DecodeString(otp)
	if err != nil || len(pad) != OTPLength {
		clear(pad)
		return GenerateRootStatus{}, fmt.Errorf("%w: otp must be the standard base64 of %d random bytes (`coffer operator generate-root init` makes one)", ErrInvalidArgument, OTPLength)
	}
	sum := sha256.Sum256(pad)
	a, err := s.Barrier.BeginAttempt(ctx, barrier.Attempt{Kind: barrier.GenerateRoot, Params: pad, Fingerprint: hex.EncodeToString(sum[:8])})
	if err != nil {
		clear(pad)
		return GenerateRootStatus{}, err
	}
	return generateRootStatus(a, true), nil
}

// GenerateRootStatus reports the generate-root attempt in progress.
func (s *Sys) GenerateRootStatus(ctx context.Context) (GenerateRootStatus, error) {
	a, ok := s.Barrier.AttemptStatus(barrier.GenerateRoot)
	if !ok {
		st, err := s.Barrier.Status(ctx)
		if err != nil {
			return GenerateRootStatus{}, err
		}
		return GenerateRootStatus{OTPLength: OTPLength, Required: quorumOf(st)}, nil
	}
	return generateRootStatus(a, true), nil
}

func quorumOf(st barrier.Status) int {
	if st.Auto() {
		return st.RecoveryThreshold
	}
	return st.Threshold
}

func generateRootStatus(a barrier.Attempt, started bool) GenerateRootStatus {
	return GenerateRootStatus{Started: started, Nonce: a.Nonce, Progress: a.Progress, Required: a.Required, OTPLength: OTPLength,
		OTPFingerprint: a.Fingerprint, StartedAt: a.Started}
}

// GenerateRootCancel discards the generate-root attempt in progress.
func (s *Sys) GenerateRootCancel() { s.Barrier.CancelAttempt(barrier.GenerateRoot) }

// GenerateRootSubmit submits one share. On the last one, once the shares
// check, it issues a new root token and returns it XORed with the
// attempt's one-time pad (EncodedToken).
func (s *Sys) GenerateRootSubmit(ctx context.Context, nonce, share string) (GenerateRootStatus, error) {
	res, err := s.Barrier.SubmitAttempt(ctx, barrier.GenerateRoot, nonce, share)
	out := generateRootStatus(res.Attempt, !res.Done && err == nil)
	if err != nil || !res.Done {
		return out, err
	}
	pad := res.Params
	defer clear(pad)
	tok, _, err := s.Tokens.Create(ctx, "root (generate-root)", true, 0, "")
	if err != nil {
		return out, fmt.Errorf("issuing the new root token: %w", err)
	}
	if len(tok) != len(pad) {
		return out, fmt.Errorf("the new token has %d bytes but the pad %d", len(tok), len(pad))
	}
	enc := make([]byte, len(pad))
	subtle.XORBytes(enc, []byte(tok), pad)
	out.Complete, out.EncodedToken = true, base64.StdEncoding.EncodeToString(enc)
	return out, nil
}

// DecodeRootToken reverses the one-time-pad encoding of a generated root
// token.
func DecodeRootToken(encoded, otp string) (string, error) {
	enc, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return "", errors.New("the encoded token is not base64")
	}
	pad, err := base64.StdEncoding.DecodeString(otp)
	if err != nil {
		return "", errors.New("the one-time pad is not base64")
	}
	defer clear(pad)
	if len(enc) != len(pad) {
		return "", fmt.Errorf("the encoded token has %d bytes but the pad %d: is this the pad of this attempt?", len(enc), len(pad))
	}
	subtle.XORBytes(enc, enc, pad)
	tok := string(enc)
	clear(enc)
	if !credential.Valid(credential.TokenPrefix, tok) {
		return "", errors.New("decoding gave no valid token: the pad is not the one this attempt was started with")
	}
	return tok, nil
}

// RekeyStart starts a rekey attempt for n new shares of threshold t.
func (s *Sys) RekeyStart(ctx context.Context, n, t int) (RekeyStatus, error) {
	if t < 1 || t > n || n > barrier.MaxShares {
		return RekeyStatus{}, fmt.Errorf("%w: need 1 <= threshold <= shares <= %d, got shares=%d threshold=%d",
			ErrInvalidArgument, barrier.MaxShares, n, t)
	}
	a, err := s.Barrier.BeginAttempt(ctx, barrier.Attempt{Kind: barrier.Rekey, NewShares: n, NewThreshold: t})
	if err != nil {
		return RekeyStatus{}, err
	}
	return s.rekeyStatus(ctx, a, true), nil
}

func (s *Sys) rekeyStatus(ctx context.Context, a barrier.Attempt, started bool) RekeyStatus {
	kind := ShareKindUnseal
	if st, err := s.Barrier.Status(ctx); err == nil && st.Auto() {
		kind = ShareKindRecovery
	}
	return RekeyStatus{Started: started, Nonce: a.Nonce, Kind: kind, Progress: a.Progress, Required: a.Required,
		NewShares: a.NewShares, NewThreshold: a.NewThreshold}
}

// RekeyStatus reports the rekey attempt in progress.
func (s *Sys) RekeyStatus(ctx context.Context) (RekeyStatus, error) {
	a, ok := s.Barrier.AttemptStatus(barrier.Rekey)
	if !ok {
		st, err := s.Barrier.Status(ctx)
		if err != nil {
			return RekeyStatus{}, err
		}
		out := s.rekeyStatus(ctx, barrier.Attempt{}, false)
		out.Required = quorumOf(st)
		return out, nil
	}
	return s.rekeyStatus(ctx, a, true), nil
}

// RekeyCancel discards the rekey attempt in progress.
func (s *Sys) RekeyCancel() { s.Barrier.CancelAttempt(barrier.Rekey) }

// RekeySubmit submits one share; on the last one, once the shares check,
// the new shares replace the old ones and are returned.
func (s *Sys) RekeySubmit(ctx context.Context, nonce, share string) (RekeyStatus, error) {
	res, err := s.Barrier.SubmitAttempt(ctx, barrier.Rekey, nonce, share)
	out := s.rekeyStatus(ctx, res.Attempt, !res.Done && err == nil)
	if err != nil || !res.Done {
		return out, err
	}
	out.Complete, out.Shares = true, res.Shares
	return out, nil
}

// MigrateSeal submits one share toward a pending seal migration (see
// barrier.MigrateSeal); once it is committed the services are loaded as
// after an unseal.
func (s *Sys) MigrateSeal(ctx context.Context, req MigrateSealRequest) (MigrateSealResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.Reset {
		// Only a migration's shares: the same set holds unseal shares
		// otherwise, which `unseal --reset` discards.
		bst, err := s.Barrier.Status(ctx)
		if err != nil {
			return MigrateSealResult{}, err
		}
		if !bst.MigrationPending {
			return MigrateSealResult{SealStatus: s.statusOf(bst)}, fmt.Errorf("%w: nothing to reset; `coffer operator unseal --reset` discards unseal shares", barrier.ErrNoMigration)
		}
		s.Barrier.ResetUnseal()
		st, err := s.Status(ctx)
		return MigrateSealResult{SealStatus: st}, err
	}
	res, err := s.Barrier.MigrateSeal(ctx, req.Share, req.Shares, req.Threshold)
	out := MigrateSealResult{SealStatus: s.statusOf(res.Status)}
	if err != nil || !res.Done {
		return out, err
	}
	// Committed: the new shares exist only in this answer, so nothing
	// after this point may withhold them, a client that hangs up included.
	out.Complete, out.Shares, out.RecoveryShares = true, res.Shares, res.RecoveryShares
	a := &s.auto
	a.mu.Lock()
	a.manual, a.stopped, a.lastErr = false, false, ""
	a.mu.Unlock()
	if err := s.afterUnsealLocked(context.WithoutCancel(ctx)); err != nil {
		// Sealed again; the new seal (or the new shares) unseal it.
		a.mu.Lock()
		a.lastErr = "the seal migration was committed, but loading state after it failed: " + err.Error()
		a.mu.Unlock()
		st, _ := s.Status(context.WithoutCancel(ctx))
		out.SealStatus = st
		a.wake()
		return out, nil
	}
	a.wake() // a health check of the new seal now, not in 30 s
	out.SealStatus = s.statusOf(res.Status)
	return out, nil
}
