package rbac

import (
	rbacv1 "k8s.io/api/rbac/v1"
)

// The functions in this file are the upstream RBAC authorizer's rule
// matching (k8s.io/kubernetes pkg/apis/rbac/v1/evaluation_helpers.go and
// plugin/pkg/auth/authorizer/rbac RuleAllows, v1.37), kept line for line:
// k8s.io/kubernetes cannot be imported as a module, and
// k8s.io/component-helpers only has the rule-coverage comparator.

// verbMatches reports whether rule grants verb ("*" grants every verb).
func verbMatches(rule *rbacv1.PolicyRule, verb string) bool {
	for _, v := range rule.Verbs {
		if v == rbacv1.VerbAll || v == verb {
			return true
		}
	}
	return false
}

// apiGroupMatches reports whether rule covers the API group.
func apiGroupMatches(rule *rbacv1.PolicyRule, group string) bool {
	for _, g := range rule.APIGroups {
		if g == rbacv1.APIGroupAll || g == group {
			return true
		}
	}
	return false
}

// resourceMatches reports whether rule covers resource[/subresource]: "*"
// covers everything, an exact "resource/subresource" string its pair, and
// "*/subresource" that subresource of every resource. "pods/*" is not a
// wildcard: it only matches a subresource literally named "*".
func resourceMatches(rule *rbacv1.PolicyRule, resource, subresource string) bool {
	combined := resource
	if subresource != "" {
		combined = resource + "/" + subresource
	}
	for _, r := range rule.Resources {
		if r == rbacv1.ResourceAll || r == combined {
			return true
		}
		if subresource == "" {
			continue
		}
		if len(r) == len(subresource)+2 && r[:2] == "*/" && r[2:] == subresource {
			return true
		}
	}
	return false
}

// resourceNameMatches reports whether rule covers the object name: a rule
// without resourceNames covers every name (and requests without a name,
// such as list or create); one with resourceNames only those names.
func resourceNameMatches(rule *rbacv1.PolicyRule, name string) bool {
	if len(rule.ResourceNames) == 0 {
		return true
	}
	for _, n := range rule.ResourceNames {
		if n == name {
			return true
		}
	}
	return false
}

// ruleAllows reports whether rule allows the resource request r (the
// namespace is decided by which bindings apply, not by the rule).
func ruleAllows(rule *rbacv1.PolicyRule, r *Request) bool {
	return verbMatches(rule, r.Verb) &&
		apiGroupMatches(rule, r.APIGroup) &&
		resourceMatches(rule, r.Resource, r.Subresource) &&
		resourceNameMatches(rule, r.Name)
}
