package rbac

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// findingKeys renders findings as "check subject scope severity [names]".
func findingKeys(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		s := fmt.Sprintf("%s %s %s %s", f.Check, SubjectKey(f.Subject), f.Scope(), f.Severity)
		if len(f.ResourceNames) > 0 {
			s += " names=" + strings.Join(f.ResourceNames, ",")
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func TestAuditFindings(t *testing.T) {
	e := loadEngine(t, "findings.yaml")
	rep := Audit(e, AuditOptions{})
	want := []string{
		// Every permission check, from one wildcard ClusterRoleBinding.
		"secrets-wildcard User:root cluster critical",
		"secrets-list User:root cluster critical",
		"secrets-get User:root cluster high",
		"secrets-write User:root cluster high",
		"pods-create User:root cluster critical",
		"pods-exec User:root cluster high",
		"serviceaccount-token User:root cluster critical",
		"impersonate User:root cluster critical",
		"rbac-escalate-bind User:root cluster critical",
		"rbac-binding-write User:root cluster high",
		"nodes-proxy User:root cluster critical",
		"csr-approve User:root cluster high",
		"webhook-write User:root cluster high",
		// A built-in group is not a system subject: everyone is in it.
		"secrets-list Group:system:authenticated cluster critical",
		"secrets-get Group:system:authenticated cluster high",
		// resourceNames: limited, low.
		"secrets-get User:named cluster low names=db",
		"impersonate User:imp cluster critical",
		"rbac-escalate-bind User:esc cluster critical",
		"nodes-proxy User:proxy cluster critical",
		"csr-approve User:csr cluster high",
		"webhook-write User:hook cluster high",
		"binding-missing-role User:gone cluster low",
		// RoleBindings: namespaced severities.
		"secrets-get User:getter namespace app medium",
		"secrets-write User:writer namespace app medium",
		"pods-create ServiceAccount:app/deployer namespace app high",
		"pods-create User:deployer namespace app high",
		"pods-exec User:execer namespace app medium",
		"serviceaccount-token User:tokener namespace app high",
		"rbac-binding-write User:binder namespace app medium",
		// Impersonating users and groups is cluster-scoped: a RoleBinding
		// only lends service accounts of its namespace. nodes/proxy in a
		// RoleBinding grants nothing, so ns-proxy has no finding.
		"impersonate User:ns-imp namespace app high",
		// Hygiene.
		"binding-missing-subject ServiceAccount:app/ghost namespace app medium",
		"serviceaccount-automount ServiceAccount:app/web namespace app low",
		"serviceaccount-automount ServiceAccount:app/default namespace app low",
		"serviceaccount-token-secret ServiceAccount:app/web namespace app medium",
	}
	slices.Sort(want)
	if got := findingKeys(rep.Findings); !slices.Equal(got, want) {
		t.Errorf("findings:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	wantSys := []string{
		"binding-missing-subject ServiceAccount:kube-system/thing cluster medium",
		"secrets-get ServiceAccount:kube-system/thing cluster high",
		"secrets-list ServiceAccount:kube-system/thing cluster critical",
	}
	if got := findingKeys(rep.System); !slices.Equal(got, wantSys) {
		t.Errorf("system findings:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(wantSys, "\n     "))
	}
	// Worst first.
	for i := 1; i < len(rep.Findings); i++ {
		if rep.Findings[i].Severity > rep.Findings[i-1].Severity {
			t.Fatalf("findings not sorted worst first at %d", i)
		}
	}
	// Mixed in with IncludeSystem.
	all := Audit(e, AuditOptions{IncludeSystem: true})
	if len(all.Findings) != len(want)+len(wantSys) || len(all.System) != 0 {
		t.Errorf("IncludeSystem: %d findings, %d system", len(all.Findings), len(all.System))
	}
}

func TestAuditChains(t *testing.T) {
	rep := Audit(loadEngine(t, "findings.yaml"), AuditOptions{})
	for _, f := range rep.Findings {
		if f.Check == "impersonate" && f.Subject.Name == "ns-imp" {
			if !slices.Equal(f.Resources, []string{"serviceaccounts"}) || len(f.Chains) != 1 ||
				f.Chains[0].String() != "RoleBinding/app/ns-imp -> ClusterRole/impersonator -> rule 0 {verbs=impersonate apiGroups=\"\" resources=users,groups,serviceaccounts}" {
				t.Errorf("ns-imp finding: %+v", f)
			}
			return
		}
	}
	t.Fatal("no impersonate finding for ns-imp")
}

func TestAuditNeverKeepsSecretValues(t *testing.T) {
	e := loadEngine(t, "findings.yaml")
	for _, s := range e.snap.Secrets {
		if s.Data != nil || s.StringData != nil {
			t.Fatalf("secret %s kept its data", s.Name)
		}
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(Audit(e, AuditOptions{IncludeSystem: true})); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "c2VjcmV0") {
		t.Fatal("report contains a secret value")
	}
}

func TestOutputs(t *testing.T) {
	rep := Audit(loadEngine(t, "findings.yaml"), AuditOptions{})
	var table bytes.Buffer
	if err := WriteTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	out := table.String()
	// The subject with the worst finding comes first; chains are shown.
	if !strings.HasPrefix(out, "Group system:authenticated\n  CRITICAL") && !strings.HasPrefix(out, "User root\n  CRITICAL") {
		t.Errorf("table does not start with a critical subject:\n%s", out)
	}
	if !strings.Contains(out, "via ClusterRoleBinding/readers -> ClusterRole/secret-reader -> rule 0") {
		t.Errorf("table lacks a chain:\n%s", out)
	}
	if !strings.Contains(out, "3 finding(s) about system subjects") {
		t.Errorf("table lacks the system count:\n%s", out)
	}
	var sarif bytes.Buffer
	if err := WriteSARIF(&sarif, rep, ""); err != nil {
		t.Fatal(err)
	}
	var log struct {
		Version string
		Runs    []struct {
			Tool struct {
				Driver struct{ Rules []struct{ ID string } }
			}
			Results []struct {
				RuleID string
				Level  string
			}
		}
	}
	if err := json.Unmarshal(sarif.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	if log.Version != "2.1.0" || len(log.Runs) != 1 || len(log.Runs[0].Results) != len(rep.Findings) ||
		len(log.Runs[0].Tool.Driver.Rules) != len(Checks) {
		t.Fatalf("SARIF: %+v", log)
	}
	if r := log.Runs[0].Results[0]; r.Level != "error" {
		t.Errorf("first SARIF result level %q, want error", r.Level)
	}
}

func TestLoadFormats(t *testing.T) {
	// JSON stream, a JSON List and a YAML document in one directory.
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(dir+"/"+name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.json", `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"a"}}]}
{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"b","namespace":"ns1"}}`)
	write("b.yaml", "---\n# comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: c, namespace: ns1}\nroleRef: {kind: Role, name: b}\n")
	write("notes.txt", "not a manifest")
	s, err := LoadFiles([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.ClusterRoles) != 1 || len(s.Roles) != 1 || len(s.RoleBindings) != 1 {
		t.Fatalf("loaded %d clusterroles, %d roles, %d rolebindings", len(s.ClusterRoles), len(s.Roles), len(s.RoleBindings))
	}
	write("bad.yaml", "kind: [unclosed\n")
	if _, err := LoadFiles([]string{dir + "/bad.yaml"}, nil); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("bad YAML: err = %v", err)
	}
}
