package policy

// Set is a compiled group of policies: those attached to one identity (a
// role, an access key), or one key's key policy. It is immutable and safe
// for concurrent use; build it when the attachments change, not per request.
//
// Statements are indexed by action, so a request looks only at statements
// that name its action; within them every deny is checked before any allow.
type Set struct {
	policies []*Policy
	deny     [][]*Statement // by action index, in policy and statement order
	allow    [][]*Statement
}

// NewSet compiles policies into a Set. Nil policies are skipped.
func NewSet(policies ...*Policy) *Set {
	s := &Set{deny: make([][]*Statement, len(catalogue)), allow: make([][]*Statement, len(catalogue))}
	for _, p := range policies {
		if p == nil {
			continue
		}
		s.policies = append(s.policies, p)
		for _, st := range p.Statements {
			for i := range catalogue {
				if !st.actions.has(i) {
					continue
				}
				if st.Effect == Deny {
					s.deny[i] = append(s.deny[i], st)
				} else {
					s.allow[i] = append(s.allow[i], st)
				}
			}
		}
	}
	return s
}

// Policies returns the policies of the set.
func (s *Set) Policies() []*Policy { return s.policies }

// Evaluate decides req against the set alone: a matching deny wins, else
// the first matching allow (in policy order, then statement order) grants,
// else the request is denied by default.
func (s *Set) Evaluate(req Request) Decision {
	ai, ok := actionIndex[req.Action]
	if !ok {
		return Decision{Reason: ReasonUnknownAction}
	}
	if d := s.firstMatch(s.deny[ai], &req); d != nil {
		return Decision{Statement: &d.ref, Reason: ReasonExplicitDeny}
	}
	if a := s.firstMatch(s.allow[ai], &req); a != nil {
		return Decision{Allowed: true, Statement: &a.ref, Reason: ReasonAllowed}
	}
	return Decision{Reason: ReasonDefaultDeny}
}

func (s *Set) firstMatch(sts []*Statement, r *Request) *Statement {
	if s == nil {
		return nil
	}
	for _, st := range sts {
		if st.matches(r) {
			return st
		}
	}
	return nil
}

// Authorize combines the caller's identity policies with the key policy of
// the key the request acts on (nil when the resource is not a key or the key
// has no key policy):
//
//  1. a matching deny in either set denies;
//  2. otherwise the identity policies must allow;
//  3. and, when the key has a key policy, it must allow too.
//
// So an identity policy says what a caller may do, and a key policy narrows
// who may use that key and how; neither alone can widen the other.
func Authorize(identity, key *Set, req Request) Decision {
	ai, ok := actionIndex[req.Action]
	if !ok {
		return Decision{Reason: ReasonUnknownAction}
	}
	if identity != nil {
		if d := identity.firstMatch(identity.deny[ai], &req); d != nil {
			return Decision{Statement: &d.ref, Reason: ReasonExplicitDeny}
		}
	}
	if key != nil {
		if d := key.firstMatch(key.deny[ai], &req); d != nil {
			return Decision{Statement: &d.ref, Reason: ReasonExplicitDeny}
		}
	}
	var a *Statement
	if identity != nil {
		a = identity.firstMatch(identity.allow[ai], &req)
	}
	if a == nil {
		return Decision{Reason: ReasonDefaultDeny}
	}
	if key == nil {
		return Decision{Allowed: true, Statement: &a.ref, Reason: ReasonAllowed}
	}
	k := key.firstMatch(key.allow[ai], &req)
	if k == nil {
		return Decision{Statement: &a.ref, Reason: ReasonKeyPolicy}
	}
	return Decision{Allowed: true, Statement: &a.ref, KeyStatement: &k.ref, Reason: ReasonAllowed}
}

// Evaluate is NewSet(policies...).Evaluate(req), for one-off questions
// (simulation, tests). A server keeps Sets instead.
func Evaluate(policies []*Policy, req Request) Decision {
	return NewSet(policies...).Evaluate(req)
}

// matches reports whether the statement applies to r (its action is
// already known to match).
func (st *Statement) matches(r *Request) bool {
	if len(st.principals) > 0 {
		ok := false
		for i := range st.principals {
			if st.principals[i].match(&r.Principal) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if !st.matchResource(r) {
		return false
	}
	for i := range st.conds {
		if !st.conds[i].match(r) {
			return false
		}
	}
	return true
}

func (st *Statement) matchResource(r *Request) bool {
	for _, g := range st.resources {
		if g.match(r.Resource, &r.Principal) {
			return true
		}
		for _, a := range r.Aliases {
			if g.match(a, &r.Principal) {
				return true
			}
		}
	}
	return false
}
