package kube_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/cofferkms/coffer/internal/rbac"
	"github.com/cofferkms/coffer/test/kube"
)

// rbacSeed makes the generated policy reproducible; COFFER_RBAC_SEED
// overrides it to explore others.
const rbacSeed = 20260817

// The vocabulary the generator draws rules from and the differential
// queries range over: secrets and the resources around them.
var (
	diffNamespaces = []string{"ns-a", "ns-b"}
	diffVerbs      = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "impersonate", "bind", "escalate"}
	ruleVerbs      = append(slices.Clone(diffVerbs), "*")
	ruleGroups     = []string{"", "", "", "apps", rbacv1.GroupName, "*"}
	ruleResources  = []string{"secrets", "secrets", "secrets", "pods", "pods/exec", "pods/*", "*/exec", "*", "deployments",
		"serviceaccounts", "serviceaccounts/token", "roles", "clusterroles", "configmaps", "nodes/proxy", "users", "*/token", "*/*"}
	ruleNames = []string{"s1", "s2", "s3"}
	users     = []string{"u0", "u1", "u2", "u3"}
	groups    = []string{"g0", "g1", "g2"}
	sas       = [][2]string{{"ns-a", "sa0"}, {"ns-a", "sa1"}, {"ns-b", "sa0"}, {"ns-b", "ghost"}}
)

// diffQueryResources are the (group, resource, subresource) of the queries.
var diffQueryResources = [][3]string{
	{"", "secrets", ""}, {"", "pods", ""}, {"", "pods", "exec"}, {"", "pods", "log"}, {"", "nodes", "proxy"},
	{"", "serviceaccounts", "token"}, {"", "serviceaccounts", ""}, {"", "configmaps", ""}, {"apps", "deployments", ""},
	{"apps", "secrets", ""}, {rbacv1.GroupName, "roles", ""}, {rbacv1.GroupName, "clusterroles", ""}, {"", "users", ""},
	{"", "pods", "*"}, {"", "secrets", "*"},
}

// generatedPolicy is the seeded random RBAC objects of the test.
type generatedPolicy struct {
	clusterRoles        []rbacv1.ClusterRole
	roles               []rbacv1.Role
	roleBindings        []rbacv1.RoleBinding
	clusterRoleBindings []rbacv1.ClusterRoleBinding
	rules               int
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func pickSome[T comparable](r *rand.Rand, xs []T, max int) []T {
	n := 1 + r.IntN(max)
	var out []T
	for range n {
		x := pick(r, xs)
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func randomRule(r *rand.Rand) rbacv1.PolicyRule {
	rule := rbacv1.PolicyRule{
		Verbs:     pickSome(r, ruleVerbs, 3),
		APIGroups: pickSome(r, ruleGroups, 2),
		Resources: pickSome(r, ruleResources, 3),
	}
	if r.IntN(4) == 0 {
		rule.ResourceNames = pickSome(r, ruleNames, 2)
	}
	return rule
}

func randomSubjects(r *rand.Rand, namespaced bool) []rbacv1.Subject {
	var out []rbacv1.Subject
	for range 1 + r.IntN(3) {
		switch r.IntN(4) {
		case 0:
			out = append(out, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: pick(r, users)})
		case 1:
			g := pick(r, append(slices.Clone(groups), "system:serviceaccounts:ns-a", "system:authenticated"))
			out = append(out, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: g})
		case 2:
			sa := pick(r, sas)
			out = append(out, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: sa[0], Name: sa[1]})
		default:
			if namespaced { // namespace defaults to the binding's
				out = append(out, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: pick(r, sas)[1]})
			} else { // a user named like a service account
				sa := pick(r, sas)
				out = append(out, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "system:serviceaccount:" + sa[0] + ":" + sa[1]})
			}
		}
	}
	return out
}

// generatePolicy draws at least minRules rules into ClusterRoles and Roles,
// a few aggregated ClusterRoles, and bindings between them, including
// bindings to roles that do not exist.
func generatePolicy(seed uint64, minRules int) *generatedPolicy {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := &generatedPolicy{}
	rules := func() []rbacv1.PolicyRule {
		var rs []rbacv1.PolicyRule
		for range 1 + r.IntN(4) {
			rs = append(rs, randomRule(r))
		}
		p.rules += len(rs)
		return rs
	}
	aggLabels := []string{"diff.coffer.dev/agg-0", "diff.coffer.dev/agg-1", "diff.coffer.dev/agg-2"}
	for i := 0; p.rules < minRules; i++ {
		if i%2 == 0 {
			cr := rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("diff-cr-%d", i)}, Rules: rules()}
			if r.IntN(3) == 0 {
				cr.Labels = map[string]string{pick(r, aggLabels): "true"}
			}
			p.clusterRoles = append(p.clusterRoles, cr)
		} else {
			p.roles = append(p.roles, rbacv1.Role{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("diff-role-%d", i), Namespace: pick(r, diffNamespaces)},
				Rules:      rules(),
			})
		}
	}
	for i, l := range aggLabels {
		sel := []metav1.LabelSelector{{MatchLabels: map[string]string{l: "true"}}}
		if i == 2 { // two selectors, one of them an expression
			sel = append(sel, metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: aggLabels[0], Operator: metav1.LabelSelectorOpExists}}})
		}
		p.clusterRoles = append(p.clusterRoles, rbacv1.ClusterRole{
			ObjectMeta:      metav1.ObjectMeta{Name: fmt.Sprintf("diff-agg-%d", i)},
			AggregationRule: &rbacv1.AggregationRule{ClusterRoleSelectors: sel},
		})
	}
	roleRef := func(ns string) rbacv1.RoleRef {
		if ns != "" && r.IntN(2) == 0 {
			var names []string
			for _, ro := range p.roles {
				if ro.Namespace == ns {
					names = append(names, ro.Name)
				}
			}
			names = append(names, "diff-role-missing")
			return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: pick(r, names)}
		}
		if r.IntN(15) == 0 {
			return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "diff-cr-missing"}
		}
		return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: pick(r, p.clusterRoles).Name}
	}
	for i := range 45 {
		ns := pick(r, diffNamespaces)
		p.roleBindings = append(p.roleBindings, rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("diff-rb-%d", i), Namespace: ns},
			RoleRef:    roleRef(ns), Subjects: randomSubjects(r, true),
		})
	}
	for i := range 12 {
		p.clusterRoleBindings = append(p.clusterRoleBindings, rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("diff-crb-%d", i)},
			RoleRef:    roleRef(""), Subjects: randomSubjects(r, false),
		})
	}
	return p
}

// aggregateLikeController fills the rules of the aggregated ClusterRoles
// the way kube-controller-manager's clusterrole-aggregation controller
// does (the test apiserver runs without a controller manager). The
// generated aggregation sources are never aggregated themselves.
func aggregateLikeController(crs []rbacv1.ClusterRole) []rbacv1.ClusterRole {
	out := slices.Clone(crs)
	sorted := slices.Clone(crs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for i := range out {
		if out[i].AggregationRule == nil {
			continue
		}
		var rules []rbacv1.PolicyRule
		for _, sel := range out[i].AggregationRule.ClusterRoleSelectors {
			s, err := metav1.LabelSelectorAsSelector(&sel)
			if err != nil {
				panic(err)
			}
			for _, src := range sorted {
				if src.Name == out[i].Name || !s.Matches(labels.Set(src.Labels)) {
					continue
				}
				for _, ru := range src.Rules {
					if !slices.ContainsFunc(rules, func(x rbacv1.PolicyRule) bool { return x.String() == ru.String() }) {
						rules = append(rules, ru)
					}
				}
			}
		}
		out[i].Rules = rules
	}
	return out
}

// manifest renders objects as a JSON List the loader reads.
func writeList(t *testing.T, path string, items []any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func typed(apiVersion, kind string, obj any) map[string]any {
	b, _ := json.Marshal(obj)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	m["apiVersion"], m["kind"] = apiVersion, kind
	return m
}

const rbacAPIVersion = "rbac.authorization.k8s.io/v1"

// diffIdentity is a user the queries run as.
type diffIdentity struct {
	name string
	user rbac.User
}

func diffIdentities() []diffIdentity {
	var ids []diffIdentity
	for i, u := range users {
		// Users are authenticated and in one of the test groups.
		ids = append(ids, diffIdentity{"user:" + u, rbac.User{Name: u, Groups: []string{groups[i%len(groups)], rbac.GroupAuthenticated}}})
	}
	for _, g := range groups {
		ids = append(ids, diffIdentity{"group:" + g, rbac.User{Groups: []string{g}}})
	}
	for _, sa := range sas {
		ids = append(ids, diffIdentity{"serviceaccount:" + sa[0] + ":" + sa[1], rbac.ServiceAccountUser(sa[0], sa[1])})
	}
	return ids
}

type diffQuery struct {
	id  diffIdentity
	req rbac.Request
}

func diffQueries() []diffQuery {
	var qs []diffQuery
	for _, id := range diffIdentities() {
		for _, verb := range diffVerbs {
			for _, res := range diffQueryResources {
				for _, ns := range append([]string{""}, diffNamespaces...) {
					for _, name := range []string{"", "s1", "s3"} {
						qs = append(qs, diffQuery{id, rbac.Request{Verb: verb, APIGroup: res[0], Resource: res[1],
							Subresource: res[2], Name: name, Namespace: ns}})
					}
				}
			}
		}
	}
	return qs
}

// subjectAccessReview asks the apiserver.
func subjectAccessReview(ctx context.Context, cs kubernetes.Interface, q diffQuery) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: q.id.user.Name, Groups: q.id.user.Groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: q.req.Namespace, Verb: q.req.Verb, Group: q.req.APIGroup, Resource: q.req.Resource,
			Subresource: q.req.Subresource, Name: q.req.Name,
		},
	}}
	res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return res.Status.Allowed, nil
}

func TestRbacDifferentialSubjectAccessReview(t *testing.T) {
	kube.RequireE2E(t)
	seed := uint64(rbacSeed)
	if s := os.Getenv("COFFER_RBAC_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	p := generatePolicy(seed, 240)
	t.Logf("seed %d: %d rules in %d ClusterRoles and %d Roles, %d RoleBindings, %d ClusterRoleBindings",
		seed, p.rules, len(p.clusterRoles), len(p.roles), len(p.roleBindings), len(p.clusterRoleBindings))

	c := kube.StartCluster(t, kube.ClusterOptions{})
	cs := c.APIServer.Clientset()
	ctx := context.Background()
	for _, ns := range diffNamespaces {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The live cluster gets aggregated roles as the controller would
	// fill them; the manifests keep them empty, so coffer aggregates.
	for _, cr := range aggregateLikeController(p.clusterRoles) {
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &cr, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating ClusterRole %s: %v", cr.Name, err)
		}
	}
	for _, ro := range p.roles {
		if _, err := cs.RbacV1().Roles(ro.Namespace).Create(ctx, &ro, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating Role %s: %v", ro.Name, err)
		}
	}
	for _, b := range p.roleBindings {
		if _, err := cs.RbacV1().RoleBindings(b.Namespace).Create(ctx, &b, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating RoleBinding %s: %v", b.Name, err)
		}
	}
	for _, b := range p.clusterRoleBindings {
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &b, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating ClusterRoleBinding %s: %v", b.Name, err)
		}
	}

	dir := t.TempDir()
	// generated.json: exactly the generated objects.
	var items []any
	for _, cr := range p.clusterRoles {
		items = append(items, typed(rbacAPIVersion, "ClusterRole", cr))
	}
	for _, ro := range p.roles {
		items = append(items, typed(rbacAPIVersion, "Role", ro))
	}
	for _, b := range p.roleBindings {
		items = append(items, typed(rbacAPIVersion, "RoleBinding", b))
	}
	for _, b := range p.clusterRoleBindings {
		items = append(items, typed(rbacAPIVersion, "ClusterRoleBinding", b))
	}
	writeList(t, filepath.Join(dir, "generated.json"), items)
	// bootstrap.json: every RBAC object the apiserver created itself
	// (the bootstrap policy: system:basic-user for system:authenticated,
	// system:service-account-issuer-discovery for system:serviceaccounts,
	// ...), exported from the live cluster. None of them binds the
	// aggregated bootstrap roles (admin, edit, view) whose rules only a
	// controller manager would fill, so the export is exact.
	writeList(t, filepath.Join(dir, "bootstrap.json"), exportBootstrap(t, cs))

	snap, err := rbac.LoadFiles([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	files := rbac.NewEngine(snap)
	liveSnap, _, err := rbac.LoadLive(ctx, c.APIServer.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	live := rbac.NewEngine(liveSnap)

	queries := diffQueries()
	start := time.Now()
	type result struct {
		q                 diffQuery
		want, files, live bool
		chains            []rbac.Chain
	}
	results := make([]result, len(queries))
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, 1)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				q := queries[i]
				want, err := subjectAccessReview(ctx, cs, q)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				d := files.Can(q.id.user, q.req)
				results[i] = result{q: q, want: want, files: d.Allowed, live: live.Can(q.id.user, q.req).Allowed, chains: d.Chains}
			}
		}()
	}
	for i := range queries {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("SubjectAccessReview: %v", err)
	default:
	}
	allowed, bad := 0, 0
	for _, r := range results {
		if r.want {
			allowed++
		}
		if r.files != r.want || r.live != r.want {
			bad++
			if bad <= 25 {
				t.Errorf("%s %s: apiserver allowed=%v, coffer (manifests)=%v, coffer (live)=%v; chains %v",
					r.q.id.name, r.q.req, r.want, r.files, r.live, r.chains)
			}
		}
	}
	t.Logf("%d queries (%d allowed, %d denied) compared with SubjectAccessReview in %v; %d disagreements",
		len(queries), allowed, len(queries)-allowed, time.Since(start).Round(time.Millisecond), bad)
	if allowed < len(queries)/20 || allowed > len(queries)*19/20 {
		t.Errorf("only %d of %d queries allowed: the generated policy does not discriminate", allowed, len(queries))
	}

	// The command itself, on a seeded sample, from manifests and live.
	kubeconfig := c.APIServer.Kubeconfig()
	r := rand.New(rand.NewPCG(seed, 1))
	for range 12 {
		res := results[r.IntN(len(results))]
		for _, src := range [][]string{{"-f", dir}, {"--kubeconfig", kubeconfig}} {
			args := append([]string{"rbac", "can", res.q.id.name, res.q.req.Verb, resourceArg(res.q.req), "-o", "json"}, src...)
			if res.q.req.Namespace != "" {
				args = append(args, "-n", res.q.req.Namespace)
			}
			if res.q.req.Name != "" {
				args = append(args, "--name", res.q.req.Name)
			}
			if strings.HasPrefix(res.q.id.name, "user:") {
				args = append(args, "--group", res.q.id.user.Groups[0])
			}
			out, code := runCofferCode(t, args...)
			var got struct{ Allowed bool }
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("coffer %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if got.Allowed != res.want || (code == 0) != res.want {
				t.Errorf("coffer %s: allowed=%v exit %d, apiserver allowed=%v", strings.Join(args, " "), got.Allowed, code, res.want)
			}
		}
	}
}

// resourceArg renders a request's resource as the CLI takes it.
func resourceArg(r rbac.Request) string {
	s := r.Resource
	if r.APIGroup != "" {
		s += "." + r.APIGroup
	}
	if r.Subresource != "" {
		s += "/" + r.Subresource
	}
	return s
}

// exportBootstrap lists the RBAC objects the test did not create.
func exportBootstrap(t *testing.T, cs kubernetes.Interface) []any {
	t.Helper()
	ctx := context.Background()
	mine := func(name string) bool { return strings.HasPrefix(name, "diff-") }
	var items []any
	crs, err := cs.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range crs.Items {
		if !mine(o.Name) {
			items = append(items, typed(rbacAPIVersion, "ClusterRole", o))
		}
	}
	crbs, err := cs.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range crbs.Items {
		if !mine(o.Name) {
			if o.RoleRef.Name == "admin" || o.RoleRef.Name == "edit" || o.RoleRef.Name == "view" {
				t.Fatalf("bootstrap ClusterRoleBinding %s binds an aggregated role", o.Name)
			}
			items = append(items, typed(rbacAPIVersion, "ClusterRoleBinding", o))
		}
	}
	roles, err := cs.RbacV1().Roles("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range roles.Items {
		if !mine(o.Name) {
			items = append(items, typed(rbacAPIVersion, "Role", o))
		}
	}
	rbs, err := cs.RbacV1().RoleBindings("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rbs.Items {
		if !mine(o.Name) {
			items = append(items, typed(rbacAPIVersion, "RoleBinding", o))
		}
	}
	return items
}

// runCofferCode runs the coffer binary and returns stdout and exit code.
func runCofferCode(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(kube.CofferBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), 0
	case errors.As(err, &ee) && ee.ExitCode() == 3 && stderr.Len() == 0:
		// 3 is the CLI's "no" answer (docs/cli.md): rbac can denies.
		return stdout.String(), 3
	}
	t.Fatalf("coffer %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	return "", 0
}
