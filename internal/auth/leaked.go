package auth

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/cofferkms/coffer/internal/storage"
)

// ErrLeaked is wrapped (with ErrUnauthenticated) when a request presents a
// token that was reported as leaked and revoked, so the audit trail and the
// alert rules can tell a leaked credential's reuse from a mistyped token.
var ErrLeaked = errors.New("the token was reported as leaked and revoked")

const leakedPath = "auth/leaked/"

// MaxLeakReport bounds the fingerprints of one report.
const MaxLeakReport = 1000

// LeakReport is the outcome of ReportLeaked.
type LeakReport struct {
	// Revoked are the accessors of the tokens that were revoked.
	Revoked []string
	// AlreadyRevoked counts fingerprints of tokens reported before.
	AlreadyRevoked int
	// Unknown counts fingerprints that match no token of this server.
	Unknown int
}

// ReportLeaked revokes the tokens whose SHA-256 (hex) is in fingerprints,
// as reported by a secret scanner (`coffer scan --report-to`), and
// remembers them so a later use is recognised (ErrLeaked). Knowing a
// fingerprint requires knowing the token, so a report cannot revoke tokens
// the reporter has not seen. Fingerprints of unknown tokens are not stored.
func (t *Tokens) ReportLeaked(ctx context.Context, fingerprints []string) (LeakReport, error) {
	var rep LeakReport
	if len(fingerprints) == 0 || len(fingerprints) > MaxLeakReport {
		return rep, fmt.Errorf("%w: send 1..%d fingerprints, not %d", ErrInvalidArgument, MaxLeakReport, len(fingerprints))
	}
	for _, fp := range fingerprints {
		sum, err := hex.DecodeString(strings.ToLower(fp))
		if err != nil || len(sum) != 32 {
			return rep, fmt.Errorf("%w: fingerprint %q is not a hex SHA-256", ErrInvalidArgument, truncate(fp))
		}
	}
	for _, fp := range fingerprints {
		fp = strings.ToLower(fp)
		sum, _ := hex.DecodeString(fp)
		t.mu.RLock()
		r := t.byHash[[32]byte(sum)]
		_, known := t.leaked[fp]
		t.mu.RUnlock()
		switch {
		case r != nil:
			// Remember first, then revoke: a crash in between leaves a
			// revocable token marked, never a revoked one unmarked.
			if err := t.store.Apply(ctx, storage.Put(leakedPath+fp, []byte(r.Accessor))); err != nil {
				return rep, err
			}
			if err := t.Revoke(ctx, "", r.Accessor); err != nil && !errors.Is(err, ErrNotFound) {
				return rep, err
			}
			t.mu.Lock()
			t.leaked[fp] = r.Accessor
			t.mu.Unlock()
			rep.Revoked = append(rep.Revoked, r.Accessor)
		case known:
			rep.AlreadyRevoked++
		default:
			rep.Unknown++
		}
	}
	return rep, nil
}

// leakedAccessor returns the accessor of a revoked token reported as
// leaked, by the token's SHA-256.
func (t *Tokens) leakedAccessor(sum [32]byte) (string, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	a, ok := t.leaked[hex.EncodeToString(sum[:])]
	return a, ok
}

// loadLeaked reads the leaked-token marks.
func (t *Tokens) loadLeaked(ctx context.Context) (map[string]string, error) {
	paths, err := t.store.List(ctx, leakedPath)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(paths))
	for _, p := range paths {
		e, err := t.store.Get(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("loading %s: %w", p, err)
		}
		out[strings.TrimPrefix(p, leakedPath)] = string(e.Value)
	}
	return out, nil
}

func truncate(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

// LeakedError is returned for a reported credential; it names the
// accessor the token had (or the access key's id), for the audit record.
type LeakedError struct {
	Accessor string
	Kind     string // "" (a token) or "access key"
}

func (e *LeakedError) Error() string {
	if e.Kind == "access key" {
		return "unauthenticated: access key " + e.Accessor + " was reported as leaked and disabled; create a new one"
	}
	return "unauthenticated: the token was reported as leaked and revoked; ask for a new one"
}

// Is makes a LeakedError match ErrUnauthenticated and ErrLeaked.
func (e *LeakedError) Is(target error) bool {
	return target == ErrUnauthenticated || target == ErrLeaked
}

// AttributedError is an authentication failure of a credential that names
// its principal without proving it (a well-formed access key id with a
// wrong secret, or a disabled key): the audit trail records the failure
// against that principal, so alerts and searches find the attempts.
type AttributedError struct {
	Kind string // a Kind constant
	ID   string
	Err  error
}

func (e *AttributedError) Error() string { return e.Err.Error() }

// Unwrap returns the failure.
func (e *AttributedError) Unwrap() error { return e.Err }
