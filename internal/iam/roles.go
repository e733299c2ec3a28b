package iam

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/policy"
	"github.com/cofferkms/coffer/internal/storage"
)

// compileRole validates a role and prepares its durations.
func compileRole(r Role) (*roleEntry, error) {
	if err := checkName("role", r.Name); err != nil {
		return nil, err
	}
	if len(r.Description) > maxDescLen {
		return nil, fmt.Errorf("%w: description is longer than %d bytes", ErrInvalidArgument, maxDescLen)
	}
	e := &roleEntry{Role: r}
	var err error
	if e.ttl, err = parseDuration("ttl", r.TTL); err != nil {
		return nil, err
	}
	if e.maxTTL, err = parseDuration("max_ttl", r.MaxTTL); err != nil {
		return nil, err
	}
	if e.ttl == 0 {
		e.ttl = DefaultRoleTTL
		if e.maxTTL > 0 && e.maxTTL < e.ttl {
			e.ttl = e.maxTTL
		}
	}
	if e.maxTTL == 0 {
		e.maxTTL = e.ttl
	}
	if e.maxTTL > HardMaxTTL {
		return nil, fmt.Errorf("%w: max_ttl %s is above the hard cap of %s", ErrInvalidArgument, r.MaxTTL, HardMaxTTL)
	}
	if e.ttl > e.maxTTL {
		return nil, fmt.Errorf("%w: ttl %s is longer than max_ttl %s", ErrInvalidArgument, e.ttl, e.maxTTL)
	}
	if n := len(r.TrustPrincipals) + len(r.Kubernetes) + len(r.Certificates); n > maxTrust {
		return nil, fmt.Errorf("%w: %d trust entries; at most %d", ErrInvalidArgument, n, maxTrust)
	}
	for _, t := range r.TrustPrincipals {
		if err := checkGlob("trust_principals", t); err != nil {
			return nil, err
		}
	}
	e.Kubernetes = slices.Clone(r.Kubernetes)
	for i, k := range r.Kubernetes {
		for what, g := range map[string]string{"cluster": k.Cluster, "namespace": k.Namespace, "service_account": k.ServiceAccount} {
			if g == "" {
				return nil, fmt.Errorf("%w: kubernetes[%d].%s is required (use * for any)", ErrInvalidArgument, i, what)
			}
			if err := checkGlob(fmt.Sprintf("kubernetes[%d].%s", i, what), g); err != nil {
				return nil, err
			}
		}
		if k.Audience == "" {
			e.Kubernetes[i].Audience = DefaultAudience
		}
	}
	for i, c := range r.Certificates {
		if c.CommonName == "" && c.DNSName == "" {
			return nil, fmt.Errorf("%w: certificates[%d] needs common_name or dns_name", ErrInvalidArgument, i)
		}
		for _, g := range []string{c.CommonName, c.DNSName} {
			if g != "" {
				if err := checkGlob(fmt.Sprintf("certificates[%d]", i), g); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, c := range r.BoundCIDRs {
		if _, err := auth.ParseCIDR(c); err != nil {
			return nil, fmt.Errorf("%w: bound_cidrs: %q is not a CIDR", ErrInvalidArgument, c)
		}
	}
	return e, nil
}

// checkGlob validates a trust pattern (path.Match syntax: * ? [...]).
func checkGlob(what, g string) error {
	if len(g) > 256 {
		return fmt.Errorf("%w: %s: pattern longer than 256 bytes", ErrInvalidArgument, what)
	}
	if _, err := path.Match(g, ""); err != nil {
		return fmt.Errorf("%w: %s: bad pattern %q (use * ? and [a-z])", ErrInvalidArgument, what, g)
	}
	return nil
}

func globMatch(pattern, s string) bool {
	ok, _ := path.Match(pattern, s)
	return ok
}

// CreateRole stores a new role.
func (s *Service) CreateRole(ctx context.Context, r Role) (Role, error) {
	return s.putRole(ctx, r, true, nil)
}

// UpdateRole replaces an existing role. Tokens already issued keep their
// lifetime but get the new policies from their next request.
func (s *Service) UpdateRole(ctx context.Context, name string, r Role) (Role, error) {
	if r.Name != "" && r.Name != name {
		return Role{}, fmt.Errorf("%w: the body names role %q but the path %q; roles cannot be renamed", ErrInvalidArgument, r.Name, name)
	}
	r.Name = name
	return s.putRole(ctx, r, false, nil)
}

// UpdateRoleBy is UpdateRole asked for by caller (nil: the server itself).
// A caller acting in the role (one of its sessions, or a token made from
// one) may not attach a policy the role does not carry already: no
// principal grants itself rights, through its role no more than through
// its access key (UpdateAccessKeyBy).
func (s *Service) UpdateRoleBy(ctx context.Context, caller *auth.Principal, name string, r Role) (Role, error) {
	if r.Name != "" && r.Name != name {
		return Role{}, fmt.Errorf("%w: the body names role %q but the path %q; roles cannot be renamed", ErrInvalidArgument, r.Name, name)
	}
	r.Name = name
	return s.putRole(ctx, r, false, func(old *roleEntry) error {
		if caller == nil || caller.Root || caller.Role != name {
			return nil
		}
		for _, n := range r.Policies {
			if !slices.Contains(old.Policies, n) {
				return fmt.Errorf("%w: %s may not attach policy %q to role %q, in which it acts: the role does not carry it (no principal may grant itself rights)", auth.ErrForbidden, caller.Name(), n, name)
			}
		}
		return nil
	})
}

// putRole creates or replaces a role; check, when set, may refuse the
// replacement of old. Whether the role exists, what check sees and the
// creation time kept are the stored role's, not the cached one's: the
// cache may lag another replica's change (writeStored).
func (s *Service) putRole(ctx context.Context, r Role, create bool, check func(old *roleEntry) error) (Role, error) {
	if r.Policies == nil {
		r.Policies = []string{}
	}
	e, err := compileRole(r)
	if err != nil {
		return Role{}, err
	}
	err = s.change(func(st *state) error {
		if err := checkPolicyNames(r.Policies); err != nil {
			return err
		}
		conds := func() ([]storage.Op, error) { return s.policyConds(ctx, r.Policies) }
		err := s.writeStoredWith(ctx, rolePath+r.Name, "role "+r.Name, conds, func(cur []byte) ([]byte, error) {
			var old *roleEntry
			if cur != nil {
				var stored Role
				if err := json.Unmarshal(cur, &stored); err != nil {
					return nil, fmt.Errorf("role %q: malformed stored record", r.Name)
				}
				old = &roleEntry{Role: stored}
			}
			switch {
			case create && old != nil:
				return nil, fmt.Errorf("%w: role %q exists; update it with PUT /v1/roles/%s", ErrExists, r.Name, r.Name)
			case !create && old == nil:
				return nil, fmt.Errorf("%w: role %q does not exist", ErrNotFound, r.Name)
			}
			if check != nil && old != nil {
				if err := check(old); err != nil {
					return nil, err
				}
			}
			now := s.now().UTC()
			e.CreatedAt, e.UpdatedAt = now, now
			if old != nil {
				e.CreatedAt = old.CreatedAt
			}
			return json.Marshal(e.Role)
		})
		if err != nil {
			return err
		}
		e.set = st.setOf(e.Policies)
		st.roles[r.Name] = e
		return nil
	})
	return e.Role, err
}

// GetRole returns a role.
func (s *Service) GetRole(_ context.Context, name string) (Role, error) {
	r := s.state.Load().roles[name]
	if r == nil {
		return Role{}, fmt.Errorf("%w: role %q does not exist", ErrNotFound, name)
	}
	return r.Role, nil
}

// ListRoles returns every role by name.
func (s *Service) ListRoles(_ context.Context) []Role {
	st := s.state.Load()
	out := make([]Role, 0, len(st.roles))
	for _, r := range st.roles {
		out = append(out, r.Role)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DeleteRole deletes a role and revokes its tokens.
func (s *Service) DeleteRole(ctx context.Context, name string) (int, error) {
	err := s.change(func(st *state) error {
		// Whether it exists is the store's say, not the cache's.
		if err := s.writeStored(ctx, rolePath+name, "role "+name, func(cur []byte) ([]byte, error) {
			if cur == nil {
				return nil, fmt.Errorf("%w: role %q does not exist", ErrNotFound, name)
			}
			return nil, nil
		}); err != nil {
			return err
		}
		delete(st.roles, name)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return s.RevokeRole(ctx, name)
}

// AssumeRole exchanges the caller's credential for a temporary token of
// a role. The caller must be trusted by the role (or be root); the server
// has already checked auth:AssumeRole against the caller's policies.
func (s *Service) AssumeRole(ctx context.Context, caller *auth.Principal, req AssumeRoleRequest) (string, auth.Principal, error) {
	r := s.state.Load().roles[req.Role]
	name := caller.Name()
	if r == nil && caller.Root {
		return "", auth.Principal{}, fmt.Errorf("%w: role %q does not exist", ErrNotFound, req.Role)
	}
	// Other callers hear the same whether the role is missing or does not
	// trust them, so assume-role cannot list the roles.
	if r == nil || !caller.Root && !slices.ContainsFunc(r.TrustPrincipals, func(g string) bool { return globMatch(g, name) }) {
		return "", auth.Principal{}, fmt.Errorf("%w: role %q does not exist or does not trust %s (see its trust_principals)", auth.ErrForbidden, req.Role, name)
	}
	subject := name
	if caller.Subject != "" {
		// Chained roles keep the original subject, so revoking it reaches
		// them; so do sessions obtained by a token made from another
		// principal's credential (it acts as its maker), so the session
		// still counts as that access key's own (no self-granted policies).
		subject = caller.Subject
	}
	// The caller bounds the new token (auth.Spec.Parent): a chained role
	// token keeps the caller's scope-down policies and networks and
	// expires, and renews, no later than the caller.
	spec := auth.Spec{Role: r.Name, Subject: subject, DisplayName: req.SessionName, Namespace: caller.Namespace,
		ServiceAccount: caller.ServiceAccount, Cluster: caller.Cluster, Parent: caller}
	if req.SessionName != "" {
		spec.Attributes = map[string]string{"session": req.SessionName}
	}
	if req.Policy != "" {
		if _, err := policy.Parse("scope", []byte(req.Policy)); err != nil {
			return "", auth.Principal{}, policyError(err)
		}
		spec.Scope = req.Policy
	}
	return s.issue(ctx, r, spec, req.TTL, req.BoundCIDRs)
}

// issue makes a role token: TTL within the role's maximum, CIDRs within
// the role's.
func (s *Service) issue(ctx context.Context, r *roleEntry, spec auth.Spec, ttl string, cidrs []string) (string, auth.Principal, error) {
	d, err := parseDuration("ttl", ttl)
	if err != nil {
		return "", auth.Principal{}, err
	}
	if d == 0 {
		d = r.ttl
	}
	if d > r.maxTTL {
		return "", auth.Principal{}, fmt.Errorf("%w: ttl %s is longer than role %q allows (max_ttl %s)", ErrInvalidArgument, d, r.Name, r.maxTTL)
	}
	spec.TTL, spec.MaxTTL = d, r.maxTTL
	spec.CIDRs = r.BoundCIDRs
	if len(cidrs) > 0 {
		if err := within(cidrs, r.BoundCIDRs); err != nil {
			return "", auth.Principal{}, err
		}
		spec.CIDRs = cidrs
	}
	if len(spec.DisplayName) > 256 {
		return "", auth.Principal{}, fmt.Errorf("%w: session name is longer than 256 bytes", ErrInvalidArgument)
	}
	check := spec.Valid
	spec.Valid = func() error {
		// DeleteRole revokes the role's tokens after deleting it; a token
		// issued in between would escape that.
		if s.state.Load().roles[r.Name] == nil {
			return fmt.Errorf("%w: role %q was deleted", ErrNotFound, r.Name)
		}
		if check != nil {
			return check()
		}
		return nil
	}
	return s.tokens.Issue(ctx, spec)
}

// within checks that every requested network lies inside one of the
// role's (any, when the role has none).
func within(req, role []string) error {
	for _, c := range req {
		p, err := auth.ParseCIDR(c)
		if err != nil {
			return fmt.Errorf("%w: bound_cidrs: %q is not a CIDR", ErrInvalidArgument, c)
		}
		if len(role) == 0 {
			continue
		}
		ok := false
		for _, rc := range role {
			rp, _ := auth.ParseCIDR(rc)
			if auth.PrefixWithin(p, rp) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: bound_cidrs: %s is outside the role's networks %v", ErrInvalidArgument, c, role)
		}
	}
	return nil
}

// RevokeRole revokes every token of a role.
func (s *Service) RevokeRole(ctx context.Context, role string) (int, error) {
	// Tokens made from the role's tokens act in the role too.
	return s.tokens.RevokeWhere(ctx, func(p *auth.Principal) bool { return p.Role == role })
}

// RevokePrincipal revokes every token a principal holds or obtained
// (tokens whose subject is the principal, and the principal's own token),
// and remembers the time, so a Kubernetes service-account token issued
// before now can no longer be exchanged.
func (s *Service) RevokePrincipal(ctx context.Context, name string) (int, error) {
	kind, id, _ := strings.Cut(name, ":")
	if id == "" || len(name) > 512 || !slices.Contains([]string{"access-key", "token", "role", "kubernetes", "cert"}, kind) {
		shown := fmt.Sprintf("%q", truncate(name))
		if _, isCred := credential.Kind(name); isCred {
			shown = "(a credential, not repeated)"
		}
		return 0, fmt.Errorf("%w: principal %s: want access-key:ID, token:ACCESSOR, role:NAME, kubernetes:CLUSTER/NAMESPACE/SERVICEACCOUNT or cert:NAME", ErrInvalidArgument, shown)
	}
	if k, isCred := credential.Kind(id); isCred && k != credential.KindAccessKeyID {
		// Not repeated nor stored: a secret typed in a name's place.
		return 0, fmt.Errorf("%w: principal %s:(a credential, not repeated): want access-key:ID, token:ACCESSOR, ...; treat that credential as exposed", ErrInvalidArgument, kind)
	}
	now := s.now().UTC()
	err := s.change(func(st *state) error {
		// The mark keeps the later of the stored time and now: a replica
		// whose clock is behind must not move a mark another replica set
		// back, which would let credentials issued in between through.
		at := now
		if err := s.writeStored(ctx, revokedPath+escape(name), "the revocation mark of "+name, func(cur []byte) ([]byte, error) {
			at = now
			var stored time.Time
			if cur != nil && stored.UnmarshalText(cur) == nil && stored.After(now) {
				at = stored
			}
			return at.MarshalText()
		}); err != nil {
			return err
		}
		st.revoked[name] = at
		return nil
	})
	if err != nil {
		return 0, err
	}
	return s.tokens.RevokeWhere(ctx, func(p *auth.Principal) bool { return p.Subject == name || p.Name() == name })
}

// revokedAt reports when a principal's credentials were last revoked.
func (st *state) revokedAt(name string) (time.Time, bool) {
	t, ok := st.revoked[name]
	return t, ok
}
