package iam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/policy"
)

// selfService actions are allowed to every authenticated caller: looking
// up, renewing and revoking the credential it uses, and reporting leaked
// tokens (which needs the token's SHA-256, so only revokes tokens the
// reporter has seen).
var selfService = map[string]bool{
	"token:LookupSelf":   true,
	"token:RenewSelf":    true,
	"token:RevokeSelf":   true,
	"token:ReportLeaked": true,
}

// Denied is the error of a denied request: it wraps auth.ErrForbidden and
// names the action and resource. Decision (with the statement that
// decided) is for the server log and the audit trail, not the caller.
type Denied struct {
	Principal string
	Action    string
	Resource  string
	Decision  policy.Decision
}

func (d *Denied) Error() string {
	res := d.Resource
	if res == "" {
		res = "*"
	}
	return fmt.Sprintf("%s: %s may not %s on %s: %s", auth.ErrForbidden, d.Principal, d.Action, res, d.Decision.Reason)
}

// Unwrap makes a Denied an auth.ErrForbidden.
func (d *Denied) Unwrap() error { return auth.ErrForbidden }

// Authorize decides req for p and returns nil or a *Denied. The server
// fills req's action, resource, context, source and time; Authorize fills
// the principal and, for keys, the key's other names, and applies the
// caller's identity policies, the key's key policy and the token's
// scope-down policy. The root token may do everything (and is audited).
//
// A key named by an alias is decided on the key the alias names now, and
// that resolution is pinned in ctx's pin table (keys.WithPins) when it has
// one: the operation of the same request then uses that key, not the one
// the alias may name by then, and a later decision of the same request on
// the alias sees the same key (keys.Pin, keyNames).
func (s *Service) Authorize(ctx context.Context, p *auth.Principal, req *policy.Request) error {
	if p.Root || selfService[req.Action] {
		return nil
	}
	st := s.state.Load()
	identity := st.identitySet(p)
	req.Principal = policyPrincipal(p)
	var keySet *policy.Set
	if req.Resource != "" && isKeyAction(req.Action) && !aliasItself(req) {
		if id, aliases, ok := s.keyNames(ctx, req.Resource); ok {
			req.Aliases = append(aliases[:len(aliases):len(aliases)], id)
			if e := st.keyPolicies[id]; e != nil {
				keySet = e.set
			}
		}
	}
	d := policy.Authorize(identity, keySet, *req)
	for i := 0; d.Allowed && i < len(p.Scopes); i++ {
		if sd := p.Scopes[i].Evaluate(*req); !sd.Allowed {
			d = sd
			d.Reason = "the token's scope-down policy does not allow it"
			if len(p.Scopes) > 1 {
				d.Reason = "a scope-down policy the token carries (its own or one of the session it was made from) does not allow it"
			}
		}
	}
	if !d.Allowed {
		return &Denied{Principal: p.Name(), Action: req.Action, Resource: req.Resource, Decision: d}
	}
	return nil
}

// keyNames resolves a key reference for a decision, as s.keys.Names does,
// and pins an alias's resolution in ctx (keys.Pin): the first resolution
// of an alias in a request, the key or the absence of one, is the one
// every decision and the operation of the request use. ok is false when
// ref names no key (now, or when it was first resolved in the request).
func (s *Service) keyNames(ctx context.Context, ref string) (id string, aliases []string, ok bool) {
	if !strings.HasPrefix(ref, keys.AliasPrefix) {
		id, aliases, err := s.keys.Names(ref)
		return id, aliases, err == nil
	}
	if pinned, found := keys.Pinned(ctx, ref); found {
		return s.pinnedNames(pinned)
	}
	id, aliases, err := s.keys.Names(ref)
	if err != nil {
		if !errors.Is(err, keys.ErrNotFound) {
			return "", nil, false
		}
		// An alias that names no key stays so for the request: an alias
		// created before the operation resolves it again was not
		// decided on (its key's names and key policy were not seen).
		id = ""
	}
	if pinned, found := keys.Pin(ctx, ref, id); found && pinned != id {
		// Another decision of the request pinned the alias first.
		return s.pinnedNames(pinned)
	}
	return id, aliases, id != ""
}

// pinnedNames returns the names of the key pinned for an alias ("" for
// none).
func (s *Service) pinnedNames(id string) (string, []string, bool) {
	if id == "" {
		return "", nil, false
	}
	id, aliases, err := s.keys.Names(id)
	return id, aliases, err == nil
}

// EffectivePolicies names the stored policies p may use now: its role's
// (a role token), its own (an access key), or a token's own narrowed to
// those the role or access key it was made from still carries. Root has
// none: it needs none.
func (s *Service) EffectivePolicies(p *auth.Principal) []string {
	return s.state.Load().effectivePolicies(p)
}

func (st *state) effectivePolicies(p *auth.Principal) []string {
	switch {
	case p.Root:
		return nil
	case p.Kind == auth.KindRole:
		if r := st.roles[p.Role]; r != nil {
			return r.Policies
		}
		return nil
	case p.Kind == auth.KindAccessKey:
		if a := st.accessKeys[p.ID]; a != nil {
			return a.Policies
		}
		return nil
	}
	names := p.Policies
	if p.Role != "" {
		// A token made from a role token follows the role's current
		// policies: removing one from the role removes it from the token.
		r := st.roles[p.Role]
		if r == nil {
			return nil
		}
		names = both(names, r.Policies)
	}
	if p.AccessKey != "" {
		// The same for a token made from an access key, which also stops
		// when the key is disabled or deleted.
		a := st.accessKeys[p.AccessKey]
		if a == nil || a.Disabled {
			return nil
		}
		names = both(names, a.Policies)
	}
	return names
}

// aliasItself reports whether req is the alias half of an alias operation:
// key:CreateAlias or key:DeleteAlias on alias/NAME. That half is decided on
// the alias name alone (not the key's other names, no key policy); the
// server decides the key half separately, on the key's id with its names
// and key policy. Otherwise an alias could vouch for itself: creating
// alias/team-a-x for team b's key would need only rights on alias/team-a-*,
// and rights on a key would let one delete any alias of it, even one a
// deny elsewhere hangs on.
func aliasItself(req *policy.Request) bool {
	return (req.Action == "key:CreateAlias" || req.Action == "key:DeleteAlias") && strings.HasPrefix(req.Resource, "alias/")
}

// identitySet is the compiled identity policy set of p.
func (st *state) identitySet(p *auth.Principal) *policy.Set {
	switch p.Kind {
	case auth.KindRole:
		if r := st.roles[p.Role]; r != nil {
			return r.set
		}
		return nil
	case auth.KindAccessKey:
		if a := st.accessKeys[p.ID]; a != nil {
			return a.set
		}
		return nil
	}
	names := st.effectivePolicies(p)
	if len(names) == 0 {
		return nil
	}
	key := strings.Join(names, "\x00")
	if v, ok := st.tokenSets.Load(key); ok {
		return v.(*policy.Set)
	}
	set := st.setOf(names)
	st.tokenSets.Store(key, set)
	return set
}

// both returns the names in a that are also in b, in a's order.
func both(a, b []string) []string {
	out := make([]string, 0, len(a))
	for _, n := range a {
		if slices.Contains(b, n) {
			out = append(out, n)
		}
	}
	return out
}

func policyPrincipal(p *auth.Principal) policy.Principal {
	if p.Policy != nil {
		return *p.Policy
	}
	return *auth.PolicyPrincipal(p)
}

func isKeyAction(action string) bool {
	a, ok := policy.LookupAction(action)
	return ok && a.Resource == policy.ResourceKey
}

// Simulate answers "would this principal be allowed?" without doing
// anything, naming the statement that decided.
func (s *Service) Simulate(ctx context.Context, req SimulateRequest) (SimulateResult, error) {
	if _, ok := policy.LookupAction(req.Action); !ok {
		return SimulateResult{}, fmt.Errorf("%w: unknown action %q; `coffer policy actions` lists them", ErrInvalidArgument, req.Action)
	}
	kind, id, ok := strings.Cut(req.Principal, ":")
	p := auth.Principal{Kind: kind, ID: id, Namespace: req.Namespace, ServiceAccount: req.ServiceAccount}
	st := s.state.Load()
	switch {
	case ok && kind == auth.KindRole:
		if st.roles[id] == nil {
			return SimulateResult{}, fmt.Errorf("%w: role %q does not exist", ErrNotFound, id)
		}
		p.Role = id
	case ok && kind == auth.KindAccessKey:
		if st.accessKeys[id] == nil {
			return SimulateResult{}, fmt.Errorf("%w: access key %q does not exist", ErrNotFound, id)
		}
	case ok && kind == auth.KindToken:
		tp, found := s.tokens.Get(id)
		if !found {
			return SimulateResult{}, fmt.Errorf("%w: no token with accessor %q", ErrNotFound, id)
		}
		p = tp
	default:
		return SimulateResult{}, fmt.Errorf("%w: principal %q: want role:NAME, access-key:ID or token:ACCESSOR", ErrInvalidArgument, req.Principal)
	}
	q := policy.Request{Action: req.Action, Resource: req.Resource, Context: req.Context, Time: s.now()}
	if req.SourceIP != "" {
		a, err := netip.ParseAddr(req.SourceIP)
		if err != nil {
			return SimulateResult{}, fmt.Errorf("%w: source_ip %q is not an IP address", ErrInvalidArgument, req.SourceIP)
		}
		q.SourceIP = a
	}
	if req.Time != "" {
		t, err := time.Parse(time.RFC3339, req.Time)
		if err != nil {
			return SimulateResult{}, fmt.Errorf("%w: time %q is not RFC 3339 (2026-01-02T15:04:05Z)", ErrInvalidArgument, req.Time)
		}
		q.Time = t
	}
	// A pin table of its own: the simulation's resolutions are not the
	// request's, and the key policy below is the one Authorize saw.
	ctx = keys.WithPins(ctx)
	err := s.Authorize(ctx, &p, &q)
	out := SimulateResult{Allowed: err == nil, Reason: policy.ReasonAllowed}
	var d policy.Decision
	if den, isDenied := err.(*Denied); isDenied {
		d = den.Decision
	} else if err == nil {
		d = policy.Authorize(st.identitySet(&p), nil, q)
		if ks := s.keyPolicySet(ctx, st, q.Resource); ks != nil && !aliasItself(&q) {
			d = policy.Authorize(st.identitySet(&p), ks, q)
		}
	} else {
		return SimulateResult{}, err
	}
	out.Reason, out.Decision = d.Reason, d.String()
	if d.Statement != nil {
		out.Statement = d.Statement.String()
	}
	return out, nil
}

func (s *Service) keyPolicySet(ctx context.Context, st *state, ref string) *policy.Set {
	if ref == "" {
		return nil
	}
	if id, _, ok := s.keyNames(ctx, ref); ok {
		if e := st.keyPolicies[id]; e != nil {
			return e.set
		}
	}
	return nil
}
