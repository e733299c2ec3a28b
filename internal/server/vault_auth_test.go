package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	vault "github.com/hashicorp/vault/api"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// newLoginEnv is newIAMEnvWith with the server options o (the test's
// limiter and Vault mounts) and the signing keys of jwtFor.
func newLoginEnv(t *testing.T, o server.Options) *iamEnv {
	t.Helper()
	e := newIAMEnvWith(t, func(opts *server.Options) { opts.AuthLimit, opts.Vault = o.AuthLimit, o.Vault })
	e.jwtKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.other, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return e
}

// vaultClient is the stock Vault client against e, with no token (none
// from the environment either).
func (e *iamEnv) vaultClient() *vault.Client {
	e.t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = e.url
	cfg.MaxRetries = 0
	c, err := vault.NewClient(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	c.ClearToken()
	return c
}

// podRole sets up the "kind" cluster, a secret secret/team/db, and a role
// "pod" trusting team-a/api with a policy reading secret/team/*.
func (e *iamEnv) podRole() {
	e.t.Helper()
	e.must("PUT", "/v1/policies/team-read", e.root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [secret:Read]\n    resources: [\"secret/team/*\"]\n"}, nil)
	e.must("POST", "/v1/roles", e.root, client.Role{Name: "pod", Policies: []string{"team-read"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	e.registerKind()
	root := e.vaultClient()
	root.SetToken(e.root)
	if _, err := root.KVv2("secret").Put(context.Background(), "team/db", map[string]any{"password": "s3cret"}); err != nil {
		e.t.Fatal(err)
	}
}

// vaultErr is the status and the errors of a Vault client's failure.
func vaultErr(err error) (int, string) {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode, strings.Join(re.Errors, "; ")
	}
	return 0, ""
}

// TestVaultKubernetesLogin: the stock Vault client logs in with a
// service-account token at auth/kubernetes/login, reads Vault's auth
// block, and uses the token for a KV read and lookup-self. Coffer's own
// login on the same path keeps its answer, and the login is audited
// under door vault.
func TestVaultKubernetesLogin(t *testing.T) {
	e := newLoginEnv(t, server.Options{AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000})})
	e.podRole()
	c := e.vaultClient()
	sec, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": "pod", "jwt": e.jwtFor(e.jwtKey, nil)})
	if err != nil {
		t.Fatal(err)
	}
	a := sec.Auth
	if a == nil || !strings.HasPrefix(a.ClientToken, "cft_") && a.ClientToken == "" || a.Accessor == "" || a.Renewable ||
		!slices.Equal(a.Policies, []string{"team-read"}) || !slices.Equal(a.TokenPolicies, []string{"team-read"}) ||
		a.LeaseDuration <= 0 || a.LeaseDuration > 3600*24 {
		t.Fatalf("auth block %+v", a)
	}
	wantMeta := map[string]string{"role": "pod", "service_account_name": "api", "service_account_namespace": "team-a", "service_account_uid": "u-1"}
	for k, v := range wantMeta {
		if a.Metadata[k] != v {
			t.Errorf("metadata %s = %q, want %q (%v)", k, a.Metadata[k], v, a.Metadata)
		}
	}
	if tok, err := sec.TokenID(); err != nil || tok != a.ClientToken {
		t.Fatalf("the client's TokenID: %q %v", tok, err)
	}
	c.SetToken(a.ClientToken)
	kv, err := c.KVv2("secret").Get(context.Background(), "team/db")
	if err != nil || kv.Data["password"] != "s3cret" {
		t.Fatalf("KV read with the login's token: %v %v", kv, err)
	}
	self, err := c.Auth().Token().LookupSelf()
	if err != nil {
		t.Fatal(err)
	}
	if acc, _ := self.TokenAccessor(); acc != a.Accessor {
		t.Fatalf("lookup-self accessor %q, want %q", acc, a.Accessor)
	}
	rec, ok := e.rec.last("auth:AssumeRole")
	if !ok || rec.Door != "vault" || rec.Resource != "role/pod" || rec.Outcome != "ok" {
		t.Fatalf("record of the login: %+v", rec)
	}
	if b, _ := json.Marshal(rec); strings.Contains(string(b), a.ClientToken) {
		t.Fatal("the record holds the issued token")
	}

	// Coffer's own client on the same path: Coffer's answer.
	var ct client.CreateTokenResponse
	e.must("POST", "/v1/auth/kubernetes/login", "", client.KubernetesLoginRequest{Role: "pod", JWT: e.jwtFor(e.jwtKey, nil)}, &ct)
	if ct.Token == "" || ct.Role != "pod" {
		t.Fatalf("Coffer's login answer: %+v", ct)
	}
	if rec, _ := e.rec.last("auth:AssumeRole"); rec.Door == "vault" {
		t.Fatalf("Coffer's login recorded under door vault: %+v", rec)
	}
}

// TestVaultKubernetesLoginRefusals: an untrusted service account, a role
// that does not exist (the same answer), a bad or forged token: 403 in
// Vault's error shape; a missing jwt or role: 400. No token is issued.
func TestVaultKubernetesLoginRefusals(t *testing.T) {
	e := newLoginEnv(t, server.Options{AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000})})
	e.podRole()
	c := e.vaultClient()
	login := func(body map[string]any) (int, string) {
		sec, err := c.Logical().Write("auth/kubernetes/login", body)
		if err == nil {
			t.Fatalf("login %v succeeded: %+v", body["role"], sec.Auth)
		}
		return vaultErr(err)
	}
	teamB := e.jwtFor(e.jwtKey, func(c *jwt.Claims, p map[string]any) {
		c.Subject = "system:serviceaccount:team-b:api"
		p["kubernetes.io"] = map[string]any{"namespace": "team-b", "serviceaccount": map[string]string{"name": "api", "uid": "u-2"}}
	})
	st, untrusted := login(map[string]any{"role": "pod", "jwt": teamB})
	if st != http.StatusForbidden || !strings.Contains(untrusted, "team-b/api") {
		t.Fatalf("untrusted service account: %d %s", st, untrusted)
	}
	st, unknown := login(map[string]any{"role": "nope", "jwt": teamB})
	if st != http.StatusForbidden || strings.ReplaceAll(unknown, `"nope"`, `"pod"`) != untrusted {
		t.Fatalf("unknown role: %d %q; untrusted: %q", st, unknown, untrusted)
	}
	for name, jwt := range map[string]string{
		"malformed":        "not.a.jwt",
		"forged signature": e.jwtFor(e.other, nil),
		"expired":          e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) { c.Expiry = jwt.NewNumericDate(e.now().Add(-time.Minute)) }),
	} {
		if st, msg := login(map[string]any{"role": "pod", "jwt": jwt}); st != http.StatusForbidden || msg == "" {
			t.Errorf("%s token: %d %q", name, st, msg)
		}
	}
	if st, msg := login(map[string]any{"role": "pod"}); st != http.StatusBadRequest || !strings.Contains(msg, "jwt") {
		t.Errorf("missing jwt: %d %q", st, msg)
	}
	if st, msg := login(map[string]any{"jwt": e.jwtFor(e.jwtKey, nil)}); st != http.StatusBadRequest || !strings.Contains(msg, "role") {
		t.Errorf("missing role: %d %q", st, msg)
	}
	if st, _ := login(map[string]any{"role": "pod", "jwt": e.jwtFor(e.jwtKey, nil), "extra": 1}); st != http.StatusBadRequest {
		t.Errorf("unknown field: %d", st)
	}
	if rec, _ := e.rec.last("auth:AssumeRole"); rec.Door != "vault" || rec.Outcome != "error" {
		t.Errorf("record of a refused login: %+v", rec)
	}
}

// TestVaultKubernetesLoginBudget: Vault's login and Coffer's share the
// login failure budget of a (source, claimed principal) pair: failures
// through one door throttle the other.
func TestVaultKubernetesLoginBudget(t *testing.T) {
	e := newLoginEnv(t, server.Options{AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 3, PairRefill: time.Hour})})
	e.podRole()
	c := e.vaultClient()
	forged := e.jwtFor(e.other, nil) // claims team-a/api, as the genuine one
	for i := range 3 {
		if _, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": "pod", "jwt": forged}); err == nil {
			t.Fatalf("forged login %d succeeded", i)
		}
	}
	if _, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": "pod", "jwt": forged}); func() int { st, _ := vaultErr(err); return st }() != http.StatusTooManyRequests {
		t.Fatalf("a Vault login over the budget: %v", err)
	}
	st, _, raw := e.do("POST", "/v1/auth/kubernetes/login", nil, client.KubernetesLoginRequest{Role: "pod", JWT: e.jwtFor(e.jwtKey, nil)})
	if st != http.StatusTooManyRequests {
		t.Fatalf("Coffer's login after the Vault door's failures: %d %s, want 429", st, raw)
	}
}

// TestVaultKubernetesMount: kubernetes_mount moves Vault's login to
// /v1/auth/<mount>/login (Coffer's own route keeps the default path and
// its answer), and a mount on a Coffer route stops the server.
func TestVaultKubernetesMount(t *testing.T) {
	e := newLoginEnv(t, server.Options{Vault: server.VaultMounts{Kubernetes: "k8s/prod"},
		AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000})})
	e.podRole()
	c := e.vaultClient()
	sec, err := c.Logical().Write("auth/k8s/prod/login", map[string]any{"role": "pod", "jwt": e.jwtFor(e.jwtKey, nil)})
	if err != nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		t.Fatalf("login at the configured mount: %v %+v", err, sec)
	}
	// The default path: Coffer's login only (POST), even for a Vault
	// client; Vault's PUT there is no route.
	var ct client.CreateTokenResponse
	e.must("POST", "/v1/auth/kubernetes/login", "", client.KubernetesLoginRequest{Role: "pod", JWT: e.jwtFor(e.jwtKey, nil)}, &ct)
	if ct.Token == "" {
		t.Fatalf("the default path with another mount configured: %+v", ct)
	}
	if st, _, raw := e.do("POST", "/v1/auth/kubernetes/login", http.Header{"X-Vault-Request": {"true"}}, client.KubernetesLoginRequest{Role: "pod", JWT: e.jwtFor(e.jwtKey, nil)}); st != http.StatusOK || !strings.Contains(string(raw), `"token":"cft_`) {
		t.Fatalf("a Vault client's POST to the default path with another mount configured: %d %s", st, raw)
	}
	if _, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": "pod", "jwt": e.jwtFor(e.jwtKey, nil)}); respStatus(err) != http.StatusMethodNotAllowed {
		t.Fatalf("Vault's PUT at the default path with another mount configured: %v", err)
	}

	for _, m := range []string{"cert"} {
		s := sys.New(barrier.New(inmem.New()), nil)
		api := server.New(s, server.Options{Vault: server.VaultMounts{Kubernetes: m}})
		if err := api.Err(); err == nil || !strings.Contains(err.Error(), "collides") {
			t.Errorf("kubernetes_mount %q: %v", m, err)
		}
	}
}

// TestVaultKubernetesCluster: kubernetes_cluster names the cluster the
// Vault logins are verified by, as a Vault mount serves one cluster.
// Without it, a role trusting two registered clusters of one issuer
// cannot tell them apart (400); with it, the login is the named
// cluster's.
func TestVaultKubernetesCluster(t *testing.T) {
	for _, cluster := range []string{"", "kind2"} {
		e := newLoginEnv(t, server.Options{Vault: server.VaultMounts{KubernetesCluster: cluster},
			AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000})})
		e.registerKind()
		jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &e.jwtKey.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
		e.must("POST", "/v1/auth/kubernetes/clusters", e.root, client.Cluster{Name: "kind2", Mode: "jwks", Issuer: issuer, JWKS: string(jwks)}, nil)
		e.must("POST", "/v1/roles", e.root, client.Role{Name: "pod", Policies: []string{},
			Kubernetes: []client.KubernetesTrust{{Cluster: "kind*", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
		sec, err := e.vaultClient().Logical().Write("auth/kubernetes/login", map[string]any{"role": "pod", "jwt": e.jwtFor(e.jwtKey, nil)})
		if cluster == "" {
			if st, msg := vaultErr(err); st != http.StatusBadRequest || !strings.Contains(msg, "cluster") {
				t.Fatalf("no kubernetes_cluster, two clusters of one issuer: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("kubernetes_cluster %s: %v", cluster, err)
		}
		var ti client.TokenInfo
		e.must("GET", "/v1/auth/token/lookup-self", sec.Auth.ClientToken, nil, &ti)
		if ti.Cluster != cluster {
			t.Fatalf("the token's cluster is %q, want %q", ti.Cluster, cluster)
		}
	}
	// A value no cluster can be registered under stops the server.
	for _, c := range []string{"prod ", "\"prod\"", "-x", "a/b", strings.Repeat("c", 65)} {
		api := server.New(sys.New(barrier.New(inmem.New()), nil), server.Options{Vault: server.VaultMounts{KubernetesCluster: c}})
		if err := api.Err(); err == nil || !strings.Contains(err.Error(), "kubernetes_cluster") {
			t.Errorf("kubernetes_cluster %q: %v", c, err)
		}
	}
	if err := server.New(sys.New(barrier.New(inmem.New()), nil), server.Options{Vault: server.VaultMounts{KubernetesCluster: "kind-2.prod_a"}}).Err(); err != nil {
		t.Errorf("a valid kubernetes_cluster: %v", err)
	}
}

// TestVaultKubernetesConfig: the vault: section of the config file sets
// the Kubernetes mount and cluster.
func TestVaultKubernetesConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "coffer.yaml")
	if err := os.WriteFile(p, []byte("vault:\n  kubernetes_mount: k8s/prod\n  kubernetes_cluster: prod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := server.LoadConfig(p)
	if err != nil || cfg.Vault.Kubernetes != "k8s/prod" || cfg.Vault.KubernetesCluster != "prod" {
		t.Fatalf("config %+v %v", cfg.Vault, err)
	}
}
