// Package auth authenticates callers. In this release the credential is a
// bearer token: the root token made at init, and tokens the root token
// creates with a TTL. Tokens are stored only as SHA-256 hashes (they carry
// 240 random bits, so a fast hash is enough) and compared in constant time.
//
// Every token also has an accessor: a non-secret handle that names the token
// in listings and audit records and lets an operator revoke it without
// knowing it.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/storage"
)

// Errors of authentication.
var (
	// ErrUnauthenticated means no valid credential was presented.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrInvalidArgument wraps bad token requests.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound means the token or accessor is unknown.
	ErrNotFound = errors.New("token not found")
)

// Limits of tokens.
const (
	DefaultTTL = 24 * time.Hour
	MaxTTL     = 30 * 24 * time.Hour
	tokenPath  = "auth/tokens/"
)

// Principal is an authenticated caller.
type Principal struct {
	// Accessor names the credential without revealing it.
	Accessor    string
	DisplayName string
	Root        bool
	CreatedAt   time.Time
	ExpiresAt   time.Time // zero: never
}

// Store is where tokens persist; the barrier satisfies it.
type Store interface {
	Get(ctx context.Context, path string) (storage.Entry, error)
	List(ctx context.Context, prefix string) ([]string, error)
	Apply(ctx context.Context, ops ...storage.Op) error
}

type tokenRecord struct {
	Hash        []byte    `json:"hash"`
	Accessor    string    `json:"accessor"`
	DisplayName string    `json:"display_name,omitempty"`
	Root        bool      `json:"root,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
}

func (r *tokenRecord) principal() Principal {
	return Principal{Accessor: r.Accessor, DisplayName: r.DisplayName, Root: r.Root, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}
}

// Tokens is the token store, cached in memory while unsealed.
type Tokens struct {
	store Store
	now   func() time.Time

	mu         sync.RWMutex
	byHash     map[[32]byte]*tokenRecord
	byAccessor map[string]*tokenRecord
	leaked     map[string]string // hex SHA-256 of reported tokens -> accessor
}

// NewTokens returns a token store over store; now is time.Now when nil.
func NewTokens(store Store, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	return &Tokens{store: store, now: now, byHash: map[[32]byte]*tokenRecord{}, byAccessor: map[string]*tokenRecord{}, leaked: map[string]string{}}
}

// Load reads every token into memory; call it after unsealing.
func (t *Tokens) Load(ctx context.Context) error {
	paths, err := t.store.List(ctx, tokenPath)
	if err != nil {
		return err
	}
	byHash := make(map[[32]byte]*tokenRecord, len(paths))
	byAcc := make(map[string]*tokenRecord, len(paths))
	for _, p := range paths {
		e, err := t.store.Get(ctx, p)
		if err != nil {
			return fmt.Errorf("loading %s: %w", p, err)
		}
		r := &tokenRecord{}
		if err := json.Unmarshal(e.Value, r); err != nil || len(r.Hash) != 32 {
			return fmt.Errorf("loading %s: malformed token record", p)
		}
		byHash[[32]byte(r.Hash)] = r
		byAcc[r.Accessor] = r
	}
	leaked, err := t.loadLeaked(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.byHash, t.byAccessor, t.leaked = byHash, byAcc, leaked
	t.mu.Unlock()
	return nil
}

// Unload forgets the cached tokens; call it when sealing.
func (t *Tokens) Unload() {
	t.mu.Lock()
	t.byHash, t.byAccessor, t.leaked = map[[32]byte]*tokenRecord{}, map[string]*tokenRecord{}, map[string]string{}
	t.mu.Unlock()
}

// Create makes a token. ttl 0 means DefaultTTL for ordinary tokens and no
// expiry for root tokens. value, when not empty, is used as the token
// instead of a fresh one (dev mode's --dev-root-token).
func (t *Tokens) Create(ctx context.Context, displayName string, root bool, ttl time.Duration, value string) (string, Principal, error) {
	if ttl < 0 || ttl > MaxTTL {
		return "", Principal{}, fmt.Errorf("%w: ttl must be between 1s and %s", ErrInvalidArgument, MaxTTL)
	}
	if len(displayName) > 256 {
		return "", Principal{}, fmt.Errorf("%w: display name is longer than 256 bytes", ErrInvalidArgument)
	}
	if ttl == 0 && !root {
		ttl = DefaultTTL
	}
	tok := value
	if tok == "" {
		tok = credential.New(credential.TokenPrefix)
	}
	sum := sha256.Sum256([]byte(tok))
	now := t.now().UTC()
	r := &tokenRecord{Hash: sum[:], Accessor: newAccessor(), DisplayName: displayName, Root: root, CreatedAt: now}
	if ttl > 0 {
		r.ExpiresAt = now.Add(ttl)
	}
	val, _ := json.Marshal(r)
	if err := t.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: tokenPath + r.Accessor, Value: val, IfRevision: 0}); err != nil {
		return "", Principal{}, err
	}
	t.mu.Lock()
	t.byHash[sum] = r
	t.byAccessor[r.Accessor] = r
	t.mu.Unlock()
	return tok, r.principal(), nil
}

func newAccessor() string {
	var b [12]byte
	rand.Read(b[:])
	return "acc_" + hex.EncodeToString(b[:])
}

// Lookup returns the principal of a token. Unknown and expired tokens give
// ErrUnauthenticated with a reason that reveals nothing about the secret.
func (t *Tokens) Lookup(token string) (Principal, error) {
	if token == "" {
		return Principal{}, fmt.Errorf("%w: no token; send Authorization: Bearer <token> (COFFER_TOKEN for the CLI)", ErrUnauthenticated)
	}
	sum := sha256.Sum256([]byte(token))
	t.mu.RLock()
	r := t.byHash[sum]
	t.mu.RUnlock()
	if r == nil || subtle.ConstantTimeCompare(r.Hash, sum[:]) != 1 {
		if acc, ok := t.leakedAccessor(sum); ok {
			return Principal{}, &LeakedError{Accessor: acc}
		}
		return Principal{}, fmt.Errorf("%w: the token is unknown or was revoked", ErrUnauthenticated)
	}
	if !r.ExpiresAt.IsZero() && !t.now().Before(r.ExpiresAt) {
		return Principal{}, fmt.Errorf("%w: the token expired at %s", ErrUnauthenticated, r.ExpiresAt.Format(time.RFC3339))
	}
	return r.principal(), nil
}

// Revoke deletes a token given itself or its accessor.
func (t *Tokens) Revoke(ctx context.Context, token, accessor string) error {
	t.mu.RLock()
	var r *tokenRecord
	switch {
	case token != "":
		sum := sha256.Sum256([]byte(token))
		r = t.byHash[sum]
	case accessor != "":
		r = t.byAccessor[accessor]
	default:
		t.mu.RUnlock()
		return fmt.Errorf("%w: give a token or an accessor to revoke", ErrInvalidArgument)
	}
	t.mu.RUnlock()
	if r == nil {
		if accessor != "" && !strings.HasPrefix(accessor, "acc_") {
			return fmt.Errorf("%w: %q is not an accessor (they start with acc_)", ErrInvalidArgument, accessor)
		}
		return fmt.Errorf("%w: no such token or accessor", ErrNotFound)
	}
	if err := t.store.Apply(ctx, storage.Delete(tokenPath+r.Accessor)); err != nil {
		return err
	}
	t.mu.Lock()
	delete(t.byHash, [32]byte(r.Hash))
	delete(t.byAccessor, r.Accessor)
	t.mu.Unlock()
	return nil
}

// Sweep deletes expired tokens from storage and memory.
func (t *Tokens) Sweep(ctx context.Context) error {
	now := t.now()
	t.mu.RLock()
	var expired []*tokenRecord
	for _, r := range t.byAccessor {
		if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
			expired = append(expired, r)
		}
	}
	t.mu.RUnlock()
	var errs []error
	for _, r := range expired {
		if err := t.Revoke(ctx, "", r.Accessor); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
