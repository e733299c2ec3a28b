// Package iam is Coffer's identity and access management: stored policies,
// roles and their trust, access keys, Kubernetes clusters for workload
// identity, key policies, and the authorizer that enforces them on every
// request.
//
// Reads are lock-free: the whole configuration lives in an immutable
// snapshot (with every policy set compiled) behind an atomic pointer, and
// each change stores the new object first, then swaps in a rebuilt
// snapshot. Authorization therefore costs one pointer load and the policy
// evaluation (docs/benchmarks.md).
package iam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/k8sauth"
	"github.com/cofferkms/coffer/internal/policy"
	"github.com/cofferkms/coffer/internal/storage"
)

// Errors of the identity service. Authentication and authorization
// failures use auth.ErrUnauthenticated and auth.ErrForbidden.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
	ErrExists          = errors.New("already exists")
	ErrInUse           = errors.New("in use")
)

// Limits.
const (
	// HardMaxTTL caps every role token, whatever the role says.
	HardMaxTTL = 12 * time.Hour
	// DefaultRoleTTL is a role token's lifetime when neither the role nor
	// the request says.
	DefaultRoleTTL = time.Hour
	// DefaultAudience is the audience a projected token must carry when a
	// role's Kubernetes trust names none.
	DefaultAudience = "coffer"

	maxPolicies   = 64 // per role, access key or token
	maxTrust      = 64
	maxNameLen    = 64
	maxDescLen    = 1024
	lastUsedFlush = time.Minute
)

// Storage paths under the barrier.
const (
	policyPath    = "iam/policies/"
	rolePath      = "iam/roles/"
	accessKeyPath = "iam/accesskeys/"
	clusterPath   = "iam/clusters/"
	keyPolicyPath = "iam/keypolicies/"
	revokedPath   = "iam/revoked/"
)

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func checkName(what, name string) error {
	if name == "" || len(name) > maxNameLen || !nameRe.MatchString(name) {
		return fmt.Errorf("%w: %s name %q must be 1..%d letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalidArgument, what, name, maxNameLen)
	}
	return nil
}

// Store is where the configuration persists; the barrier satisfies it.
type Store = auth.Store

// KeyNames resolves a key id or alias to the key's id and aliases; the key
// service satisfies it.
type KeyNames interface {
	Names(ref string) (id string, aliases []string, err error)
}

// Service is the identity service.
type Service struct {
	store  Store
	tokens *auth.Tokens
	keys   KeyNames
	now    func() time.Time

	mu    sync.Mutex // serializes changes
	state atomic.Pointer[state]

	usageMu sync.Mutex
	usage   map[string]usage // access key id -> last use not yet stored

	refreshMu sync.Mutex
	refreshed map[string]time.Time // cluster -> last JWKS refresh attempt
}

type usage struct {
	at     time.Time
	source string
}

// New returns the identity service. now is time.Now when nil.
func New(store Store, tokens *auth.Tokens, keys KeyNames, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	s := &Service{store: store, tokens: tokens, keys: keys, now: now, usage: map[string]usage{}, refreshed: map[string]time.Time{}}
	s.state.Store(newState())
	return s
}

// state is one immutable snapshot of the configuration.
type state struct {
	policies    map[string]*storedPolicy
	roles       map[string]*roleEntry
	accessKeys  map[string]*accessKeyEntry
	clusters    map[string]*clusterEntry
	keyPolicies map[string]*keyPolicyEntry // by key id
	revoked     map[string]time.Time       // principal -> tokens issued before are void

	// tokenSets caches the compiled sets of tokens' policy lists.
	tokenSets sync.Map // "\x00"-joined names -> *policy.Set
}

type storedPolicy struct {
	Policy
	parsed *policy.Policy
}

type roleEntry struct {
	Role
	set             *policy.Set
	ttl, maxTTL     time.Duration
	trustPrincipals []string
}

type accessKeyEntry struct {
	accessKeyRecord
	set *policy.Set
}

type clusterEntry struct {
	Cluster
	verifier k8sauth.Verifier
}

type keyPolicyEntry struct {
	doc string
	set *policy.Set
}

func newState() *state {
	return &state{policies: map[string]*storedPolicy{}, roles: map[string]*roleEntry{}, accessKeys: map[string]*accessKeyEntry{},
		clusters: map[string]*clusterEntry{}, keyPolicies: map[string]*keyPolicyEntry{}, revoked: map[string]time.Time{}}
}

// clone copies the maps (not the entries, which are immutable) so a change
// can build the next snapshot.
func (st *state) clone() *state {
	n := newState()
	for k, v := range st.policies {
		n.policies[k] = v
	}
	for k, v := range st.roles {
		n.roles[k] = v
	}
	for k, v := range st.accessKeys {
		n.accessKeys[k] = v
	}
	for k, v := range st.clusters {
		n.clusters[k] = v
	}
	for k, v := range st.keyPolicies {
		n.keyPolicies[k] = v
	}
	for k, v := range st.revoked {
		n.revoked[k] = v
	}
	return n
}

// setOf compiles the named policies; unknown names are skipped (a policy
// cannot be deleted while attached, so they occur only transiently).
func (st *state) setOf(names []string) *policy.Set {
	ps := make([]*policy.Policy, 0, len(names))
	for _, n := range names {
		if p := st.policies[n]; p != nil {
			ps = append(ps, p.parsed)
		}
	}
	return policy.NewSet(ps...)
}

// relink recompiles every role's and access key's set after policies
// changed.
func (st *state) relink() {
	for k, r := range st.roles {
		c := *r
		c.set = st.setOf(r.Policies)
		st.roles[k] = &c
	}
	for k, a := range st.accessKeys {
		c := *a
		c.set = st.setOf(a.Policies)
		st.accessKeys[k] = &c
	}
}

// change runs f on a copy of the state under the write lock and publishes
// the copy if f succeeds. f stores before it changes the copy.
func (s *Service) change(f func(st *state) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.state.Load().clone()
	if err := f(n); err != nil {
		return err
	}
	s.state.Store(n)
	return nil
}

// Load reads the configuration; call it after unsealing (after the token
// store is loaded).
func (s *Service) Load(ctx context.Context) error {
	n := newState()
	err := s.loadEach(ctx, policyPath, func(path string, v []byte) error {
		var p Policy
		if err := json.Unmarshal(v, &p); err != nil {
			return err
		}
		parsed, err := policy.Parse(p.Name, []byte(p.Document))
		if err != nil {
			return err
		}
		n.policies[p.Name] = &storedPolicy{Policy: p, parsed: parsed}
		return nil
	})
	if err == nil {
		err = s.loadEach(ctx, rolePath, func(path string, v []byte) error {
			var r Role
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			e, err := compileRole(r)
			if err != nil {
				return err
			}
			n.roles[r.Name] = e
			return nil
		})
	}
	if err == nil {
		err = s.loadEach(ctx, accessKeyPath, func(path string, v []byte) error {
			var a accessKeyRecord
			if err := json.Unmarshal(v, &a); err != nil || len(a.Hash) != 32 {
				return errors.New("malformed access key record")
			}
			n.accessKeys[a.ID] = &accessKeyEntry{accessKeyRecord: a}
			return nil
		})
	}
	if err == nil {
		err = s.loadEach(ctx, clusterPath, func(path string, v []byte) error {
			var c Cluster
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			e, err := compileCluster(c, s.now)
			if err != nil {
				return err
			}
			n.clusters[c.Name] = e
			return nil
		})
	}
	if err == nil {
		err = s.loadEach(ctx, keyPolicyPath, func(path string, v []byte) error {
			id := strings.TrimPrefix(path, keyPolicyPath)
			p, err := policy.Parse("key-policy/"+id, v)
			if err != nil {
				return err
			}
			n.keyPolicies[id] = &keyPolicyEntry{doc: string(v), set: policy.NewSet(p)}
			return nil
		})
	}
	if err == nil {
		err = s.loadEach(ctx, revokedPath, func(path string, v []byte) error {
			name, err := url.PathUnescape(strings.TrimPrefix(path, revokedPath))
			if err != nil {
				return err
			}
			var t time.Time
			if err := t.UnmarshalText(v); err != nil {
				return err
			}
			n.revoked[name] = t
			return nil
		})
	}
	if err != nil {
		return err
	}
	n.relink()
	s.mu.Lock()
	s.state.Store(n)
	s.mu.Unlock()
	return nil
}

func (s *Service) loadEach(ctx context.Context, prefix string, f func(path string, v []byte) error) error {
	paths, err := s.store.List(ctx, prefix)
	if err != nil {
		return err
	}
	for _, p := range paths {
		e, err := s.store.Get(ctx, p)
		if err != nil {
			return fmt.Errorf("loading %s: %w", p, err)
		}
		if err := f(p, e.Value); err != nil {
			return fmt.Errorf("loading %s: %w", p, err)
		}
	}
	return nil
}

// Unload forgets the configuration; call it when sealing.
func (s *Service) Unload() {
	s.mu.Lock()
	s.state.Store(newState())
	s.mu.Unlock()
	s.usageMu.Lock()
	s.usage = map[string]usage{}
	s.usageMu.Unlock()
}

// maxWriteAttempts bounds the re-reads of a record whose stored revision
// moved on between the read and the compare-and-swap write of a change.
const maxWriteAttempts = 5

// writeStored changes the record at path as decided on its STORED value,
// not on this replica's cache, which may lag the writes of other replicas
// by up to the freshness bound. decide gets the stored value (nil when
// there is none) and returns the value to store, or nil to delete the
// record; an error from decide is returned as is. The write is a
// compare-and-swap on the revision read (0: the record must still be
// absent), so a change another replica stored meanwhile is never
// overwritten: the record is read and decided again, up to
// maxWriteAttempts times, after which the answer is a conflict (HTTP 409
// conflict) the caller may retry. Call it inside change, and update the
// cache copy once it returns nil.
func (s *Service) writeStored(ctx context.Context, path, what string, decide func(cur []byte) ([]byte, error)) error {
	return s.writeStoredWith(ctx, path, what, nil, decide)
}

// writeStoredWith is writeStored whose write also carries the conditions
// conds returns, read again at each attempt (the stored policies a record
// names: policyConds).
func (s *Service) writeStoredWith(ctx context.Context, path, what string, conds func() ([]storage.Op, error), decide func(cur []byte) ([]byte, error)) error {
	for range maxWriteAttempts {
		var ops []storage.Op
		if conds != nil {
			var err error
			if ops, err = conds(); err != nil {
				return err
			}
		}
		var cur []byte
		var rev int64
		e, err := s.store.Get(ctx, path)
		switch {
		case err == nil:
			cur, rev = e.Value, e.Revision
			if cur == nil {
				cur = []byte{}
			}
		case !errors.Is(err, storage.ErrNotFound):
			return err
		}
		next, err := decide(cur)
		if err != nil {
			return err
		}
		op := storage.Op{Kind: storage.OpPut, Key: path, Value: next, IfRevision: rev}
		if next == nil {
			op.Kind = storage.OpDelete
		}
		err = s.store.Apply(ctx, append(ops, op)...)
		if errors.Is(err, storage.ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("%s was changed on other replicas %d times while this change was being decided; retry: %w", what, maxWriteAttempts, storage.ErrConflict)
}

// parseDuration reads 90s, 15m, 1h or 7d.
func parseDuration(what, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if days, ok := strings.CutSuffix(v, "d"); ok {
			if n, err2 := time.ParseDuration(days + "h"); err2 == nil {
				d, err = 24*n, nil
			}
		}
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: %s %q: want a positive duration like 15m, 1h or 7d", ErrInvalidArgument, what, v)
	}
	return d, nil
}

// policyError flattens a policy parse error (one line per problem) into
// one message.
func policyError(err error) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, strings.ReplaceAll(err.Error(), "\n", "; "))
}
