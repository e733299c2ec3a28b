package rbac

import (
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
)

// knownGroups maps well-known resource names to their API group, so that
// "deployments" means deployments.apps as it does for kubectl. A name not
// listed, without a ".group" suffix, is in the core group.
var knownGroups = map[string]string{
	"deployments": "apps", "replicasets": "apps", "statefulsets": "apps", "daemonsets": "apps",
	"controllerrevisions": "apps",
	"jobs":                "batch", "cronjobs": "batch",
	"roles": rbacGroup, "clusterroles": rbacGroup, "rolebindings": rbacGroup, "clusterrolebindings": rbacGroup,
	"certificatesigningrequests":      "certificates.k8s.io",
	"mutatingwebhookconfigurations":   "admissionregistration.k8s.io",
	"validatingwebhookconfigurations": "admissionregistration.k8s.io",
	"ingresses":                       "networking.k8s.io", "networkpolicies": "networking.k8s.io",
	"customresourcedefinitions": "apiextensions.k8s.io",
	"tokenreviews":              "authentication.k8s.io",
	"subjectaccessreviews":      "authorization.k8s.io",
	"horizontalpodautoscalers":  "autoscaling",
	"poddisruptionbudgets":      "policy",
	"storageclasses":            "storage.k8s.io",
	"leases":                    "coordination.k8s.io",
}

// ParseResource parses RESOURCE[.GROUP][/SUBRESOURCE] ("secrets",
// "pods/exec", "deployments.apps", "deployments", "widgets.example.com").
// A resource without a group is looked up among the well-known ones and is
// otherwise in the core group; "*" stays a literal, as in a request.
func ParseResource(s string) (resource, group, subresource string, err error) {
	if s == "" {
		return "", "", "", fmt.Errorf("empty resource")
	}
	resource, subresource, _ = strings.Cut(s, "/")
	if strings.Contains(subresource, "/") {
		return "", "", "", fmt.Errorf("invalid resource %q: want RESOURCE[.GROUP][/SUBRESOURCE]", s)
	}
	resource, group, hasGroup := strings.Cut(resource, ".")
	if resource == "" || (hasGroup && group == "") {
		return "", "", "", fmt.Errorf("invalid resource %q: want RESOURCE[.GROUP][/SUBRESOURCE]", s)
	}
	if !hasGroup {
		group = knownGroups[resource]
	}
	return strings.ToLower(resource), group, subresource, nil
}

// ParseSubject parses a subject for Can and returns the identity to
// evaluate:
//
//   - "user:NAME" or a bare NAME: the user, in system:authenticated and
//     the extra groups;
//   - "serviceaccount:NS:NAME", "sa:NS:NAME", "sa:NS/NAME" or
//     "system:serviceaccount:NS:NAME": the service account's token identity
//     (ServiceAccountUser) plus the extra groups;
//   - "group:NAME": a member of the group and nothing else (no user
//     name, no system:authenticated), i.e. what the group itself grants.
func ParseSubject(s string, extraGroups []string) (User, error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return User{Name: s, Groups: append([]string{GroupAuthenticated}, extraGroups...)}, nil
	}
	switch strings.ToLower(kind) {
	case "user":
		if rest == "" {
			break
		}
		if u, ok := saFromUserName(rest, extraGroups); ok {
			return u, nil
		}
		return User{Name: rest, Groups: append([]string{GroupAuthenticated}, extraGroups...)}, nil
	case "group":
		if rest == "" {
			break
		}
		return User{Groups: append([]string{rest}, extraGroups...)}, nil
	case "serviceaccount", "sa":
		ns, name, ok := strings.Cut(rest, ":")
		if !ok {
			ns, name, ok = strings.Cut(rest, "/")
		}
		if !ok || ns == "" || name == "" {
			break
		}
		u := ServiceAccountUser(ns, name)
		u.Groups = append(u.Groups, extraGroups...)
		return u, nil
	case "system":
		if u, ok := saFromUserName(s, extraGroups); ok {
			return u, nil
		}
		return User{Name: s, Groups: append([]string{GroupAuthenticated}, extraGroups...)}, nil
	default:
		return User{Name: s, Groups: append([]string{GroupAuthenticated}, extraGroups...)}, nil
	}
	return User{}, fmt.Errorf("invalid subject %q: want user:NAME, group:NAME or serviceaccount:NAMESPACE:NAME", s)
}

// saFromUserName recognises system:serviceaccount:NS:NAME.
func saFromUserName(name string, extra []string) (User, bool) {
	rest, ok := strings.CutPrefix(name, saUserPrefix)
	if !ok {
		return User{}, false
	}
	ns, n, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || n == "" || strings.Contains(n, ":") {
		return User{}, false
	}
	u := ServiceAccountUser(ns, n)
	u.Groups = append(u.Groups, extra...)
	return u, true
}

// subjectFromUser is the binding subject a User stands for, for display.
func subjectFromUser(u User) rbacv1.Subject {
	if rest, ok := strings.CutPrefix(u.Name, saUserPrefix); ok {
		ns, n, _ := strings.Cut(rest, ":")
		return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: n}
	}
	if u.Name == "" && len(u.Groups) > 0 {
		return rbacv1.Subject{Kind: rbacv1.GroupKind, Name: u.Groups[0]}
	}
	return rbacv1.Subject{Kind: rbacv1.UserKind, Name: u.Name}
}

// Describe renders u for messages.
func (u User) Describe() string {
	return SubjectString(subjectFromUser(u))
}
