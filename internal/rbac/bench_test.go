package rbac

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Size of the benchmark cluster export (issue 8): 5,000 roles, 10,000
// bindings, 2,000 service accounts.
const (
	benchNamespaces   = 200
	benchClusterRoles = 1000
	benchRoles        = 4000
	benchCRBs         = 2000
	benchRBs          = 8000
	benchSAs          = 2000
	benchPods         = 2000
)

// writeBenchFixture writes a seeded cluster export as multi-document YAML,
// the shape of kubectl get ... -A -o yaml split into documents.
func writeBenchFixture(w io.Writer) error {
	r := rand.New(rand.NewPCG(8, 8))
	bw := bufio.NewWriter(w)
	verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete", "*"}
	resources := []string{"secrets", "configmaps", "pods", "pods/exec", "pods/log", "services", "deployments",
		"serviceaccounts", "serviceaccounts/token", "roles", "rolebindings", "events", "*"}
	groups := []string{`""`, `""`, "apps", "rbac.authorization.k8s.io", "batch", `"*"`}
	rule := func() string {
		s := fmt.Sprintf("- apiGroups: [%s]\n  resources: [%q, %q]\n  verbs: [%q, %q]\n",
			groups[r.IntN(len(groups))], resources[r.IntN(len(resources))], resources[r.IntN(len(resources))],
			verbs[r.IntN(len(verbs))], verbs[r.IntN(len(verbs))])
		if r.IntN(5) == 0 {
			s += fmt.Sprintf("  resourceNames: [obj-%d]\n", r.IntN(50))
		}
		return s
	}
	rules := func() string {
		s := "rules:\n"
		for range 2 + r.IntN(4) {
			s += rule()
		}
		return s
	}
	ns := func(i int) string { return fmt.Sprintf("ns-%d", i%benchNamespaces) }
	for i := range benchClusterRoles {
		fmt.Fprintf(bw, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: cr-%d\n  labels: {agg: \"%d\"}\n", i, i%10)
		if i%100 == 0 {
			fmt.Fprintf(bw, "aggregationRule:\n  clusterRoleSelectors:\n  - matchLabels: {agg: \"%d\"}\n", (i/100)%10)
		} else {
			bw.WriteString(rules())
		}
	}
	for i := range benchRoles {
		fmt.Fprintf(bw, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: role-%d\n  namespace: %s\n%s", i, ns(i), rules())
	}
	subject := func(n string) string {
		switch r.IntN(3) {
		case 0:
			return fmt.Sprintf("- kind: ServiceAccount\n  name: sa-%d\n  namespace: %s\n", r.IntN(benchSAs/benchNamespaces), n)
		case 1:
			return fmt.Sprintf("- kind: User\n  apiGroup: rbac.authorization.k8s.io\n  name: user-%d\n", r.IntN(500))
		}
		return fmt.Sprintf("- kind: Group\n  apiGroup: rbac.authorization.k8s.io\n  name: group-%d\n", r.IntN(100))
	}
	for i := range benchCRBs {
		fmt.Fprintf(bw, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: crb-%d\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cr-%d}\nsubjects:\n%s%s",
			i, r.IntN(benchClusterRoles), subject(ns(r.IntN(benchNamespaces))), subject(ns(r.IntN(benchNamespaces))))
	}
	for i := range benchRBs {
		n := ns(i)
		ref := fmt.Sprintf("{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cr-%d}", r.IntN(benchClusterRoles))
		if r.IntN(2) == 0 {
			ref = fmt.Sprintf("{apiGroup: rbac.authorization.k8s.io, kind: Role, name: role-%d}", benchNamespaces*r.IntN(benchRoles/benchNamespaces)+i%benchNamespaces)
		}
		fmt.Fprintf(bw, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: rb-%d\n  namespace: %s\nroleRef: %s\nsubjects:\n%s", i, n, ref, subject(n))
	}
	for i := range benchSAs {
		fmt.Fprintf(bw, "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa-%d\n  namespace: %s\n", i/benchNamespaces, ns(i))
	}
	for i := range benchPods {
		fmt.Fprintf(bw, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-%d\n  namespace: %s\nspec:\n  serviceAccountName: sa-%d\n  containers:\n  - {name: c, image: app}\n", i, ns(i), r.IntN(benchSAs/benchNamespaces))
	}
	return bw.Flush()
}

// TestWriteBenchFixture writes the benchmark fixture to
// $COFFER_RBAC_FIXTURE, for timing the command itself:
//
//	COFFER_RBAC_FIXTURE=/tmp/rbac-bench.yaml go test -run TestWriteBenchFixture ./internal/rbac/
//	/usr/bin/time -v coffer rbac audit -f /tmp/rbac-bench.yaml -o json > /dev/null
func TestWriteBenchFixture(t *testing.T) {
	path := os.Getenv("COFFER_RBAC_FIXTURE")
	if path == "" {
		path = filepath.Join(t.TempDir(), "bench.yaml") // still checks that it loads
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeBenchFixture(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := LoadFiles([]string{path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Roles)+len(s.ClusterRoles) != benchRoles+benchClusterRoles ||
		len(s.RoleBindings)+len(s.ClusterRoleBindings) != benchRBs+benchCRBs || len(s.ServiceAccounts) != benchSAs {
		t.Fatalf("fixture has %d roles, %d bindings, %d service accounts", len(s.Roles)+len(s.ClusterRoles),
			len(s.RoleBindings)+len(s.ClusterRoleBindings), len(s.ServiceAccounts))
	}
}

// BenchmarkAuditClusterExport loads the 5,000-role / 10,000-binding /
// 2,000-service-account export from YAML, resolves it and audits it: the
// whole of `coffer rbac audit -f`. It reports the peak heap in use.
func BenchmarkAuditClusterExport(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bench.yaml")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := writeBenchFixture(f); err != nil {
		b.Fatal(err)
	}
	f.Close()
	var peak uint64
	b.ResetTimer()
	for b.Loop() {
		s, err := LoadFiles([]string{path}, nil)
		if err != nil {
			b.Fatal(err)
		}
		rep := Audit(NewEngine(s), AuditOptions{})
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
		if len(rep.Findings) == 0 {
			b.Fatal("no findings")
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}
