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
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// Scopes are scope-down policies: the caller may do only what its
	// policies and every scope allow. A token made from a scoped session
	// inherits the session's scopes.
	Scopes []*policy.Set
	// ScopeDocuments are the scopes' YAML, for inheritance.
	ScopeDocuments []string
	// CIDRs bind a token to source networks.
	CIDRs []netip.Prefix
	// Parent is the accessor of the token this one was made with (token
	// create or assume-role from a token); revoking it revokes this one.
	Parent string
	// AccessKey is the access key a plain token was made from (directly or
	// through other tokens): the token may use only those of its policies
	// the key still carries, so narrowing or disabling the key reaches it.
	// A plain token made from a role token carries Role instead, with the
	// same effect for the role's current policies.
	AccessKey string
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
	Scope          string            `json:"scope,omitempty"`  // scope-down policy YAML (before inheritance: read, never written)
	Scopes         []string          `json:"scopes,omitempty"` // scope-down policies' YAML, all of which must allow
	CIDRs          []string          `json:"cidrs,omitempty"`
	Parent         string            `json:"parent,omitempty"`     // accessor of the token this one derives from
	AccessKey      string            `json:"access_key,omitempty"` // access key whose current policies bound a plain token
	CreatedAt      time.Time         `json:"created_at"`
	ExpiresAt      time.Time         `json:"expires_at,omitzero"`
	MaxExpiresAt   time.Time         `json:"max_expires_at,omitzero"`
	// SigV4Only marks the session token of AWS temporary credentials
	// (session.go): accepted only as the X-Amz-Security-Token of a request
	// signed with them, never as a bearer token.
	SigV4Only bool `json:"sigv4_only,omitempty"`

	scopes []*policy.Set
	cidrs  []netip.Prefix
	pp     *policy.Principal
	// rev is the stored revision this record was read or written over
	// (0: issued here, not read back); refresh.go compares it.
	rev int64
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
	if r.Scope != "" { // a record stored before scopes were inherited
		r.Scopes = append([]string{r.Scope}, r.Scopes...)
		r.Scope = ""
	}
	r.scopes = r.scopes[:0]
	for _, doc := range r.Scopes {
		pol, err := policy.Parse("scope", []byte(doc))
		if err != nil {
			return fmt.Errorf("%w: scope-down policy: %w", ErrInvalidArgument, err)
		}
		r.scopes = append(r.scopes, policy.NewSet(pol))
	}
	pp := r.principal()
	r.pp = PolicyPrincipal(&pp)
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
		Attributes: r.Attributes, Policies: r.Policies, Scopes: r.scopes, ScopeDocuments: r.Scopes, CIDRs: r.cidrs,
		Parent: r.Parent, AccessKey: r.AccessKey, Policy: r.pp, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, MaxExpiresAt: r.MaxExpiresAt}
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

	// gate orders writes: issuing and renewing share it, revoking holds it
	// alone. So a revocation sees every token issued before it started,
	// and no token it deleted is stored again by a renewal.
	gate    sync.RWMutex
	renewMu sync.Mutex

	mu         sync.RWMutex
	byHash     map[[32]byte]*tokenRecord
	byAccessor map[string]*tokenRecord
	leaked     map[string]string // hex SHA-256 of reported tokens -> accessor

	// sync, when set, waits until the cache holds every token stored by
	// other replicas so far (refresh.go, SetSync).
	sync atomic.Pointer[func(context.Context) error]
	// own holds the accessors of tokens this replica is storing, whose
	// first watch event is their own creation (refresh.go). Guarded by mu.
	own map[string]bool
	// deleted holds the accessors of tokens this replica deleted, whose
	// deletion's watch event has not arrived yet (refresh.go). Guarded by
	// mu.
	deleted map[string]struct{}
	// unrevoked holds the accessors of tokens deleted elsewhere whose
	// descendants cached here could not be revoked (dropLocked): a retry of
	// the deletion (sys's retry reads the path again) revokes them.
	// Guarded by mu.
	unrevoked map[string]struct{}
	// revision, when set, reads the shared store's revision (SetRevision).
	revision atomic.Pointer[func(context.Context) (int64, error)]
	// loadRev is the store's revision read just before the last Load
	// listed the tokens: a token stored at or before it and not cached was
	// gone when the load listed (refresh.go). Guarded by mu.
	loadRev int64
	// sessKey caches the key session secrets derive from (session.go).
	sessKey atomic.Pointer[[]byte]
	// sessMu keeps the cached session key from being wiped while a
	// secret is derived from it (session.go).
	sessMu sync.RWMutex
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
	var loadRev int64
	if f := t.revision.Load(); f != nil {
		rev, err := (*f)(ctx)
		if err != nil {
			return fmt.Errorf("loading tokens: reading the store's revision: %w", err)
		}
		loadRev = rev
	}
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
		r.rev = e.Revision
		byHash[[32]byte(r.Hash)] = r
		byAcc[r.Accessor] = r
	}
	leaked, err := t.loadLeaked(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.byHash, t.byAccessor, t.leaked = byHash, byAcc, leaked
	t.own = nil // what it marked is loaded; a later event must be read
	t.deleted = nil
	t.loadRev = loadRev
	t.mu.Unlock()
	t.forgetSessionKey() // read again: a restore may have brought another
	return nil
}

// Unload forgets the cached tokens; call it when sealing.
func (t *Tokens) Unload() {
	t.mu.Lock()
	t.byHash, t.byAccessor, t.leaked = map[[32]byte]*tokenRecord{}, map[string]*tokenRecord{}, map[string]string{}
	t.own, t.deleted, t.unrevoked = nil, nil, nil
	t.mu.Unlock()
	t.forgetSessionKey()
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
	// Parent is the caller the token is made for (token create,
	// assume-role); nil for logins with an outside identity. A non-root
	// parent bounds the token: it keeps the parent's scopes, networks
	// and subject, expires no later than the parent and is revoked with it.
	Parent *Principal
	// Valid, when set, is called just before the token is stored, in the
	// same ordering as revocations: an error refuses the token. It lets a
	// login check again that its role and principal were not revoked or
	// deleted meanwhile.
	Valid func() error
	// SigV4Only makes the session token of AWS temporary credentials:
	// Lookup refuses it, LookupSession takes only such tokens.
	SigV4Only bool
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
		Attributes: spec.Attributes, Policies: spec.Policies, CIDRs: spec.CIDRs, SigV4Only: spec.SigV4Only}
	if spec.Scope != "" {
		r.Scopes = []string{spec.Scope}
	}
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
	if p := spec.Parent; p != nil && !p.Root {
		if err := r.inherit(p, now); err != nil {
			return "", Principal{}, err
		}
	}
	if err := r.compile(); err != nil {
		return "", Principal{}, err
	}
	val, _ := json.Marshal(r)

	t.gate.RLock()
	defer t.gate.RUnlock()
	if p := spec.Parent; p != nil && p.Accessor != "" && !p.Root {
		t.mu.RLock()
		pr := t.byAccessor[p.Accessor]
		t.mu.RUnlock()
		if pr == nil {
			return "", Principal{}, fmt.Errorf("%w: the token that asked for this one was revoked", ErrUnauthenticated)
		}
		if pr.SigV4Only {
			// Its child would be a bearer token: SigV4Only escaped.
			return "", Principal{}, fmt.Errorf("%w: temporary credentials (AWS) make no tokens", ErrUnauthenticated)
		}
	}
	if spec.Valid != nil {
		if err := spec.Valid(); err != nil {
			return "", Principal{}, err
		}
	}
	t.markOwn(r.Accessor) // its watch event need not be read back (refresh.go)
	if err := t.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: tokenPath + r.Accessor, Value: val, IfRevision: 0}); err != nil {
		t.unmarkOwn(r.Accessor)
		return "", Principal{}, err
	}
	t.mu.Lock()
	t.byHash[sum] = r
	t.byAccessor[r.Accessor] = r
	t.mu.Unlock()
	return tok, r.principal(), nil
}

// inherit bounds a new token by the non-root principal p it is made for:
// it keeps p's scope-down policies, may be used only from networks p may
// use, expires no later than p (and renews no further than p can), names
// p's subject (so revoking that principal reaches it) and p's token as its
// parent (so revoking that token does too).
func (r *tokenRecord) inherit(p *Principal, now time.Time) error {
	r.Parent = p.Accessor
	if r.Role == "" {
		// A plain token acts as its maker: it keeps the role it acts in
		// and the workload identity (so denies on role:, principal.role,
		// principal.namespace, ... still apply) and the access key it
		// derives from; the authorizer then grants it only those of its
		// policies the role or the key still carries.
		r.Kind = KindToken
		r.Role, r.Cluster, r.Namespace, r.ServiceAccount = p.Role, p.Cluster, p.Namespace, p.ServiceAccount
		if len(p.Attributes) > 0 {
			r.Attributes = maps.Clone(p.Attributes)
		}
		r.AccessKey = p.AccessKey
		if p.Kind == KindAccessKey {
			r.AccessKey = p.ID
		}
	}
	if r.Subject == "" {
		r.Subject = p.Subject
		if r.Subject == "" {
			r.Subject = p.Name()
		}
	}
	r.Scopes = append(slices.Clone(p.ScopeDocuments), r.Scopes...)
	if len(p.CIDRs) > 0 {
		mine := make([]netip.Prefix, 0, len(r.CIDRs))
		for _, c := range r.CIDRs {
			pfx, err := ParseCIDR(c)
			if err != nil {
				return err
			}
			mine = append(mine, pfx)
		}
		both := intersectCIDRs(p.CIDRs, mine)
		if len(both) == 0 {
			return fmt.Errorf("%w: bound_cidrs: the caller may be used only from %s, and no network of the new token lies there", ErrInvalidArgument, joinPrefixes(p.CIDRs))
		}
		r.CIDRs = r.CIDRs[:0]
		for _, c := range both {
			r.CIDRs = append(r.CIDRs, c.String())
		}
	}
	if !p.ExpiresAt.IsZero() {
		if !now.Before(p.ExpiresAt) {
			return fmt.Errorf("%w: the caller's credential expired at %s", ErrUnauthenticated, p.ExpiresAt.Format(time.RFC3339))
		}
		if r.ExpiresAt.IsZero() || r.ExpiresAt.After(p.ExpiresAt) {
			r.ExpiresAt = p.ExpiresAt
		}
		limit := p.MaxExpiresAt
		if limit.IsZero() {
			limit = p.ExpiresAt
		}
		if !r.MaxExpiresAt.IsZero() && r.MaxExpiresAt.After(limit) {
			r.MaxExpiresAt = limit
		}
	}
	return nil
}

// intersectCIDRs returns the networks in both a and b (all of a when b is
// empty). Two prefixes either nest or are disjoint, so the intersection
// of the unions is the union of the pairwise smaller prefixes.
func intersectCIDRs(a, b []netip.Prefix) []netip.Prefix {
	if len(b) == 0 {
		return slices.Clone(a)
	}
	var out []netip.Prefix
	for _, x := range a {
		for _, y := range b {
			switch {
			case PrefixWithin(x, y):
				out = append(out, x)
			case PrefixWithin(y, x):
				out = append(out, y)
			}
		}
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int { return strings.Compare(x.String(), y.String()) })
	return slices.Compact(out)
}

// PrefixWithin reports whether every address of inner lies in outer.
func PrefixWithin(inner, outer netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
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
	r, err := t.find(token, src)
	if err != nil {
		return Principal{}, err
	}
	if r.SigV4Only {
		return Principal{}, errSessionAsBearer
	}
	return r.principal(), nil
}

// find is the live record of a token presented from src.
func (t *Tokens) find(token string, src netip.Addr) (*tokenRecord, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: no token; send Authorization: Bearer <token> (COFFER_TOKEN for the CLI)", ErrUnauthenticated)
	}
	sum := sha256.Sum256([]byte(token))
	t.mu.RLock()
	r := t.byHash[sum]
	t.mu.RUnlock()
	if r == nil || subtle.ConstantTimeCompare(r.Hash, sum[:]) != 1 {
		if acc, ok := t.leakedAccessor(sum); ok {
			return nil, &LeakedError{Accessor: acc}
		}
		if !credential.Valid(credential.TokenPrefix, token) {
			return nil, fmt.Errorf("%w: the token is malformed (Coffer tokens start with %s and carry a checksum)", ErrUnauthenticated, credential.TokenPrefix)
		}
		return nil, fmt.Errorf("%w: the token is unknown or was revoked", ErrUnauthenticated)
	}
	if !r.ExpiresAt.IsZero() && !t.now().Before(r.ExpiresAt) {
		return nil, &expiredError{at: r.ExpiresAt}
	}
	if len(r.cidrs) > 0 && !inAny(r.cidrs, src) {
		return nil, fmt.Errorf("%w: the token is bound to %s and this request came from %s", ErrUnauthenticated, strings.Join(r.CIDRs, ", "), src)
	}
	return r, nil
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
	t.gate.RLock() // a revocation cannot delete the token meanwhile
	defer t.gate.RUnlock()
	t.renewMu.Lock() // storage and memory keep the same, last renewal
	defer t.renewMu.Unlock()
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
	// Store the renewal only over the stored record: another replica may
	// have revoked the token (or renewed it) before this one heard of it,
	// and an unconditional write would bring a revoked token back.
	cur, err := t.store.Get(ctx, tokenPath+n.Accessor)
	if errors.Is(err, storage.ErrNotFound) {
		t.mu.Lock()
		t.forgetLocked(r)
		t.mu.Unlock()
		return Principal{}, fmt.Errorf("%w: the token was revoked", ErrNotFound)
	}
	if err != nil {
		return Principal{}, err
	}
	if err := t.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: tokenPath + n.Accessor, Value: val, IfRevision: cur.Revision}); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return Principal{}, fmt.Errorf("the token was renewed or revoked at the same time on another replica; retry: %w", err)
		}
		return Principal{}, err
	}
	n.rev = cur.Revision // no other write of it can come between (refresh.go)
	t.mu.Lock()
	t.byHash[[32]byte(n.Hash)] = &n
	t.byAccessor[accessor] = &n
	t.mu.Unlock()
	return n.principal(), nil
}

// Exclusive runs f while no token is issued, renewed or revoked: for
// changes elsewhere that must not interleave with a token being stored
// (deleting a policy a new token may name).
func (t *Tokens) Exclusive(f func() error) error {
	t.gate.Lock()
	defer t.gate.Unlock()
	return f()
}

// RevokeWhere revokes every token whose principal matches, and the tokens
// made from them, and returns how many it revoked. No token is issued
// while it runs, so none issued before it returns can escape it.
func (t *Tokens) RevokeWhere(ctx context.Context, match func(*Principal) bool) (int, error) {
	if err := t.syncOthers(ctx); err != nil {
		return 0, err
	}
	t.gate.Lock()
	defer t.gate.Unlock()
	t.mu.RLock()
	var hit []*tokenRecord
	for _, r := range t.byAccessor {
		p := r.principal()
		if match(&p) {
			hit = append(hit, r)
		}
	}
	t.mu.RUnlock()
	return t.revokeLocked(ctx, hit)
}

// revokeLocked deletes the tokens and their descendants (tokens whose
// parent chain leads to one of them) in one storage write, then from
// memory. The caller holds gate exclusively.
func (t *Tokens) revokeLocked(ctx context.Context, roots []*tokenRecord) (int, error) {
	if len(roots) == 0 {
		return 0, nil
	}
	t.mu.RLock()
	children := map[string][]*tokenRecord{}
	for _, r := range t.byAccessor {
		if r.Parent != "" {
			children[r.Parent] = append(children[r.Parent], r)
		}
	}
	t.mu.RUnlock()
	// The closure: the roots and everything made from them.
	closure := map[string]*tokenRecord{}
	queue := roots
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		if closure[r.Accessor] != nil {
			continue
		}
		closure[r.Accessor] = r
		queue = append(queue, children[r.Accessor]...)
	}
	// deleteLocked needs every token after the token it was made from.
	// A root may be made from another root (a role session's child keeps
	// the role, so RevokeWhere matches both, in map order): walk again
	// from the tokens whose parent is not being revoked.
	queue = queue[:0]
	for _, r := range closure {
		if closure[r.Parent] == nil {
			queue = append(queue, r)
		}
	}
	all := make([]*tokenRecord, 0, len(closure))
	placed := make(map[string]bool, len(closure))
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		if placed[r.Accessor] {
			continue
		}
		placed[r.Accessor] = true
		all = append(all, r)
		queue = append(queue, children[r.Accessor]...)
	}
	if err := t.deleteLocked(ctx, all); err != nil {
		return 0, err
	}
	return len(all), nil
}

// deleteLocked deletes the records from storage, then from memory. The
// caller holds gate exclusively, so the records are still current.
//
// recs lists every token after the token it was made from (revokeLocked's
// order). They are deleted in writes of at most revokeBatch, since etcd
// refuses a transaction of more than --max-txn-ops (128 by default), so a
// large revocation is not atomic. The batches go from the end of recs:
// every token is deleted in the same write as the token it was made from,
// or an earlier one. So a failure midway leaves the parents stored and
// cached with whatever remains below them, and repeating the revocation
// (same token, role or principal) finds them; it never leaves a token
// alive whose parent is gone. Replicas following the store see the
// children go before their parent, so they find no descendant left to
// revoke when the parent's deletion arrives. Each batch leaves the cache
// as soon as it is stored: the cache drops exactly what was deleted.
func (t *Tokens) deleteLocked(ctx context.Context, recs []*tokenRecord) error {
	for end := len(recs); end > 0; {
		start := max(0, end-revokeBatch)
		batch := recs[start:end]
		ops := make([]storage.Op, len(batch))
		for i, r := range batch {
			ops[i] = storage.Delete(tokenPath + r.Accessor)
		}
		if err := t.store.Apply(ctx, ops...); err != nil {
			if end < len(recs) {
				return fmt.Errorf("revoked %d of %d tokens; the rest, which the revoked ones were made from, are still valid: revoke again: %w", len(recs)-end, len(recs), err)
			}
			return err
		}
		t.mu.Lock()
		for _, r := range batch {
			t.forgetLocked(r)
		}
		t.mu.Unlock()
		end = start
	}
	return nil
}

// revokeBatch bounds the deletions of one revocation write, below etcd's
// default --max-txn-ops of 128.
const revokeBatch = 100

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

// Revoke deletes a token given itself or its accessor, and the tokens
// made from it.
func (t *Tokens) Revoke(ctx context.Context, token, accessor string) error {
	if token == "" && accessor == "" {
		return fmt.Errorf("%w: give a token or an accessor to revoke", ErrInvalidArgument)
	}
	if err := t.syncOthers(ctx); err != nil {
		return err
	}
	t.gate.Lock()
	defer t.gate.Unlock()
	t.mu.RLock()
	var r *tokenRecord
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		r = t.byHash[sum]
	} else {
		r = t.byAccessor[accessor]
	}
	t.mu.RUnlock()
	if r == nil {
		if accessor != "" && !strings.HasPrefix(accessor, "acc_") {
			if _, isCred := credential.Kind(accessor); isCred {
				// Not repeated: it is a credential, maybe this very token.
				return fmt.Errorf("%w: that is a credential, not an accessor (they start with acc_); pass a token as token", ErrInvalidArgument)
			}
			return fmt.Errorf("%w: %q is not an accessor (they start with acc_)", ErrInvalidArgument, accessor)
		}
		return fmt.Errorf("%w: no such token or accessor", ErrNotFound)
	}
	_, err := t.revokeLocked(ctx, []*tokenRecord{r})
	return err
}

// Sweep deletes expired tokens from storage and memory.
func (t *Tokens) Sweep(ctx context.Context) error {
	// Only the expired tokens themselves: expiry is not revocation, and a
	// token made from one cannot outlive its parent's renewal limit anyway.
	t.gate.Lock()
	defer t.gate.Unlock()
	now := t.now()
	t.mu.RLock()
	var expired []*tokenRecord
	for _, r := range t.byAccessor {
		if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
			expired = append(expired, r)
		}
	}
	t.mu.RUnlock()
	// On a store shared by replicas this cache may be behind: a token
	// renewed on another replica shortly before it expired still looks
	// expired here. The stored record decides, and it is deleted only if
	// unchanged since it was read; a renewed one reaches the cache through
	// the watch. Batches stay below etcd's default of 128 ops per
	// transaction.
	var errs []error
	for len(expired) > 0 {
		n := min(len(expired), sweepBatch)
		errs = append(errs, t.sweepStored(ctx, expired[:n], now))
		expired = expired[n:]
	}
	return errors.Join(errs...)
}

// sweepBatch bounds the deletions of one sweep write.
const sweepBatch = 100

// sweepStored deletes those of recs whose stored record is still expired
// at now, with compare-and-swap on the revision read, and drops them from
// the cache. A conflict (a token renewed or revoked meanwhile) leaves its
// batch to the next sweep.
func (t *Tokens) sweepStored(ctx context.Context, recs []*tokenRecord, now time.Time) error {
	var ops []storage.Op
	var gone []*tokenRecord
	for _, r := range recs {
		e, err := t.store.Get(ctx, tokenPath+r.Accessor)
		if errors.Is(err, storage.ErrNotFound) {
			gone = append(gone, r) // deleted elsewhere
			continue
		}
		if err != nil {
			return err
		}
		var stored tokenRecord
		if err := json.Unmarshal(e.Value, &stored); err != nil || stored.ExpiresAt.IsZero() || now.Before(stored.ExpiresAt) {
			continue
		}
		ops = append(ops, storage.Op{Kind: storage.OpDelete, Key: tokenPath + r.Accessor, IfRevision: e.Revision})
		gone = append(gone, r)
	}
	if err := t.store.Apply(ctx, ops...); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil // changed meanwhile: decided again at the next sweep
		}
		return err
	}
	t.mu.Lock()
	for _, r := range gone {
		t.forgetLocked(r)
	}
	t.mu.Unlock()
	return nil
}
