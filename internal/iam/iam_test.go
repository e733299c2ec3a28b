package iam

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/policy"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

var ctx = context.Background()

type env struct {
	store  *inmem.Backend
	tokens *auth.Tokens
	keys   *keys.Service
	iam    *Service
	now    time.Time
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{store: inmem.New(), now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	clock := func() time.Time { return e.now }
	e.tokens = auth.NewTokens(e.store, clock)
	e.keys = keys.New(e.store, keys.WithClock(clock))
	e.iam = New(e.store, e.tokens, e.keys, clock)
	return e
}

const allowEncryptApp = `statements:
  - sid: EncryptApp
    effect: allow
    actions: [kms:Encrypt]
    resources: [alias/app]
`

func (e *env) policy(t testing.TB, name, doc string) {
	t.Helper()
	if _, err := e.iam.PutPolicy(ctx, name, PutPolicyRequest{Document: doc}); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyLifecycle(t *testing.T) {
	e := newEnv(t)
	_, err := e.iam.PutPolicy(ctx, "bad", PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:Encrpyt]\n    resources: [\"*\"]\n"})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "bad:3:") || !strings.Contains(err.Error(), "kms:Encrypt") {
		t.Fatalf("unknown action: %v (want the line and a suggestion)", err)
	}
	if _, err := e.iam.PutPolicy(ctx, "no/slash", PutPolicyRequest{Document: allowEncryptApp}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad name: %v", err)
	}
	e.policy(t, "enc", allowEncryptApp)
	if _, err := e.iam.CreateRole(ctx, Role{Name: "app", Policies: []string{"enc"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.iam.DeletePolicy(ctx, "enc"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "role/app") {
		t.Fatalf("deleting an attached policy: %v", err)
	}
	if _, err := e.iam.DeleteRole(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := e.iam.DeletePolicy(ctx, "enc"); err != nil {
		t.Fatalf("deleting a detached policy: %v", err)
	}
	if _, err := e.iam.GetPolicy(ctx, "enc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestRoleValidation(t *testing.T) {
	e := newEnv(t)
	e.policy(t, "enc", allowEncryptApp)
	for _, c := range []struct {
		role Role
		msg  string
	}{
		{Role{Name: "", Policies: []string{"enc"}}, "role name"},
		{Role{Name: "r", Policies: []string{"nope"}}, `policy "nope" does not exist`},
		{Role{Name: "r", Policies: []string{"enc", "enc"}}, "listed twice"},
		{Role{Name: "r", MaxTTL: "13h"}, "hard cap"},
		{Role{Name: "r", TTL: "2h", MaxTTL: "1h"}, "longer than max_ttl"},
		{Role{Name: "r", TTL: "soon"}, "positive duration"},
		{Role{Name: "r", TrustPrincipals: []string{"access-key:[z-a"}}, "bad pattern"},
		{Role{Name: "r", Kubernetes: []KubernetesTrust{{Cluster: "c", Namespace: "n"}}}, "service_account is required"},
		{Role{Name: "r", Certificates: []CertificateTrust{{}}}, "common_name or dns_name"},
		{Role{Name: "r", BoundCIDRs: []string{"10.0.0.0/40"}}, "not a CIDR"},
	} {
		_, err := e.iam.CreateRole(ctx, c.role)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%+v: %v, want %q", c.role, err, c.msg)
		}
	}
	r, err := e.iam.CreateRole(ctx, Role{Name: "k", Kubernetes: []KubernetesTrust{{Cluster: "*", Namespace: "a", ServiceAccount: "b"}}})
	if err != nil || r.Kubernetes[0].Audience != DefaultAudience {
		t.Fatalf("default audience: %+v %v", r, err)
	}
	if _, err := e.iam.CreateRole(ctx, Role{Name: "k"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := e.iam.UpdateRole(ctx, "missing", Role{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
}

// TestAssumeRole covers trust, TTL bounds, CIDR narrowing, scope-down and
// chained subjects.
func TestAssumeRole(t *testing.T) {
	e := newEnv(t)
	e.policy(t, "enc", allowEncryptApp)
	if _, err := e.iam.CreateRole(ctx, Role{Name: "ci", Policies: []string{"enc"}, TTL: "15m", MaxTTL: "1h",
		TrustPrincipals: []string{"access-key:*"}, BoundCIDRs: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	ak := &auth.Principal{Kind: auth.KindAccessKey, ID: "cfak_A"}
	tok := &auth.Principal{Kind: auth.KindToken, ID: "acc_1"}
	if _, _, err := e.iam.AssumeRole(ctx, tok, AssumeRoleRequest{Role: "ci"}); !errors.Is(err, auth.ErrForbidden) || !strings.Contains(err.Error(), "does not trust token:acc_1") {
		t.Fatalf("untrusted caller: %v", err)
	}
	_, p, err := e.iam.AssumeRole(ctx, ak, AssumeRoleRequest{Role: "ci"})
	if err != nil || p.ExpiresAt.Sub(p.CreatedAt) != 15*time.Minute || p.MaxExpiresAt.Sub(p.CreatedAt) != time.Hour || p.Subject != "access-key:cfak_A" || len(p.CIDRs) != 1 {
		t.Fatalf("assume: %+v %v", p, err)
	}
	if _, _, err := e.iam.AssumeRole(ctx, ak, AssumeRoleRequest{Role: "ci", TTL: "2h"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ttl above max: %v", err)
	}
	if _, _, err := e.iam.AssumeRole(ctx, ak, AssumeRoleRequest{Role: "ci", BoundCIDRs: []string{"192.168.0.0/16"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("cidr outside the role's: %v", err)
	}
	_, p, err = e.iam.AssumeRole(ctx, ak, AssumeRoleRequest{Role: "ci", BoundCIDRs: []string{"10.1.0.0/16"}})
	if err != nil || p.CIDRs[0].String() != "10.1.0.0/16" {
		t.Fatalf("narrower cidr: %+v %v", p.CIDRs, err)
	}
	if _, _, err := e.iam.AssumeRole(ctx, ak, AssumeRoleRequest{Role: "ci", Policy: "statements: nope"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad scope policy: %v", err)
	}
	root := &auth.Principal{Kind: auth.KindRoot, Root: true}
	if _, _, err := e.iam.AssumeRole(ctx, root, AssumeRoleRequest{Role: "ci"}); err != nil {
		t.Fatalf("root assumes any role: %v", err)
	}
	// Chained: a role token assuming a role keeps the original subject.
	if _, err := e.iam.CreateRole(ctx, Role{Name: "next", TrustPrincipals: []string{"role:ci"}}); err != nil {
		t.Fatal(err)
	}
	_, p2, err := e.iam.AssumeRole(ctx, &p, AssumeRoleRequest{Role: "next"})
	if err != nil || p2.Subject != "access-key:cfak_A" {
		t.Fatalf("chained: %+v %v", p2, err)
	}
	n, err := e.iam.RevokePrincipal(ctx, "access-key:cfak_A")
	if err != nil || n != 3 {
		t.Fatalf("revoke principal: %d %v (want the 2 ci tokens of the key and the chained one, not root's)", n, err)
	}
}

func TestAuthorizeThroughIAM(t *testing.T) {
	e := newEnv(t)
	k, err := e.keys.Create(ctx, keys.CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	e.policy(t, "enc", allowEncryptApp)
	e.policy(t, "ns", `statements:
  - effect: allow
    actions: [kms:Decrypt]
    resources: ["*"]
    conditions:
      StringEquals:
        context.namespace: ${principal.namespace}
`)
	if _, err := e.iam.CreateRole(ctx, Role{Name: "app", Policies: []string{"enc", "ns"}}); err != nil {
		t.Fatal(err)
	}
	p := &auth.Principal{Kind: auth.KindRole, Role: "app", Namespace: "pay", ID: "acc_x"}
	ask := func(action, res string, ec map[string]string) error {
		q := policy.Request{Action: action, Resource: res, Context: ec, Time: e.now, SourceIP: netip.MustParseAddr("127.0.0.1")}
		return e.iam.Authorize(ctx, p, &q)
	}
	// The key id matches a policy written for the alias.
	if err := ask("kms:Encrypt", k.ID, nil); err != nil {
		t.Fatalf("encrypt by id with an alias policy: %v", err)
	}
	if err := ask("kms:Decrypt", k.ID, map[string]string{"namespace": "pay"}); err != nil {
		t.Fatalf("decrypt own namespace: %v", err)
	}
	err = ask("kms:Decrypt", k.ID, map[string]string{"namespace": "ops"})
	var d *Denied
	if !errors.As(err, &d) || !errors.Is(err, auth.ErrForbidden) || d.Decision.Reason != policy.ReasonDefaultDeny {
		t.Fatalf("decrypt other namespace: %v", err)
	}
	// A key policy narrows; deleting the role denies everything.
	if _, err := e.iam.PutKeyPolicy(ctx, k.ID, "statements:\n  - effect: allow\n    actions: [kms:Decrypt]\n    resources: [\"*\"]\n"); err != nil {
		t.Fatal(err)
	}
	if err := ask("kms:Encrypt", "alias/app", nil); !errors.Is(err, auth.ErrForbidden) || !strings.Contains(err.Error(), "key policy") {
		t.Fatalf("key policy without encrypt: %v", err)
	}
	if _, err := e.iam.PutKeyPolicy(ctx, k.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := ask("kms:Encrypt", "alias/app", nil); err != nil {
		t.Fatalf("after removing the key policy: %v", err)
	}
	// Self-service works without any policy; root bypasses.
	none := &auth.Principal{Kind: auth.KindToken, ID: "acc_none"}
	q := policy.Request{Action: "token:LookupSelf"}
	if err := e.iam.Authorize(ctx, none, &q); err != nil {
		t.Fatalf("self-service: %v", err)
	}
	q = policy.Request{Action: "sys:Seal"}
	if err := e.iam.Authorize(ctx, none, &q); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("no policies: %v", err)
	}
	if err := e.iam.Authorize(ctx, &auth.Principal{Root: true, Kind: auth.KindRoot}, &q); err != nil {
		t.Fatalf("root: %v", err)
	}
	// Changes survive a reload (a restart or an unseal).
	n := New(e.store, e.tokens, e.keys, func() time.Time { return e.now })
	if err := n.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if rs := n.ListRoles(ctx); len(rs) != 1 || rs[0].Name != "app" || len(n.ListPolicies(ctx)) != 2 {
		t.Fatalf("after reload: %+v", rs)
	}
}

func TestAccessKeys(t *testing.T) {
	e := newEnv(t)
	e.policy(t, "enc", allowEncryptApp)
	res, err := e.iam.CreateAccessKey(ctx, CreateAccessKeyRequest{Policies: []string{"enc"}, ExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("10.9.8.7")
	p, err := e.iam.AuthenticateAccessKey(res.ID, res.SecretAccessKey, src)
	if err != nil || p.Kind != auth.KindAccessKey || p.ID != res.ID {
		t.Fatalf("authenticate: %+v %v", p, err)
	}
	if err := e.iam.FlushUsage(ctx); err != nil {
		t.Fatal(err)
	}
	n := New(e.store, e.tokens, e.keys, func() time.Time { return e.now })
	if err := n.Load(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := n.GetAccessKey(ctx, res.ID)
	if got.LastUsedAt == nil || got.LastSource != "10.9.8.7" {
		t.Fatalf("last use after flush and reload: %+v", got)
	}
	if _, err := e.iam.AuthenticateAccessKey(res.ID, res.SecretAccessKey+"x", src); !errors.Is(err, auth.ErrUnauthenticated) || strings.Contains(err.Error(), res.SecretAccessKey) {
		t.Fatalf("wrong secret: %v", err)
	}
	f := false
	if _, err := e.iam.UpdateAccessKey(ctx, res.ID, UpdateAccessKeyRequest{Enabled: &f}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.iam.AuthenticateAccessKey(res.ID, res.SecretAccessKey, src); !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("disabled: %v", err)
	}
	tr := true
	e.iam.UpdateAccessKey(ctx, res.ID, UpdateAccessKeyRequest{Enabled: &tr})
	e.now = e.now.Add(2 * time.Hour)
	if _, err := e.iam.AuthenticateAccessKey(res.ID, res.SecretAccessKey, src); !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: %v", err)
	}
	if err := e.iam.DeleteAccessKey(ctx, res.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.iam.AuthenticateAccessKey(res.ID, res.SecretAccessKey, src); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("deleted: %v", err)
	}
	if _, err := e.iam.GetAccessKey(ctx, "nope"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad id: %v", err)
	}

	// A reported secret disables its key and is recognised afterwards.
	leak, _ := e.iam.CreateAccessKey(ctx, CreateAccessKeyRequest{})
	sum := sha256.Sum256([]byte(leak.SecretAccessKey))
	off, already, err := e.iam.ReportLeaked(ctx, []string{strings.ToUpper(hex.EncodeToString(sum[:])), strings.Repeat("0", 64)})
	if err != nil || len(off) != 1 || off[0] != leak.ID || already != 0 {
		t.Fatalf("report: %v %d %v", off, already, err)
	}
	if _, already, _ = e.iam.ReportLeaked(ctx, []string{hex.EncodeToString(sum[:])}); already != 1 {
		t.Fatalf("second report: already = %d", already)
	}
	if _, err := e.iam.AuthenticateAccessKey(leak.ID, leak.SecretAccessKey, src); !errors.Is(err, auth.ErrLeaked) || !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("leaked key: %v", err)
	}
}

// benchIAM stores 1,000 policies and 100 roles of 10 policies each; one
// statement of each role's policies allows kms:Encrypt on its own alias.
func benchIAM(b *testing.B) (*env, []*auth.Principal) {
	e := newEnv(b)
	for i := range 1000 {
		doc := fmt.Sprintf(`statements:
  - sid: S%d
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: [alias/team-%d-*]
    conditions:
      StringEquals:
        context.namespace: ${principal.namespace}
  - effect: deny
    actions: [key:ScheduleDeletion]
    resources: ["*"]
`, i, i)
		e.policy(b, fmt.Sprintf("p%04d", i), doc)
	}
	var ps []*auth.Principal
	for r := range 100 {
		var names []string
		for j := range 10 {
			names = append(names, fmt.Sprintf("p%04d", r*10+j))
		}
		if _, err := e.iam.CreateRole(ctx, Role{Name: fmt.Sprintf("role-%d", r), Policies: names}); err != nil {
			b.Fatal(err)
		}
		ps = append(ps, &auth.Principal{Kind: auth.KindRole, Role: fmt.Sprintf("role-%d", r), Namespace: "ns", ID: "acc"})
	}
	return e, ps
}

// BenchmarkAuthorize1000Policies is the authorization cost of one request
// by a role with 10 policies, with 1,000 policies stored across 100 roles.
// The resource is an alias that is not a key, so key lookup is included
// but finds nothing.
func BenchmarkAuthorize1000Policies(b *testing.B) {
	e, ps := benchIAM(b)
	ec := map[string]string{"namespace": "ns"}
	now := e.now
	res := make([]string, 100)
	for r := range res {
		res[r] = fmt.Sprintf("alias/team-%d-x", r*10+9)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		p := ps[i%100]
		q := policy.Request{Action: "kms:Encrypt", Resource: res[i%100], Context: ec, Time: now}
		if err := e.iam.Authorize(ctx, p, &q); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
