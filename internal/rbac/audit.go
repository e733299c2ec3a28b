package rbac

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// Finding is one risk for one subject in one scope, with every chain that
// creates it.
type Finding struct {
	Check    string   `json:"check"`
	Category string   `json:"category"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	// Subject is who holds the permission (for the hygiene checks on
	// service accounts and token secrets, the service account concerned).
	Subject rbacv1.Subject `json:"subject"`
	// Namespace is the scope: "" means every namespace (a
	// ClusterRoleBinding) or a cluster-scoped object.
	Namespace string `json:"namespace,omitempty"`
	// Verbs and Resources are the matched actions, as verb and
	// resource[.group][/subresource] strings.
	Verbs     []string `json:"verbs,omitempty"`
	Resources []string `json:"resources,omitempty"`
	// ResourceNames limits the grant to these objects; empty means all.
	ResourceNames []string `json:"resourceNames,omitempty"`
	Chains        []Chain  `json:"chains,omitempty"`
	// Objects names what a hygiene finding is about (pods, secrets,
	// bindings).
	Objects []string `json:"objects,omitempty"`
	// System is set for built-in subjects and bootstrap bindings.
	System bool `json:"system"`
}

// Scope renders the finding's scope: "cluster" or "namespace NS".
func (f *Finding) Scope() string {
	if f.Namespace == "" {
		return "cluster"
	}
	return "namespace " + f.Namespace
}

// Report is the result of an audit.
type Report struct {
	// Findings are sorted worst first, then by subject, check and scope.
	Findings []Finding `json:"findings"`
	// System holds the findings about system subjects and bootstrap
	// bindings, unless they were mixed into Findings.
	System []Finding `json:"system"`
	// Notes say what the audit could not check with the input given.
	Notes []string `json:"notes,omitempty"`
}

// Max returns the highest severity among the findings, and false when
// there are none.
func (r *Report) Max() (Severity, bool) {
	if len(r.Findings) == 0 {
		return 0, false
	}
	m := SeverityInfo
	for i := range r.Findings {
		m = max(m, r.Findings[i].Severity)
	}
	return m, true
}

// AuditOptions configure Audit.
type AuditOptions struct {
	// IncludeSystem mixes system findings into Report.Findings.
	IncludeSystem bool
}

// ruleHit is what one rule of a role grants toward one check.
type ruleHit struct {
	check     int
	rule      int
	verbs     []string
	resources []string
}

// Audit runs every check over the engine's snapshot.
func Audit(e *Engine, opts AuditOptions) *Report {
	a := &auditor{e: e, byKey: map[string]int{}, hitCache: map[string][]ruleHit{}}
	for i := range e.crbs {
		a.binding(&e.crbs[i], "")
	}
	for _, ns := range e.namespaces {
		for i, rbs := 0, e.rbs[ns]; i < len(rbs); i++ {
			a.binding(&rbs[i], ns)
		}
	}
	a.hygiene()

	rep := &Report{Findings: []Finding{}, System: []Finding{}, Notes: a.notes}
	for _, f := range a.findings {
		slices.Sort(f.Verbs)
		f.Verbs = slices.Compact(f.Verbs)
		slices.Sort(f.Resources)
		f.Resources = slices.Compact(f.Resources)
		if f.System && !opts.IncludeSystem {
			rep.System = append(rep.System, *f)
		} else {
			rep.Findings = append(rep.Findings, *f)
		}
	}
	sortFindings(rep.Findings)
	sortFindings(rep.System)
	return rep
}

// SubjectKey identifies a subject: "User:alice", "ServiceAccount:ns/name".
func SubjectKey(s rbacv1.Subject) string {
	if s.Kind == rbacv1.ServiceAccountKind {
		return s.Kind + ":" + s.Namespace + "/" + s.Name
	}
	return s.Kind + ":" + s.Name
}

func checkIndex(id string) int {
	return slices.IndexFunc(Checks, func(c *Check) bool { return c.ID == id })
}

func sortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(b.Severity, a.Severity),
			cmp.Compare(SubjectKey(a.Subject), SubjectKey(b.Subject)),
			cmp.Compare(checkIndex(a.Check), checkIndex(b.Check)),
			cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(strings.Join(a.ResourceNames, ","), strings.Join(b.ResourceNames, ",")),
		)
	})
}

type auditor struct {
	e        *Engine
	findings []*Finding
	byKey    map[string]int
	hitCache map[string][]ruleHit
	notes    []string
}

// finding returns the finding for key, creating it from proto.
func (a *auditor) finding(key string, proto Finding) *Finding {
	if i, ok := a.byKey[key]; ok {
		return a.findings[i]
	}
	f := proto
	a.byKey[key] = len(a.findings)
	a.findings = append(a.findings, &f)
	return &f
}

// hits returns, cached per role and scope, what each rule of a role
// grants toward the permission checks.
func (a *auditor) hits(roleRef Ref, rules []rule, namespaced bool) []ruleHit {
	key := fmt.Sprintf("%s|%t", roleRef, namespaced)
	if h, ok := a.hitCache[key]; ok {
		return h
	}
	var out []ruleHit
	for ri := range rules {
		r := &rules[ri].PolicyRule
		wild := slices.Contains(r.Verbs, rbacv1.VerbAll) || slices.Contains(r.Resources, rbacv1.ResourceAll)
		for ci, c := range Checks {
			if len(c.actions) == 0 || (c.wildcardOnly && !wild) {
				continue
			}
			var h ruleHit
			for _, act := range c.actions {
				if act.clusterOnly && namespaced {
					continue
				}
				if verbMatches(r, act.verb) && apiGroupMatches(r, act.group) && resourceMatches(r, act.resource, act.subresource) {
					h.verbs = append(h.verbs, act.verb)
					h.resources = append(h.resources, resourceString(act.resource, act.group, act.subresource))
				}
			}
			if len(h.verbs) > 0 {
				h.check, h.rule = ci, ri
				out = append(out, h)
			}
		}
	}
	a.hitCache[key] = out
	return out
}

func resourceString(resource, group, sub string) string {
	s := resource
	if group != "" {
		s += "." + group
	}
	if sub != "" {
		s += "/" + sub
	}
	return s
}

// binding records the findings one binding creates.
func (a *auditor) binding(b *binding, ns string) {
	roleRef, rules, ok := a.e.roleRules(b.roleRef, ns)
	sysBinding := isSystemBinding(b)
	if !ok {
		for _, s := range b.subjects {
			s, valid := effectiveSubject(s, ns)
			if !valid {
				continue
			}
			c := CheckByID("binding-missing-role")
			key := c.ID + "|" + SubjectKey(s) + "|" + b.ref.String()
			f := a.finding(key, Finding{Check: c.ID, Category: c.Category, Severity: SeverityLow, Title: c.Title,
				Subject: s, Namespace: ns, System: sysBinding || isSystemSubject(s)})
			f.Objects = append(f.Objects, b.ref.String()+" -> "+roleRef.String())
		}
		return
	}
	hits := a.hits(roleRef, rules, ns != "")
	for _, s := range b.subjects {
		s, valid := effectiveSubject(s, ns)
		if !valid {
			continue
		}
		sys := sysBinding || isSystemSubject(s)
		a.missingSubject(b, s, ns, sys)
		for _, h := range hits {
			c := Checks[h.check]
			r := rules[h.rule]
			sev := c.sev.namespace
			if ns == "" {
				sev = c.sev.cluster
			}
			if len(r.ResourceNames) > 0 {
				sev = min(sev, c.sev.limited)
			}
			key := c.ID + "|" + SubjectKey(s) + "|" + ns + "|" + strings.Join(r.ResourceNames, ",")
			f := a.finding(key, Finding{Check: c.ID, Category: c.Category, Severity: sev, Title: c.Title,
				Subject: s, Namespace: ns, ResourceNames: slices.Clone(r.ResourceNames), System: sys})
			f.System = f.System && sys // a finding is system only if every chain is
			f.Verbs = append(f.Verbs, h.verbs...)
			f.Resources = append(f.Resources, h.resources...)
			f.Chains = append(f.Chains, Chain{Binding: b.ref, Subject: s, Role: roleRef,
				AggregatedFrom: r.from, RuleIndex: h.rule, Rule: r.PolicyRule})
		}
	}
}

// missingSubject reports a ServiceAccount subject that is not in the
// snapshot, when the snapshot has service accounts at all. Every
// namespace has a "default" service account.
func (a *auditor) missingSubject(b *binding, s rbacv1.Subject, ns string, sys bool) {
	if s.Kind != rbacv1.ServiceAccountKind || len(a.e.snap.ServiceAccounts) == 0 || s.Name == "default" {
		return
	}
	if a.e.serviceAccount(s.Namespace, s.Name) != nil {
		return
	}
	c := CheckByID("binding-missing-subject")
	f := a.finding(c.ID+"|"+SubjectKey(s)+"|"+ns, Finding{Check: c.ID, Category: c.Category, Severity: SeverityMedium,
		Title: c.Title, Subject: s, Namespace: ns, System: sys})
	f.Objects = append(f.Objects, b.ref.String())
}

// serviceAccount returns the snapshot's service account, or nil.
func (e *Engine) serviceAccount(ns, name string) *corev1.ServiceAccount {
	return e.saIndex[ns+"/"+name]
}

// hygiene runs the checks that look at service accounts, pods and token
// secrets rather than at grants.
func (a *auditor) hygiene() {
	snap := a.e.snap
	// Service accounts some binding names, directly or by user name.
	bound := map[string]bool{}
	mark := func(b *binding, ns string) {
		for _, s := range b.subjects {
			switch {
			case s.Kind == rbacv1.ServiceAccountKind:
				if s, ok := effectiveSubject(s, ns); ok {
					bound[s.Namespace+"/"+s.Name] = true
				}
			case s.Kind == rbacv1.UserKind && strings.HasPrefix(s.Name, saUserPrefix):
				rest := strings.TrimPrefix(s.Name, saUserPrefix)
				if i := strings.IndexByte(rest, ':'); i > 0 {
					bound[rest[:i]+"/"+rest[i+1:]] = true
				}
			}
		}
	}
	for i := range a.e.crbs {
		mark(&a.e.crbs[i], "")
	}
	for ns, rbs := range a.e.rbs {
		for i := range rbs {
			mark(&rbs[i], ns)
		}
	}

	c := CheckByID("serviceaccount-automount")
	pods := append(slices.Clip(snap.Pods), snap.Workloads...)
	for i := range pods {
		p := &pods[i]
		name := p.Spec.ServiceAccountName
		if name == "" {
			name = "default"
		}
		if bound[p.Namespace+"/"+name] {
			continue
		}
		mounted := true
		sa := a.e.serviceAccount(p.Namespace, name)
		if sa != nil && sa.AutomountServiceAccountToken != nil {
			mounted = *sa.AutomountServiceAccountToken
		}
		if p.Spec.AutomountServiceAccountToken != nil {
			mounted = *p.Spec.AutomountServiceAccountToken
		}
		if !mounted {
			continue
		}
		s := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: p.Namespace}
		f := a.finding(c.ID+"|"+SubjectKey(s), Finding{Check: c.ID, Category: c.Category, Severity: SeverityLow,
			Title: c.Title, Subject: s, Namespace: p.Namespace, System: isSystemSubject(s)})
		kind := "Pod/"
		if strings.Contains(p.Name, "/") {
			kind = ""
		}
		f.Objects = append(f.Objects, kind+p.Namespace+"/"+p.Name)
	}

	c = CheckByID("serviceaccount-token-secret")
	for i := range snap.Secrets {
		sec := &snap.Secrets[i]
		if sec.Type != corev1.SecretTypeServiceAccountToken {
			continue
		}
		s := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sec.Annotations[corev1.ServiceAccountNameKey], Namespace: sec.Namespace}
		f := a.finding(c.ID+"|"+SubjectKey(s), Finding{Check: c.ID, Category: c.Category, Severity: SeverityMedium,
			Title: c.Title, Subject: s, Namespace: sec.Namespace, System: isSystemSubject(s)})
		f.Objects = append(f.Objects, "Secret/"+sec.Namespace+"/"+sec.Name)
	}

	if len(snap.ServiceAccounts) == 0 {
		a.notes = append(a.notes, "no ServiceAccount objects in the input: bindings to missing service accounts were not checked")
	}
	if len(snap.Pods)+len(snap.Workloads) == 0 {
		a.notes = append(a.notes, "no pods or workloads in the input: auto-mounted tokens were not checked")
	}
}

// systemNamespaces hold the cluster's own components.
var systemNamespaces = map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true}

// isSystemBinding reports a bootstrap binding: labelled
// kubernetes.io/bootstrapping=rbac-defaults or named system:*.
func isSystemBinding(b *binding) bool {
	return b.labels["kubernetes.io/bootstrapping"] == "rbac-defaults" || strings.HasPrefix(b.ref.Name, "system:")
}

// isSystemSubject reports a built-in identity: a system:* user or group
// other than the ones that stand for whole populations
// (system:authenticated, system:unauthenticated, system:anonymous,
// system:serviceaccounts[:NS] outside the system namespaces), and service
// accounts of kube-system, kube-public and kube-node-lease.
func isSystemSubject(s rbacv1.Subject) bool {
	switch s.Kind {
	case rbacv1.ServiceAccountKind:
		return systemNamespaces[s.Namespace]
	case rbacv1.UserKind:
		if rest, ok := strings.CutPrefix(s.Name, saUserPrefix); ok {
			ns, _, _ := strings.Cut(rest, ":")
			return systemNamespaces[ns]
		}
		return strings.HasPrefix(s.Name, "system:") && s.Name != "system:anonymous"
	case rbacv1.GroupKind:
		switch s.Name {
		case GroupAuthenticated, "system:unauthenticated", GroupServiceAccounts:
			return false
		}
		if ns, ok := strings.CutPrefix(s.Name, GroupServiceAccounts+":"); ok {
			return systemNamespaces[ns]
		}
		return strings.HasPrefix(s.Name, "system:")
	}
	return false
}
