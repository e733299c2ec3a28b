package kube_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/kube"
)

// TestVaultKubernetesLoginE2E: the stock Vault client logs in at
// auth/kubernetes/login with a service-account token minted by a real
// kube-apiserver (TokenRequest), against the real coffer binary, with the
// cluster registered in jwks mode (OIDC discovery) and in tokenreview
// mode, and uses the token it got for a KV read and lookup-self. Another
// namespace's token, an unknown role, a token for another audience, a
// malformed one and a missing jwt are refused as Vault refuses them.
func TestVaultKubernetesLoginE2E(t *testing.T) {
	kube.RequireE2E(t)
	etcd := kube.StartEtcd(t)
	api := kube.StartAPIServer(t, etcd, kube.APIServerOptions{ExtraArgs: []string{"--external-hostname=127.0.0.1"}})
	coffer := kube.StartCoffer(t)
	ctx := context.Background()
	root := coffer.Client()
	ca := api.CACertPEM()

	const audience = "coffer"
	sa := api.CreateServiceAccount(t, "team-a", "api")
	api.CreateServiceAccount(t, "team-b", "api")
	if _, err := root.PutPolicy(ctx, "team-read", client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [secret:Read]\n    resources: [\"secret/team/*\"]\n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.RegisterCluster(ctx, client.Cluster{Name: "jwks-cluster", Mode: "jwks", DiscoveryURL: api.URL, CACert: string(ca), ReviewerToken: kube.AdminToken}); err != nil {
		t.Fatalf("registering the jwks cluster: %v", err)
	}
	if _, err := root.RegisterCluster(ctx, client.Cluster{Name: "tr-cluster", Mode: "tokenreview", APIServer: api.URL, CACert: string(ca), ReviewerToken: kube.AdminToken}); err != nil {
		t.Fatalf("registering the tokenreview cluster: %v", err)
	}
	// Each role trusts one cluster: a Vault login names none, and both
	// clusters have the apiserver's issuer.
	for role, cluster := range map[string]string{"vault-jwks": "jwks-cluster", "vault-tr": "tr-cluster"} {
		if _, err := root.CreateRole(ctx, client.Role{Name: role, Policies: []string{"team-read"},
			Kubernetes: []client.KubernetesTrust{{Cluster: cluster, Namespace: "team-a", ServiceAccount: "api", Audience: audience}}}); err != nil {
			t.Fatalf("CreateRole %s: %v", role, err)
		}
	}

	newVault := func(token string) *vault.Client {
		t.Helper()
		cfg := vault.DefaultConfig()
		cfg.Address = coffer.Addr
		cfg.MaxRetries = 0
		c, err := vault.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(token)
		return c
	}
	if _, err := newVault(coffer.Token).KVv2("secret").Put(ctx, "team/db", map[string]any{"password": "s3cret"}); err != nil {
		t.Fatalf("KV write as root: %v", err)
	}

	tokA := api.ServiceAccountToken(t, "team-a", "api", audience, 600)
	for _, role := range []string{"vault-jwks", "vault-tr"} {
		c := newVault("")
		sec, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": role, "jwt": tokA})
		if err != nil {
			t.Fatalf("%s: login: %v", role, err)
		}
		a := sec.Auth
		if a == nil || a.ClientToken == "" || a.Accessor == "" || !slices.Equal(a.Policies, []string{"team-read"}) || a.LeaseDuration <= 0 {
			t.Fatalf("%s: auth block %+v", role, a)
		}
		want := map[string]string{"role": role, "service_account_name": "api", "service_account_namespace": "team-a", "service_account_uid": string(sa.UID)}
		for k, v := range want {
			if a.Metadata[k] != v {
				t.Errorf("%s: metadata %s = %q, want %q", role, k, a.Metadata[k], v)
			}
		}
		c.SetToken(a.ClientToken)
		kv, err := c.KVv2("secret").Get(ctx, "team/db")
		if err != nil || kv.Data["password"] != "s3cret" {
			t.Fatalf("%s: KV read with the login's token: %v %v", role, kv, err)
		}
		self, err := c.Auth().Token().LookupSelf()
		if err != nil {
			t.Fatalf("%s: lookup-self: %v", role, err)
		}
		if acc, _ := self.TokenAccessor(); acc != a.Accessor {
			t.Errorf("%s: lookup-self accessor %q, want %q", role, acc, a.Accessor)
		}
		// The token reads only what the role's policy allows.
		if _, err := c.KVv2("secret").Get(ctx, "other/x"); vaultStatusOf(err) != http.StatusForbidden {
			t.Errorf("%s: a read outside the policy: %v", role, err)
		}
	}

	refuse := func(body map[string]any) (int, string) {
		t.Helper()
		sec, err := newVault("").Logical().Write("auth/kubernetes/login", body)
		if err == nil {
			t.Fatalf("login %v succeeded: %+v", body["role"], sec.Auth)
		}
		var re *vault.ResponseError
		if !errors.As(err, &re) {
			t.Fatalf("login %v: %v, want a Vault response error", body["role"], err)
		}
		msg := strings.Join(re.Errors, "; ")
		if jwt, _ := body["jwt"].(string); len(jwt) > 40 && strings.Contains(msg, jwt[len(jwt)-40:]) {
			t.Fatalf("the error repeats the token: %s", msg)
		}
		return re.StatusCode, msg
	}
	tokB := api.ServiceAccountToken(t, "team-b", "api", audience, 600)
	for _, role := range []string{"vault-jwks", "vault-tr"} {
		st, untrusted := refuse(map[string]any{"role": role, "jwt": tokB})
		if st != http.StatusForbidden || !strings.Contains(untrusted, "team-b/api") {
			t.Errorf("%s: team-b's token: %d %s", role, st, untrusted)
		}
		if st, msg := refuse(map[string]any{"role": role, "jwt": api.ServiceAccountToken(t, "team-a", "api", "vault", 600)}); st != http.StatusForbidden {
			t.Errorf("%s: a token for another audience: %d %s", role, st, msg)
		}
	}
	// A role that does not exist: the answer of one that does not trust
	// the service account (the cluster is the one whose issuer the token
	// names: two here, so the unknown role hears it trusts none).
	st, unknown := refuse(map[string]any{"role": "nope", "jwt": tokA})
	if st != http.StatusForbidden || !strings.Contains(unknown, `"nope" does not exist or`) {
		t.Errorf("unknown role: %d %s", st, unknown)
	}
	if st, msg := refuse(map[string]any{"role": "vault-jwks", "jwt": "not.a.jwt"}); st != http.StatusForbidden {
		t.Errorf("malformed token: %d %s", st, msg)
	}
	if st, msg := refuse(map[string]any{"role": "vault-jwks"}); st != http.StatusBadRequest || !strings.Contains(msg, "jwt") {
		t.Errorf("missing jwt: %d %s", st, msg)
	}
}

// vaultStatusOf is the HTTP status of a Vault client's error (0 for none).
func vaultStatusOf(err error) int {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}
