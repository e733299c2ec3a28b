package iam

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/policy"
	"github.com/cofferkms/coffer/internal/storage"
)

// replicaOf returns a second identity service (with its own token store
// and key service) over e's store, loaded, as another replica.
func replicaOf(t *testing.T, e *env) (*Service, *auth.Tokens) {
	t.Helper()
	clock := func() time.Time { return e.now }
	tokens := auth.NewTokens(e.store, clock)
	ks := keys.New(e.store, keys.WithClock(clock))
	if err := ks.Load(ctx); err != nil {
		t.Fatal(err)
	}
	s := New(e.store, tokens, ks, clock)
	if err := s.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	return s, tokens
}

// TestRefreshRevocationMarkReachesUnseenTokens: a principal revoked on A
// also loses, on B, a token B issued that A did not know when it revoked;
// tokens issued after the revocation are left alone.
func TestRefreshRevocationMarkReachesUnseenTokens(t *testing.T) {
	e := newEnv(t)
	e.policy(t, "enc", allowEncryptApp)
	if _, err := e.iam.CreateRole(ctx, Role{Name: "ci", Policies: []string{"enc"}, TrustPrincipals: []string{"access-key:*"}}); err != nil {
		t.Fatal(err)
	}
	b, bTokens := replicaOf(t, e)
	ak := &auth.Principal{Kind: auth.KindAccessKey, ID: "cfak_A"}
	before, _, err := b.AssumeRole(ctx, ak, AssumeRoleRequest{Role: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(time.Second)
	if _, err := e.iam.RevokePrincipal(ctx, "access-key:cfak_A"); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(time.Second)
	after, _, err := b.AssumeRole(ctx, ak, AssumeRoleRequest{Role: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bTokens.Lookup(before, netip.Addr{}); err != nil {
		t.Fatalf("setup: B's token before the mark arrives: %v", err)
	}
	if err := b.Refresh(ctx, storage.Change{Path: revokedPath + escape("access-key:cfak_A")}); err != nil {
		t.Fatal(err)
	}
	if _, err := bTokens.Lookup(before, netip.Addr{}); err == nil {
		t.Fatal("a token issued before its principal's revocation survives it on another replica")
	}
	if _, err := bTokens.Lookup(after, netip.Addr{}); err != nil {
		t.Fatalf("a token issued after the revocation: %v", err)
	}
	if _, ok := b.state.Load().revokedAt("access-key:cfak_A"); !ok {
		t.Fatal("B does not know the revocation mark")
	}
}

// TestRefreshPolicyRecompilesSets: a policy changed on A changes what B's
// cached roles, access keys and tokens may do (the compiled sets and the
// token set cache follow), and a policy deleted on A is gone on B.
func TestRefreshPolicyRecompilesSets(t *testing.T) {
	e := newEnv(t)
	e.policy(t, "enc", allowEncryptApp)
	if _, err := e.keys.Create(ctx, keys.CreateRequest{Alias: "alias/app"}); err != nil {
		t.Fatal(err)
	}
	b, bTokens := replicaOf(t, e)
	tok, _, err := bTokens.Issue(ctx, auth.Spec{DisplayName: "x", TTL: time.Hour, Policies: []string{"enc"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := bTokens.Lookup(tok, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	authorize := func() error {
		q := policy.Request{Action: "kms:Encrypt", Resource: "alias/app", Time: e.now, SourceIP: netip.MustParseAddr("127.0.0.1")}
		return b.Authorize(ctx, &p, &q)
	}
	if err := authorize(); err != nil {
		t.Fatalf("setup: %v", err)
	}
	e.policy(t, "enc", `statements:
  - effect: allow
    actions: [kms:Decrypt]
    resources: [alias/app]
`)
	if err := b.Refresh(ctx, storage.Change{Path: policyPath + "enc"}); err != nil {
		t.Fatal(err)
	}
	if err := authorize(); err == nil {
		t.Fatal("B still allows what a policy changed on A no longer allows")
	}
	if err := e.iam.DeletePolicy(ctx, "enc"); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, storage.Change{Path: policyPath + "enc"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetPolicy(ctx, "enc"); err == nil {
		t.Fatal("a policy deleted on A is still on B")
	}
}
