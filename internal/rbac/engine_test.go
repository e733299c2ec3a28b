package rbac

import (
	"os"
	"path/filepath"
	"testing"
)

func loadEngine(t testing.TB, name string) *Engine {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Load(f, name)
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(s)
}

func user(name string, groups ...string) User {
	return User{Name: name, Groups: append([]string{GroupAuthenticated}, groups...)}
}

func req(verb, group, resource, sub, name, ns string) Request {
	return Request{Verb: verb, APIGroup: group, Resource: resource, Subresource: sub, Name: name, Namespace: ns}
}

func TestCanSemantics(t *testing.T) {
	e := loadEngine(t, "semantics.yaml")
	tests := []struct {
		name  string
		user  User
		req   Request
		allow bool
		via   string // binding of the first chain, when allowed
	}{
		// Wildcard verbs cover every verb, on the listed resource only.
		{"star verbs list", user("u-star-verbs"), req("list", "", "secrets", "", "", "x"), true, "ClusterRoleBinding/star-verbs-crb"},
		{"star verbs odd verb", user("u-star-verbs"), req("escalate", "", "secrets", "", "", ""), true, ""},
		{"star verbs other resource", user("u-star-verbs"), req("get", "", "configmaps", "", "", "x"), false, ""},
		{"star verbs not subresource", user("u-star-verbs"), req("get", "", "secrets", "status", "", "x"), false, ""},
		// Wildcard resources cover resources and subresources of the group.
		{"star resources", user("u-star-resources"), req("get", "", "secrets", "", "s", "x"), true, ""},
		{"star resources sub", user("u-star-resources"), req("get", "", "pods", "log", "p", "x"), true, ""},
		{"star resources other group", user("u-star-resources"), req("get", "apps", "deployments", "", "", "x"), false, ""},
		{"star resources other verb", user("u-star-resources"), req("list", "", "secrets", "", "", "x"), false, ""},
		// Wildcard API groups.
		{"star groups apps", user("u-star-groups"), req("create", "apps", "deployments", "", "", "x"), true, ""},
		{"star groups other", user("u-star-groups"), req("create", "example.com", "deployments", "", "", "x"), true, ""},
		{"star groups core", user("u-star-groups"), req("create", "", "deployments", "", "", "x"), true, ""},
		// apiGroups must match: secrets in "apps" are not core secrets.
		{"wrong group", user("u-apps"), req("get", "", "secrets", "", "", "x"), false, ""},
		// */subresource matches that subresource of any resource, not the resource.
		{"star sub pods", user("u-star-sub"), req("create", "", "pods", "exec", "p", "x"), true, ""},
		{"star sub other", user("u-star-sub"), req("create", "", "nodes", "exec", "", ""), true, ""},
		{"star sub not resource", user("u-star-sub"), req("create", "", "pods", "", "", "x"), false, ""},
		{"star sub other sub", user("u-star-sub"), req("create", "", "pods", "attach", "", "x"), false, ""},
		// pods/* is not a wildcard.
		{"pods star not exec", user("u-pods-star"), req("create", "", "pods", "exec", "", "x"), false, ""},
		{"pods star not pods", user("u-pods-star"), req("create", "", "pods", "", "", "x"), false, ""},
		{"pods star literal", user("u-pods-star"), req("create", "", "pods", "*", "", "x"), true, ""},
		// */* is not a wildcard either: as upstream, it is "*/<subresource>"
		// for the subresource literally named "*", of any resource.
		{"star star not resource", user("u-star-star"), req("create", "", "pods", "", "", "x"), false, ""},
		{"star star not sub", user("u-star-star"), req("create", "", "pods", "exec", "", "x"), false, ""},
		{"star star not other sub", user("u-star-star"), req("create", "", "secrets", "status", "", "x"), false, ""},
		{"star star literal", user("u-star-star"), req("create", "", "pods", "*", "", "x"), true, ""},
		{"star star literal other", user("u-star-star"), req("create", "", "nodes", "*", "", ""), true, ""},
		// resourceNames limit a grant to the names; a request without a
		// name (list all) is not covered.
		{"named get", user("u-named"), req("get", "", "secrets", "", "db-password", "x"), true, ""},
		{"named get other", user("u-named"), req("get", "", "secrets", "", "other", "x"), false, ""},
		{"named list all", user("u-named"), req("list", "", "secrets", "", "", "x"), false, ""},
		{"named list one", user("u-named"), req("list", "", "secrets", "", "db-password", "x"), true, ""},
		// A ClusterRole bound by a RoleBinding is namespaced.
		{"rb cr in ns", ServiceAccountUser("team-a", "app"), req("get", "", "secrets", "", "", "team-a"), true, "RoleBinding/team-a/cr-in-ns"},
		{"rb cr other ns", ServiceAccountUser("team-a", "app"), req("get", "", "secrets", "", "", "team-b"), false, ""},
		{"rb cr cluster", ServiceAccountUser("team-a", "app"), req("list", "", "secrets", "", "", ""), false, ""},
		// SA subject namespace: explicit wins, empty defaults to the binding's.
		{"rb sa explicit ns", ServiceAccountUser("team-b", "other"), req("get", "", "secrets", "", "", "team-a"), true, ""},
		{"rb sa app in team-b", ServiceAccountUser("team-b", "app"), req("get", "", "secrets", "", "", "team-a"), false, ""},
		// A User subject named like a service account matches its token.
		{"user subject sa name", ServiceAccountUser("team-c", "byname"), req("get", "", "secrets", "", "", "team-a"), true, ""},
		// A ServiceAccount subject without namespace in a ClusterRoleBinding matches nobody.
		{"crb sa no ns", ServiceAccountUser("default", "ghost"), req("get", "", "secrets", "", "", "x"), false, ""},
		{"crb sa no ns other", ServiceAccountUser("", "ghost"), req("get", "", "secrets", "", "", "x"), false, ""},
		// A ClusterRoleBinding to a Role grants nothing.
		{"crb to role", user("u-crb-role"), req("watch", "", "secrets", "", "", "team-a"), false, ""},
		// Role in its namespace; a binding to a missing role grants nothing.
		{"role in ns", user("u-role"), req("watch", "", "secrets", "", "", "team-a"), true, "RoleBinding/team-a/role-in-ns"},
		{"missing role", user("u-role"), req("watch", "", "secrets", "", "", "team-b"), false, ""},
		// Groups: system:serviceaccounts:NS binds every SA of the namespace.
		{"sa group", ServiceAccountUser("team-b", "x"), req("create", "apps", "deployments", "", "", "y"), true, "ClusterRoleBinding/all-sas"},
		{"sa group other ns", ServiceAccountUser("team-c", "x"), req("create", "apps", "deployments", "", "", "y"), false, ""},
		{"authenticated", user("anyone"), req("get", "", "secrets", "", "db-password", "z"), true, "ClusterRoleBinding/authenticated-get"},
		{"not authenticated", User{Name: "anon"}, req("get", "", "secrets", "", "db-password", "z"), false, ""},
		// Aggregation: rules come from the matching roles, transitively,
		// and the aggregated role's own rules are replaced.
		{"aggregated list", User{Name: "r", Groups: []string{"readers"}}, req("list", "", "secrets", "", "", ""), true, "ClusterRoleBinding/aggregated-crb"},
		{"aggregated nested", User{Name: "r", Groups: []string{"readers"}}, req("create", "", "pods", "exec", "", "x"), true, ""},
		{"aggregated own rules replaced", User{Name: "r", Groups: []string{"readers"}}, req("delete", "", "configmaps", "", "", "x"), false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Can(tc.user, tc.req)
			if d.Allowed != tc.allow {
				t.Fatalf("Can(%v, %s) = %v, want %v (chains %v)", tc.user, tc.req, d.Allowed, tc.allow, d.Chains)
			}
			if tc.via != "" && d.Chains[0].Binding.String() != tc.via {
				t.Errorf("first chain %s, want via %s", d.Chains[0], tc.via)
			}
		})
	}
}

func TestAggregationChain(t *testing.T) {
	e := loadEngine(t, "semantics.yaml")
	d := e.Can(User{Name: "r", Groups: []string{"readers"}}, req("create", "", "pods", "exec", "", "x"))
	if !d.Allowed || d.Chains[0].AggregatedFrom != "nested-part" || d.Chains[0].Role.Name != "aggregated" {
		t.Fatalf("chain %+v, want aggregated from nested-part", d.Chains)
	}
}

func TestMissingRoleReported(t *testing.T) {
	e := loadEngine(t, "semantics.yaml")
	d := e.Can(user("u-role"), req("watch", "", "secrets", "", "", "team-b"))
	if len(d.Missing) != 1 {
		t.Fatalf("missing = %v, want the Role team-b/ns-reader", d.Missing)
	}
}

func TestWhoCan(t *testing.T) {
	e := loadEngine(t, "semantics.yaml")
	keys := func(gs []Grant) map[string]bool {
		m := map[string]bool{}
		for _, g := range gs {
			m[SubjectKey(g.Subject)+"@"+g.Namespace] = true
		}
		return m
	}
	// Cluster-wide list of secrets: only ClusterRoleBindings count.
	got := keys(e.WhoCan(req("list", "", "secrets", "", "", ""), false))
	for _, want := range []string{"User:u-star-verbs@", "Group:readers@"} {
		if !got[want] {
			t.Errorf("who-can list secrets: missing %s in %v", want, got)
		}
	}
	if got["ServiceAccount:team-a/app@team-a"] || got["User:u-named@"] || got["ServiceAccount:/ghost@"] {
		t.Errorf("who-can list secrets: unexpected %v", got)
	}
	// In team-a the RoleBinding subjects join, the defaulted SA included.
	got = keys(e.WhoCan(req("list", "", "secrets", "", "", "team-a"), false))
	for _, want := range []string{"ServiceAccount:team-a/app@team-a", "ServiceAccount:team-b/other@team-a", "User:system:serviceaccount:team-c:byname@team-a"} {
		if !got[want] {
			t.Errorf("who-can list secrets -n team-a: missing %s in %v", want, got)
		}
	}
	got = keys(e.WhoCan(req("watch", "", "secrets", "", "", ""), true))
	if !got["User:u-role@team-a"] {
		t.Errorf("who-can -A watch secrets: missing u-role in %v", got)
	}
}

func TestParseResource(t *testing.T) {
	for _, tc := range []struct{ in, res, group, sub string }{
		{"secrets", "secrets", "", ""},
		{"pods/exec", "pods", "", "exec"},
		{"deployments", "deployments", "apps", ""},
		{"deployments.apps/scale", "deployments", "apps", "scale"},
		{"widgets.example.com", "widgets", "example.com", ""},
		{"certificatesigningrequests/approval", "certificatesigningrequests", "certificates.k8s.io", "approval"},
	} {
		r, g, s, err := ParseResource(tc.in)
		if err != nil || r != tc.res || g != tc.group || s != tc.sub {
			t.Errorf("ParseResource(%q) = %q %q %q %v", tc.in, r, g, s, err)
		}
	}
	for _, bad := range []string{"", "a/b/c", ".apps", "x."} {
		if _, _, _, err := ParseResource(bad); err == nil {
			t.Errorf("ParseResource(%q) succeeded", bad)
		}
	}
}

func TestParseSubject(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		n    int
	}{
		{"alice", "alice", 1},
		{"user:alice", "alice", 1},
		{"serviceaccount:ns:sa", "system:serviceaccount:ns:sa", 3},
		{"sa:ns/sa", "system:serviceaccount:ns:sa", 3},
		{"system:serviceaccount:ns:sa", "system:serviceaccount:ns:sa", 3},
		{"group:devs", "", 1},
		{"system:kube-scheduler", "system:kube-scheduler", 1},
	} {
		u, err := ParseSubject(tc.in, nil)
		if err != nil || u.Name != tc.name || len(u.Groups) != tc.n {
			t.Errorf("ParseSubject(%q) = %+v, %v", tc.in, u, err)
		}
	}
	for _, bad := range []string{"user:", "group:", "serviceaccount:ns", "sa::x"} {
		if _, err := ParseSubject(bad, nil); err == nil {
			t.Errorf("ParseSubject(%q) succeeded", bad)
		}
	}
}
