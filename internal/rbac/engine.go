package rbac

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Built-in group names the authenticators add.
const (
	GroupAuthenticated   = "system:authenticated"
	GroupServiceAccounts = "system:serviceaccounts"
	GroupMasters         = "system:masters"
	saUserPrefix         = "system:serviceaccount:"
)

// Request is one resource request, as the API server authorizes it.
// Namespace "" is a cluster-scoped request (or one across all namespaces).
type Request struct {
	Verb        string `json:"verb"`
	APIGroup    string `json:"apiGroup"`
	Resource    string `json:"resource"`
	Subresource string `json:"subresource,omitempty"`
	Name        string `json:"name,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
}

// String renders r like "list secrets in namespace ns".
func (r Request) String() string {
	var b strings.Builder
	b.WriteString(r.Verb + " " + r.Resource)
	if r.APIGroup != "" {
		b.WriteString("." + r.APIGroup)
	}
	if r.Subresource != "" {
		b.WriteString("/" + r.Subresource)
	}
	if r.Name != "" {
		fmt.Fprintf(&b, " %q", r.Name)
	}
	if r.Namespace != "" {
		b.WriteString(" in namespace " + r.Namespace)
	} else {
		b.WriteString(" cluster-wide")
	}
	return b.String()
}

// User is an authenticated identity: a user name and its groups.
type User struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
}

// ServiceAccountUser returns the identity a service account's token
// authenticates as: system:serviceaccount:NS:NAME in the groups
// system:serviceaccounts, system:serviceaccounts:NS and system:authenticated.
func ServiceAccountUser(namespace, name string) User {
	return User{
		Name:   saUserPrefix + namespace + ":" + name,
		Groups: []string{GroupServiceAccounts, GroupServiceAccounts + ":" + namespace, GroupAuthenticated},
	}
}

// Ref names an RBAC object.
type Ref struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String renders r as Kind/name or Kind/namespace/name.
func (r Ref) String() string {
	if r.Namespace != "" {
		return r.Kind + "/" + r.Namespace + "/" + r.Name
	}
	return r.Kind + "/" + r.Name
}

// Chain is how a grant reaches a subject: binding -> role -> rule.
type Chain struct {
	Binding Ref            `json:"binding"`
	Subject rbacv1.Subject `json:"subject"`
	Role    Ref            `json:"role"`
	// AggregatedFrom is the ClusterRole the rule was aggregated from, when
	// Role is an aggregated ClusterRole.
	AggregatedFrom string            `json:"aggregatedFrom,omitempty"`
	RuleIndex      int               `json:"ruleIndex"`
	Rule           rbacv1.PolicyRule `json:"rule"`
}

// String renders the chain on one line.
func (c Chain) String() string {
	role := c.Role.String()
	if c.AggregatedFrom != "" {
		role += " (aggregated from ClusterRole/" + c.AggregatedFrom + ")"
	}
	return fmt.Sprintf("%s -> %s -> rule %d %s", c.Binding, role, c.RuleIndex, RuleString(c.Rule))
}

// RuleString renders a policy rule compactly.
func RuleString(r rbacv1.PolicyRule) string {
	parts := []string{"verbs=" + strings.Join(r.Verbs, ",")}
	if len(r.APIGroups) > 0 {
		g := slices.Clone(r.APIGroups)
		for i := range g {
			if g[i] == "" {
				g[i] = `""`
			}
		}
		parts = append(parts, "apiGroups="+strings.Join(g, ","))
	}
	if len(r.Resources) > 0 {
		parts = append(parts, "resources="+strings.Join(r.Resources, ","))
	}
	if len(r.ResourceNames) > 0 {
		parts = append(parts, "resourceNames="+strings.Join(r.ResourceNames, ","))
	}
	if len(r.NonResourceURLs) > 0 {
		parts = append(parts, "nonResourceURLs="+strings.Join(r.NonResourceURLs, ","))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// SubjectString renders a binding subject: "User alice", "Group devs",
// "ServiceAccount ns/name".
func SubjectString(s rbacv1.Subject) string {
	if s.Kind == rbacv1.ServiceAccountKind {
		return s.Kind + " " + s.Namespace + "/" + s.Name
	}
	return s.Kind + " " + s.Name
}

// rule is an effective rule of a role and the ClusterRole it was
// aggregated from, if any.
type rule struct {
	rbacv1.PolicyRule
	from string
}

// binding is a RoleBinding or ClusterRoleBinding, normalised.
type binding struct {
	ref      Ref
	roleRef  rbacv1.RoleRef
	subjects []rbacv1.Subject
	labels   map[string]string
}

// Engine answers authorization questions about a Snapshot.
type Engine struct {
	snap         *Snapshot
	roles        map[string][]rule // "ns/name"
	clusterRoles map[string][]rule
	crbs         []binding
	rbs          map[string][]binding // by namespace
	namespaces   []string             // sorted namespaces that have RoleBindings
	saIndex      map[string]*corev1.ServiceAccount
}

// NewEngine resolves s: it computes the rules of aggregated ClusterRoles
// and indexes the bindings. s must not change afterwards.
func NewEngine(s *Snapshot) *Engine {
	e := &Engine{
		snap:         s,
		roles:        make(map[string][]rule, len(s.Roles)),
		clusterRoles: make(map[string][]rule, len(s.ClusterRoles)),
		rbs:          make(map[string][]binding),
	}
	for i := range s.Roles {
		r := &s.Roles[i]
		e.roles[r.Namespace+"/"+r.Name] = plainRules(r.Rules)
	}
	e.resolveClusterRoles()
	e.saIndex = make(map[string]*corev1.ServiceAccount, len(s.ServiceAccounts))
	for i := range s.ServiceAccounts {
		sa := &s.ServiceAccounts[i]
		e.saIndex[sa.Namespace+"/"+sa.Name] = sa
	}
	for i := range s.ClusterRoleBindings {
		b := &s.ClusterRoleBindings[i]
		e.crbs = append(e.crbs, binding{
			ref:     Ref{Kind: "ClusterRoleBinding", Name: b.Name},
			roleRef: b.RoleRef, subjects: b.Subjects, labels: b.Labels,
		})
	}
	for i := range s.RoleBindings {
		b := &s.RoleBindings[i]
		e.rbs[b.Namespace] = append(e.rbs[b.Namespace], binding{
			ref:     Ref{Kind: "RoleBinding", Namespace: b.Namespace, Name: b.Name},
			roleRef: b.RoleRef, subjects: b.Subjects, labels: b.Labels,
		})
	}
	for ns := range e.rbs {
		e.namespaces = append(e.namespaces, ns)
	}
	sort.Strings(e.namespaces)
	return e
}

func plainRules(rs []rbacv1.PolicyRule) []rule {
	out := make([]rule, len(rs))
	for i := range rs {
		out[i] = rule{PolicyRule: rs[i]}
	}
	return out
}

// resolveClusterRoles sets the rules of every ClusterRole. A ClusterRole
// with an aggregationRule gets, like the clusterrole-aggregation
// controller sets them, the rules of every other ClusterRole a selector
// matches (in selector order, then by name, without duplicates) in place
// of its own; aggregation of aggregated roles is iterated to the least
// fixed point, which is where the controller's repeated syncs converge.
func (e *Engine) resolveClusterRoles() {
	crs := e.snap.ClusterRoles
	type agg struct {
		name    string
		sources []int // indexes into crs, per the controller's order
	}
	var aggs []agg
	byName := make(map[string]int, len(crs))
	for i := range crs {
		byName[crs[i].Name] = i
	}
	sorted := make([]int, len(crs))
	for i := range sorted {
		sorted[i] = i
	}
	sort.SliceStable(sorted, func(a, b int) bool { return crs[sorted[a]].Name < crs[sorted[b]].Name })
	for i := range crs {
		cr := &crs[i]
		if cr.AggregationRule == nil {
			e.clusterRoles[cr.Name] = plainRules(cr.Rules)
			continue
		}
		a := agg{name: cr.Name}
		for _, sel := range cr.AggregationRule.ClusterRoleSelectors {
			selector, err := metav1.LabelSelectorAsSelector(&sel)
			if err != nil {
				continue // the controller fails the sync; the role keeps no rules here
			}
			for _, j := range sorted {
				if crs[j].Name != cr.Name && selector.Matches(labels.Set(crs[j].Labels)) {
					a.sources = append(a.sources, j)
				}
			}
		}
		aggs = append(aggs, a)
		e.clusterRoles[cr.Name] = nil
	}
	for changed := true; changed; {
		changed = false
		for _, a := range aggs {
			var out []rule
			for _, j := range a.sources {
				src := crs[j].Name
				for _, r := range e.clusterRoles[src] {
					from := r.from
					if from == "" {
						from = src
					}
					if !slices.ContainsFunc(out, func(o rule) bool { return rulesEqual(&o.PolicyRule, &r.PolicyRule) }) {
						out = append(out, rule{PolicyRule: r.PolicyRule, from: from})
					}
				}
			}
			if len(out) != len(e.clusterRoles[a.name]) {
				e.clusterRoles[a.name] = out
				changed = true
			}
		}
	}
}

func rulesEqual(a, b *rbacv1.PolicyRule) bool {
	return slices.Equal(a.Verbs, b.Verbs) && slices.Equal(a.APIGroups, b.APIGroups) &&
		slices.Equal(a.Resources, b.Resources) && slices.Equal(a.ResourceNames, b.ResourceNames) &&
		slices.Equal(a.NonResourceURLs, b.NonResourceURLs)
}

// roleRules returns the rules a binding's roleRef names, as the upstream
// resolver does: a Role is looked up in the binding's namespace (so a
// ClusterRoleBinding to a Role finds nothing), a ClusterRole by name.
// ok is false when the role does not exist.
func (e *Engine) roleRules(ref rbacv1.RoleRef, bindingNS string) (Ref, []rule, bool) {
	switch ref.Kind {
	case "Role":
		rs, ok := e.roles[bindingNS+"/"+ref.Name]
		return Ref{Kind: "Role", Namespace: bindingNS, Name: ref.Name}, rs, ok && bindingNS != ""
	case "ClusterRole":
		rs, ok := e.clusterRoles[ref.Name]
		return Ref{Kind: "ClusterRole", Name: ref.Name}, rs, ok
	}
	return Ref{Kind: ref.Kind, Name: ref.Name}, nil, false
}

// appliesToUser is upstream's appliesToUser: namespace is the binding's
// namespace ("" for a ClusterRoleBinding).
func appliesToUser(u *User, s *rbacv1.Subject, namespace string) bool {
	switch s.Kind {
	case rbacv1.UserKind:
		return u.Name == s.Name
	case rbacv1.GroupKind:
		return slices.Contains(u.Groups, s.Name)
	case rbacv1.ServiceAccountKind:
		ns := namespace
		if s.Namespace != "" {
			ns = s.Namespace
		}
		if ns == "" {
			return false
		}
		return u.Name == saUserPrefix+ns+":"+s.Name
	}
	return false
}

// Decision is the answer to Can.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Chains are every grant that allows the request (any one suffices).
	Chains []Chain `json:"chains"`
	// Missing names roles that applicable bindings reference but that do
	// not exist (the API server logs these and ignores the binding).
	Missing []string `json:"missing,omitempty"`
}

// Can decides whether u may make request r, with every chain that allows
// it. It visits the same bindings as the upstream authorizer:
// ClusterRoleBindings always, RoleBindings of r.Namespace when it is set.
func (e *Engine) Can(u User, r Request) Decision {
	d := Decision{Chains: []Chain{}}
	visit := func(b *binding, bindingNS string) {
		idx := -1
		for i := range b.subjects {
			if appliesToUser(&u, &b.subjects[i], bindingNS) {
				idx = i
				break
			}
		}
		if idx < 0 {
			return
		}
		roleRef, rules, ok := e.roleRules(b.roleRef, bindingNS)
		if !ok {
			d.Missing = append(d.Missing, fmt.Sprintf("%s (referenced by %s)", roleRef, b.ref))
			return
		}
		for i := range rules {
			if ruleAllows(&rules[i].PolicyRule, &r) {
				d.Chains = append(d.Chains, Chain{
					Binding: b.ref, Subject: b.subjects[idx], Role: roleRef,
					AggregatedFrom: rules[i].from, RuleIndex: i, Rule: rules[i].PolicyRule,
				})
			}
		}
	}
	for i := range e.crbs {
		visit(&e.crbs[i], "")
	}
	if r.Namespace != "" {
		for i, rbs := 0, e.rbs[r.Namespace]; i < len(rbs); i++ {
			visit(&rbs[i], r.Namespace)
		}
	}
	d.Allowed = len(d.Chains) > 0
	return d
}

// Grant is a subject that a binding gives a permission, and how.
type Grant struct {
	Subject rbacv1.Subject `json:"subject"`
	// Namespace is where the grant holds; "" is every namespace and the
	// cluster scope (a ClusterRoleBinding).
	Namespace string `json:"namespace,omitempty"`
	Chain     Chain  `json:"chain"`
}

// WhoCan lists the binding subjects that may make request r: those of
// ClusterRoleBindings and, when r.Namespace is set, of RoleBindings in it.
// allNamespaces adds RoleBindings of every namespace (r.Namespace is then
// ignored), for "who can do this anywhere". A ServiceAccount subject
// without a namespace is reported in the RoleBinding's namespace; in a
// ClusterRoleBinding it matches nobody and is left out.
func (e *Engine) WhoCan(r Request, allNamespaces bool) []Grant {
	var out []Grant
	visit := func(b *binding, bindingNS string) {
		roleRef, rules, ok := e.roleRules(b.roleRef, bindingNS)
		if !ok {
			return
		}
		for i := range rules {
			if !ruleAllows(&rules[i].PolicyRule, &r) {
				continue
			}
			for _, s := range b.subjects {
				s, ok := effectiveSubject(s, bindingNS)
				if !ok {
					continue
				}
				out = append(out, Grant{Subject: s, Namespace: bindingNS, Chain: Chain{
					Binding: b.ref, Subject: s, Role: roleRef,
					AggregatedFrom: rules[i].from, RuleIndex: i, Rule: rules[i].PolicyRule,
				}})
			}
		}
	}
	for i := range e.crbs {
		visit(&e.crbs[i], "")
	}
	switch {
	case allNamespaces:
		for _, ns := range e.namespaces {
			for i, rbs := 0, e.rbs[ns]; i < len(rbs); i++ {
				visit(&rbs[i], ns)
			}
		}
	case r.Namespace != "":
		for i, rbs := 0, e.rbs[r.Namespace]; i < len(rbs); i++ {
			visit(&rbs[i], r.Namespace)
		}
	}
	return out
}

// effectiveSubject fills a ServiceAccount subject's namespace from the
// binding's; ok is false for one that can never match (no namespace in a
// ClusterRoleBinding) or of an unknown kind.
func effectiveSubject(s rbacv1.Subject, bindingNS string) (rbacv1.Subject, bool) {
	switch s.Kind {
	case rbacv1.UserKind, rbacv1.GroupKind:
		return s, true
	case rbacv1.ServiceAccountKind:
		if s.Namespace == "" {
			if bindingNS == "" {
				return s, false
			}
			s.Namespace = bindingNS
		}
		return s, true
	}
	return s, false
}
