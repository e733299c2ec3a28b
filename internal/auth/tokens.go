// Package auth keeps Coffer's tokens: the root token made at init, tokens
// made by token create (carrying policies), and temporary tokens of roles
// (from assume-role, Kubernetes or certificate login) with a TTL, renewal
// limit, optional scope-down policy and source-network binding. Tokens are stored only as SHA-256 hashes (they carry
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
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/policy"
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

// Kinds of principals.
const (
	KindRoot      = "root"
	KindToken     = "token"      // made by token create, carries policies
	KindRole      = "role"       // a temporary token of a role
	KindAccessKey = "access-key" // a request authenticated by an access key
)

// Principal is an authenticated caller. Values are immutable snapshots.
type Principal struct {
	// Kind is one of the Kind constants.
	Kind string
	// ID names the principal within its kind: the token's accessor, the
	// access key's id.
	ID string
	// Accessor names the token without revealing it (empty for access
	// keys).
	Accessor    string
	DisplayName string
	Root        bool
	// Role is the role a temporary token acts in.
	Role string
	// Subject is who obtained a role token (access-key:ID, token:ACC,
	// role:NAME, kubernetes:CLUSTER/NS/SA, cert:NAME).
	Subject        string
	Cluster        string
	Namespace      string
	ServiceAccount string
	// Attributes are further claims (pod, pod_uid, session, ...).
	Attributes map[string]string
	// Policies are the stored policies a token or access key carries.
	Policies []string
	// Scope, when not nil, is a scope-down policy: the caller may do only
	// what its policies and Scope both allow.
	Scope *policy.Set
	// CIDRs bind a token to source networks.
	CIDRs []netip.Prefix
	// Policy is the principal as policies see it, built once per
	// credential (nil: build it per request).
	Policy       *policy.Principal
	CreatedAt    time.Time
	ExpiresAt    time.Time // zero: never
	MaxExpiresAt time.Time // renewal limit; zero: not renewable
}

// Name is how trust patterns and revocation name the principal: root,
// token:ACCESSOR, role:NAME or access-key:ID.
func (p *Principal) Name() string {
	switch p.Kind {
	case KindRoot:
		return "root"
	case KindRole:
		return "role:" + p.Role
	}
	return p.Kind + ":" + p.ID
}

// Store is where tokens persist; the barrier satisfies it.
type Store interface {
	Get(ctx context.Context, path string) (storage.Entry, error)
	List(ctx context.Context, prefix string) ([]string, error)
	Apply(ctx context.Context, ops ...storage.Op) error
}

// tokenRecord is a stored token. Records are never changed in place:
// renewal stores and swaps in a copy, so readers need no lock once they
// hold one.
type tokenRecord struct {
	Hash           []byte            `json:"hash"`
	Accessor       string            `json:"accessor"`
	DisplayName    string            `json:"display_name,omitempty"`
	Root           bool              `json:"root,omitempty"`
	Kind           string            `json:"kind,omitempty"` // empty: token or root (before roles)
	Role           string            `json:"role,omitempty"`
	Subject        string            `json:"subject,omitempty"`
	Cluster        string            `json:"cluster,omitempty"`
	Namespace      string            `json:"namespace,omitempty"`
	ServiceAccount string            `json:"service_account,omitempty"`
	Attributes     map[string]string `json:"attributes,omitempty"`
	Policies       []string          `json:"policies,omitempty"`
	Scope          string            `json:"scope,omitempty"` // scope-down policy YAML
	CIDRs          []string          `json:"cidrs,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	ExpiresAt      time.Time         `json:"expires_at,omitzero"`
	MaxExpiresAt   time.Time         `json:"max_expires_at,omitzero"`

	scope *policy.Set
	cidrs []netip.Prefix
	pp    *policy.Principal
}

// compile prepares the parsed forms of a loaded or new record.
func (r *tokenRecord) compile() error {
	if r.Kind == "" {
		r.Kind = KindToken
		if r.Root {
			r.Kind = KindRoot
		}
	}
	r.cidrs = r.cidrs[:0]
	for _, c := range r.CIDRs {
		pfx, err := ParseCIDR(c)
		if err != nil {
			return err
		}
		r.cidrs = append(r.cidrs, pfx)
	}
	pp := r.principal()
	r.pp = PolicyPrincipal(&pp)
	if r.Scope != "" {
		pol, err := policy.Parse("scope", []byte(r.Scope))
		if err != nil {
			return fmt.Errorf("%w: scope-down policy: %w", ErrInvalidArgument, err)
		}
		r.scope = policy.NewSet(pol)
	}
	return nil
}

// ParseCIDR parses a network (10.0.0.0/8) or one address (10.1.2.3).
func ParseCIDR(s string) (netip.Prefix, error) {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return pfx.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%w: %q is not a CIDR (10.0.0.0/8) or an address", ErrInvalidArgument, s)
}

func (r *tokenRecord) principal() Principal {
	return Principal{Kind: r.Kind, ID: r.Accessor, Accessor: r.Accessor, DisplayName: r.DisplayName, Root: r.Root,
		Role: r.Role, Subject: r.Subject, Cluster: r.Cluster, Namespace: r.Namespace, ServiceAccount: r.ServiceAccount,
		Attributes: r.Attributes, Policies: r.Policies, Scope: r.scope, CIDRs: r.cidrs, Policy: r.pp,
		CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, MaxExpiresAt: r.MaxExpiresAt}
}

// PolicyPrincipal is p as the policy engine sees it: a role token's id is
// its subject (who obtained it), and the cluster and subject are also
// attributes (principal.attr.cluster, principal.attr.subject).
func PolicyPrincipal(p *Principal) *policy.Principal {
	attrs := p.Attributes
	if p.Cluster != "" || p.Subject != "" {
		attrs = make(map[string]string, len(p.Attributes)+2)
		for k, v := range p.Attributes {
			attrs[k] = v
		}
		if p.Cluster != "" {
			attrs["cluster"] = p.Cluster
		}
		if p.Subject != "" {
			attrs["subject"] = p.Subject
		}
	}
	id := p.ID
	if p.Kind == KindRole && p.Subject != "" {
		id = p.Subject
	}
	return &policy.Principal{ID: id, Kind: p.Kind, Role: p.Role, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount, Attributes: attrs}
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
		if err := r.compile(); err != nil {
			return fmt.Errorf("loading %s: %w", p, err)
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

// Create makes a plain token. ttl 0 means DefaultTTL for ordinary tokens and
// no expiry for root tokens. value, when not empty, is used as the token
// instead of a fresh one (dev mode's --dev-root-token).
func (t *Tokens) Create(ctx context.Context, displayName string, root bool, ttl time.Duration, value string) (string, Principal, error) {
	return t.Issue(ctx, Spec{DisplayName: displayName, Root: root, TTL: ttl, Value: value})
}

// Spec describes a token to issue.
type Spec struct {
	DisplayName string
	Root        bool
	// TTL 0 means DefaultTTL (no expiry for root tokens).
	TTL time.Duration
	// MaxTTL, when set, makes the token renewable up to CreatedAt+MaxTTL.
	MaxTTL time.Duration
	// Value is the token to use instead of a fresh one (dev root token).
	Value string
	// Role, when set, makes a role token (KindRole).
	Role, Subject, Cluster, Namespace, ServiceAccount string
	Attributes                                        map[string]string
	Policies                                          []string
	// Scope is a scope-down policy document (YAML).
	Scope string
	CIDRs []string
}

// Issue makes a token as spec says and returns it; the token is shown only
// here.
func (t *Tokens) Issue(ctx context.Context, spec Spec) (string, Principal, error) {
	if spec.TTL < 0 || spec.TTL > MaxTTL {
		return "", Principal{}, fmt.Errorf("%w: ttl must be between 1s and %s", ErrInvalidArgument, MaxTTL)
	}
	if len(spec.DisplayName) > 256 {
		return "", Principal{}, fmt.Errorf("%w: display name is longer than 256 bytes", ErrInvalidArgument)
	}
	if spec.TTL == 0 && !spec.Root {
		spec.TTL = DefaultTTL
	}
	tok := spec.Value
	if tok == "" {
		tok = credential.New(credential.TokenPrefix)
	}
	sum := sha256.Sum256([]byte(tok))
	now := t.now().UTC()
	r := &tokenRecord{Hash: sum[:], Accessor: newAccessor(), DisplayName: spec.DisplayName, Root: spec.Root, CreatedAt: now,
		Role: spec.Role, Subject: spec.Subject, Cluster: spec.Cluster, Namespace: spec.Namespace, ServiceAccount: spec.ServiceAccount,
		Attributes: spec.Attributes, Policies: spec.Policies, Scope: spec.Scope, CIDRs: spec.CIDRs}
	if spec.Role != "" {
		r.Kind = KindRole
	}
	if spec.TTL > 0 {
		r.ExpiresAt = now.Add(spec.TTL)
	}
	if spec.MaxTTL > 0 {
		r.MaxExpiresAt = now.Add(spec.MaxTTL)
		if r.ExpiresAt.After(r.MaxExpiresAt) {
			r.ExpiresAt = r.MaxExpiresAt
		}
	}
	if err := r.compile(); err != nil {
		return "", Principal{}, err
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

// Lookup returns the principal of a token presented from src (the zero
// address when unknown). Unknown, expired and out-of-network tokens give
// ErrUnauthenticated with a reason that reveals nothing about the secret.
func (t *Tokens) Lookup(token string, src netip.Addr) (Principal, error) {
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
		if !credential.Valid(credential.TokenPrefix, token) {
			return Principal{}, fmt.Errorf("%w: the token is malformed (Coffer tokens start with %s and carry a checksum)", ErrUnauthenticated, credential.TokenPrefix)
		}
		return Principal{}, fmt.Errorf("%w: the token is unknown or was revoked", ErrUnauthenticated)
	}
	if !r.ExpiresAt.IsZero() && !t.now().Before(r.ExpiresAt) {
		return Principal{}, fmt.Errorf("%w: the token expired at %s", ErrUnauthenticated, r.ExpiresAt.Format(time.RFC3339))
	}
	if len(r.cidrs) > 0 && !inAny(r.cidrs, src) {
		return Principal{}, fmt.Errorf("%w: the token is bound to %s and this request came from %s", ErrUnauthenticated, strings.Join(r.CIDRs, ", "), src)
	}
	return r.principal(), nil
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Get returns the principal of a token by accessor (for simulation and
// administration); ok is false when it is unknown.
func (t *Tokens) Get(accessor string) (Principal, bool) {
	t.mu.RLock()
	r := t.byAccessor[accessor]
	t.mu.RUnlock()
	if r == nil {
		return Principal{}, false
	}
	return r.principal(), true
}

// Renew extends a renewable token to now+increment, at most to its
// MaxExpiresAt. increment 0 renews by the token's original TTL.
func (t *Tokens) Renew(ctx context.Context, accessor string, increment time.Duration) (Principal, error) {
	t.mu.RLock()
	r := t.byAccessor[accessor]
	t.mu.RUnlock()
	if r == nil {
		return Principal{}, fmt.Errorf("%w: no such token or accessor", ErrNotFound)
	}
	now := t.now().UTC()
	if r.MaxExpiresAt.IsZero() {
		return Principal{}, fmt.Errorf("%w: the token is not renewable (only role tokens are); get a new one", ErrInvalidArgument)
	}
	if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
		return Principal{}, fmt.Errorf("%w: the token expired at %s", ErrUnauthenticated, r.ExpiresAt.Format(time.RFC3339))
	}
	if increment < 0 {
		return Principal{}, fmt.Errorf("%w: increment must be positive", ErrInvalidArgument)
	}
	if increment == 0 {
		increment = r.ExpiresAt.Sub(r.CreatedAt)
	}
	n := *r
	n.ExpiresAt = now.Add(increment)
	if n.ExpiresAt.After(n.MaxExpiresAt) {
		n.ExpiresAt = n.MaxExpiresAt
	}
	val, _ := json.Marshal(&n)
	if err := t.store.Apply(ctx, storage.Put(tokenPath+n.Accessor, val)); err != nil {
		return Principal{}, err
	}
	t.mu.Lock()
	if t.byAccessor[accessor] == r { // not revoked meanwhile
		t.byHash[[32]byte(n.Hash)] = &n
		t.byAccessor[accessor] = &n
	}
	t.mu.Unlock()
	return n.principal(), nil
}

// RevokeWhere revokes every token whose principal matches and returns how
// many it revoked. Memory is updated as each deletion is stored, so a
// revoked token fails from its next request on.
func (t *Tokens) RevokeWhere(ctx context.Context, match func(*Principal) bool) (int, error) {
	t.mu.RLock()
	var hit []string
	for acc, r := range t.byAccessor {
		p := r.principal()
		if match(&p) {
			hit = append(hit, acc)
		}
	}
	t.mu.RUnlock()
	n := 0
	for _, acc := range hit {
		if err := t.Revoke(ctx, "", acc); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return n, err
		}
		n++
	}
	return n, nil
}

// PolicyUsers maps each policy name to the accessors of the tokens
// carrying it.
func (t *Tokens) PolicyUsers() map[string][]string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := map[string][]string{}
	for acc, r := range t.byAccessor {
		for _, p := range r.Policies {
			out[p] = append(out[p], acc)
		}
	}
	return out
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
