package policy

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchPolicies returns n policies spread over roles roles: policy i is
// attached to role i%roles and lets that role's workloads use the keys of
// its team, in their own namespace, from the cluster network, with a deny
// and a describe statement beside it.
func benchPolicies(tb testing.TB, n, roles int) (byRole map[string][]*Policy, all []*Policy) {
	byRole = make(map[string][]*Policy)
	for i := range n {
		role := fmt.Sprintf("role-%d", i%roles)
		doc := fmt.Sprintf(`version: 1
statements:
  - sid: Use%[1]d
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt, kms:GenerateDataKey]
    resources: ["alias/team-%[1]d-*", "secret/team-%[1]d/*"]
    conditions:
      StringEquals:
        context.namespace: ${principal.namespace}
      IpAddress:
        source_ip: [10.0.0.0/8]
  - sid: NoRoot%[1]d
    effect: deny
    actions: "kms:*"
    resources: alias/team-%[1]d-root
  - sid: Describe%[1]d
    effect: allow
    actions: [key:Describe]
    resources: "alias/team-%[1]d-*"
`, i)
		p := mustParse(tb, fmt.Sprintf("p%d.yaml", i), doc)
		byRole[role] = append(byRole[role], p)
		all = append(all, p)
	}
	return byRole, all
}

// BenchmarkEvaluate1000Policies is the authorization cost of one request
// with 1,000 policies attached across 100 roles: find the caller's role's
// compiled set, then evaluate (the request is allowed by the role's last
// policy, so every candidate statement is tried).
func BenchmarkEvaluate1000Policies(b *testing.B) {
	byRole, _ := benchPolicies(b, 1000, 100)
	sets := make(map[string]*Set, len(byRole))
	for r, ps := range byRole {
		sets[r] = NewSet(ps...)
	}
	reqs := make([]Request, 100)
	for i := range reqs {
		last := 900 + i // the last policy of role-i
		reqs[i] = Request{
			Principal: Principal{Kind: "role", ID: "s", Role: fmt.Sprintf("role-%d", i), Namespace: "ns"},
			Action:    "kms:Decrypt", Resource: "3f1c2a9e-0d4b-4c8e-9a51-7b2d6e8f0a13",
			Aliases:  []string{fmt.Sprintf("alias/team-%d-web", last)},
			Context:  map[string]string{"namespace": "ns"},
			SourceIP: netip.MustParseAddr("10.1.2.3"), Time: fixedNow,
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := &reqs[i%len(reqs)]
		if !sets[r.Principal.Role].Evaluate(*r).Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkEvaluate1000PoliciesOneSet is the worst case: all 1,000
// policies attached to one caller, and only the last one allows.
func BenchmarkEvaluate1000PoliciesOneSet(b *testing.B) {
	_, all := benchPolicies(b, 1000, 100)
	set := NewSet(all...)
	req := Request{
		Principal: Principal{Kind: "role", ID: "s", Role: "role-99", Namespace: "ns"},
		Action:    "kms:Decrypt", Resource: "alias/team-999-web",
		Context:  map[string]string{"namespace": "ns"},
		SourceIP: netip.MustParseAddr("10.1.2.3"), Time: fixedNow,
	}
	b.ReportAllocs()
	for b.Loop() {
		if !set.Evaluate(req).Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkNewSet1000Policies is the cost of compiling 1,000 policies into
// one set (done when attachments change, not per request).
func BenchmarkNewSet1000Policies(b *testing.B) {
	_, all := benchPolicies(b, 1000, 100)
	b.ReportAllocs()
	for b.Loop() {
		NewSet(all...)
	}
}

func BenchmarkParse(b *testing.B) {
	doc := []byte(`version: 1
statements:
  - sid: UseAppKeysInOwnNamespace
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt, kms:GenerateDataKey]
    resources: ["alias/app-*"]
    conditions:
      StringEquals:
        context.namespace: ${principal.namespace}
`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("p.yaml", doc); err != nil {
			b.Fatal(err)
		}
	}
}
