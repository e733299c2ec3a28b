package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// AWS temporary credentials (docs/aws-kms.md, STS). Their session token is
// a role token marked SigV4Only: Lookup (every bearer path) refuses it, so
// it is usable only as the X-Amz-Security-Token of a request signed with
// the credentials. Their secret access key is never stored: it is an
// HMAC-SHA256, under a server key kept in the barrier, of the session
// token; their access key id names the token's accessor.

// SessionKeyIDPrefix starts the access key id of temporary credentials.
const SessionKeyIDPrefix = "cfst_"

// sessionKeyPath is where the key the session secrets derive from is
// stored, inside the barrier (encrypted like every entry, replicated with
// the store). It is made once, by the first replica that needs it, and
// never changes.
const sessionKeyPath = "auth/session-key"

// errSessionAsBearer refuses a session token presented as a bearer token.
var errSessionAsBearer = fmt.Errorf("%w: this is the session token of AWS temporary credentials: it is accepted only as the X-Amz-Security-Token of a request signed with them (AWS Signature Version 4)", ErrUnauthenticated)

// ErrExpired is matched (errors.Is), besides ErrUnauthenticated, by the
// refusal of a token presented after its expiry: AWS's doors answer it
// with their expired-token error, which the SDKs know.
var ErrExpired = errors.New("token expired")

type expiredError struct{ at time.Time }

func (e *expiredError) Error() string {
	return fmt.Sprintf("%v: the token expired at %s", ErrUnauthenticated, e.at.Format(time.RFC3339))
}

// Is makes an expiredError both ErrUnauthenticated and ErrExpired.
func (e *expiredError) Is(target error) bool {
	return target == ErrUnauthenticated || target == ErrExpired
}

// LookupSession returns the principal of the session token of temporary
// credentials presented from src: unknown, revoked, expired and
// out-of-network tokens are refused as by Lookup, and so is any token
// that is not a session token.
func (t *Tokens) LookupSession(token string, src netip.Addr) (Principal, error) {
	r, err := t.find(token, src)
	if err != nil {
		return Principal{}, err
	}
	if !r.SigV4Only {
		return Principal{}, fmt.Errorf("%w: X-Amz-Security-Token must be the session token of temporary credentials (AssumeRoleWithWebIdentity), not another token", ErrUnauthenticated)
	}
	return r.principal(), nil
}

// SessionKeyID is the access key id of the temporary credentials whose
// session token has accessor: cfst_ and the accessor's hex digits.
func SessionKeyID(accessor string) string {
	return SessionKeyIDPrefix + strings.ToUpper(strings.TrimPrefix(accessor, "acc_"))
}

// SessionKeyIDMatches reports, in constant time, whether id is the access
// key id of the session token with accessor.
func SessionKeyIDMatches(id, accessor string) bool {
	return subtle.ConstantTimeCompare([]byte(id), []byte(SessionKeyID(accessor))) == 1
}

// SessionSecret derives the secret access key of the session token: the
// HMAC-SHA256 of the token under the stored session key, in base64url.
// The caller wipes it once used.
func (t *Tokens) SessionSecret(ctx context.Context, token string) ([]byte, error) {
	// The key is read under sessMu, which forgetSessionKey holds to wipe
	// it: a key wiped while it was read would derive, from zero bytes, a
	// secret anyone holding the token could compute. A key dropped
	// between its load and the read is loaded again (from the store,
	// which refuses once sealed).
	for range 3 {
		if _, err := t.sessionKey(ctx); err != nil {
			return nil, err
		}
		t.sessMu.RLock()
		k := t.sessKey.Load()
		if k == nil {
			t.sessMu.RUnlock()
			continue
		}
		m := hmac.New(sha256.New, *k)
		t.sessMu.RUnlock()
		m.Write([]byte("coffer sigv4 session secret\x00"))
		m.Write([]byte(token))
		sum := m.Sum(nil)
		out := make([]byte, base64.RawURLEncoding.EncodedLen(len(sum)))
		base64.RawURLEncoding.Encode(out, sum)
		clear(sum)
		return out, nil
	}
	return nil, errors.New("the session key was dropped while it was read (the server is sealing or reloading); retry")
}

// sessionKey is the stored session key, made and stored on first use.
func (t *Tokens) sessionKey(ctx context.Context) ([]byte, error) {
	if k := t.sessKey.Load(); k != nil {
		return *k, nil
	}
	read := func() ([]byte, error) {
		e, err := t.store.Get(ctx, sessionKeyPath)
		if err != nil {
			return nil, err
		}
		k, derr := hex.DecodeString(string(e.Value))
		if derr != nil || len(k) != 32 {
			return nil, errors.New("the stored session key is malformed")
		}
		return k, nil
	}
	k, err := read()
	if errors.Is(err, storage.ErrNotFound) {
		fresh := make([]byte, 32)
		rand.Read(fresh)
		val := []byte(hex.EncodeToString(fresh))
		// Made once: a replica that made one at the same moment wins, and
		// this one reads it back.
		err = t.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: sessionKeyPath, Value: val, IfRevision: 0})
		clear(val)
		switch {
		case err == nil:
			k = fresh
		case errors.Is(err, storage.ErrConflict):
			clear(fresh)
			k, err = read()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading the session key: %w", err)
	}
	t.sessKey.Store(&k)
	return k, nil
}

// forgetSessionKey drops the cached session key (sealing, reloading).
func (t *Tokens) forgetSessionKey() {
	t.sessMu.Lock() // no secret is being derived from it
	defer t.sessMu.Unlock()
	if k := t.sessKey.Swap(nil); k != nil {
		clear(*k)
	}
}
