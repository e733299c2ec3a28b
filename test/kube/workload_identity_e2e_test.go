package kube_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/kube"
)

// ownNamespacePolicy lets a workload use the app keys only with an
// encryption context naming its own namespace.
const ownNamespacePolicy = `version: 1
description: Workloads use the app keys for data of their own namespace
statements:
  - sid: UseAppKeysInOwnNamespace
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: ["alias/*"]
    conditions:
      StringEquals:
        context.namespace: ${principal.namespace}
`

// TestWorkloadIdentityE2E runs Kubernetes workload identity end to end:
// a real kube-apiserver mints service-account tokens with the TokenRequest
// API, the real coffer binary exchanges them for Coffer tokens (a cluster
// registered in jwks mode through OIDC discovery, and one in tokenreview
// mode), and the public Go client encrypts with them. It shows what is
// refused (another namespace, another audience, a deleted service account
// in tokenreview mode), that the client logs in again by itself, and how
// fast RevokePrincipal takes effect.
func TestWorkloadIdentityE2E(t *testing.T) {
	kube.RequireE2E(t)
	etcd := kube.StartEtcd(t)
	// --external-hostname makes discovery's jwks_uri the loopback address
	// the apiserver serves on (see TestK8sAuthEndToEnd).
	api := kube.StartAPIServer(t, etcd, kube.APIServerOptions{ExtraArgs: []string{"--external-hostname=127.0.0.1"}})
	coffer := kube.StartCoffer(t)
	start := time.Now()
	ctx := context.Background()

	root := coffer.Client()
	anon, err := client.New(coffer.Addr) // logins need no credential
	if err != nil {
		t.Fatal(err)
	}
	ca := api.CACertPEM()

	const (
		audience = "coffer"
		jwksName = "jwks-cluster"
		trName   = "tr-cluster"
		alias    = "alias/app"
	)
	api.CreateServiceAccount(t, "team-a", "api")
	api.CreateServiceAccount(t, "team-b", "api")
	mint := func(ns, aud string) string {
		t.Helper()
		return api.ServiceAccountToken(t, ns, "api", aud, 600)
	}

	// Setup as root: a key, the policy, both clusters, a role per cluster.
	coffer.CreateKey(alias)
	if _, err := root.PutPolicy(ctx, "own-namespace", client.PutPolicyRequest{Document: ownNamespacePolicy}); err != nil {
		t.Fatalf("PutPolicy: %v", err)
	}
	jc, err := root.RegisterCluster(ctx, client.Cluster{Name: jwksName, Mode: "jwks", DiscoveryURL: api.URL, CACert: string(ca), ReviewerToken: kube.AdminToken})
	if err != nil {
		t.Fatalf("registering %s by discovery: %v", jwksName, err)
	}
	if jc.Issuer != "https://kubernetes.default.svc" || jc.JWKS == "" || jc.ReviewerToken != "" {
		t.Errorf("registered %s: issuer %q, jwks %d bytes, reviewer token returned: %t", jwksName, jc.Issuer, len(jc.JWKS), jc.ReviewerToken != "")
	}
	if _, err := root.RegisterCluster(ctx, client.Cluster{Name: trName, Mode: "tokenreview", APIServer: api.URL, CACert: string(ca), ReviewerToken: kube.AdminToken}); err != nil {
		t.Fatalf("registering %s: %v", trName, err)
	}
	for role, cluster := range map[string]string{"app-jwks": jwksName, "app-tr": trName} {
		_, err := root.CreateRole(ctx, client.Role{Name: role, Policies: []string{"own-namespace"},
			Kubernetes: []client.KubernetesTrust{{Cluster: cluster, Namespace: "team-a", ServiceAccount: "api", Audience: audience}}})
		if err != nil {
			t.Fatalf("CreateRole %s: %v", role, err)
		}
	}
	t.Logf("setup (service accounts, key, policy, clusters, roles) took %s", time.Since(start).Round(time.Millisecond))

	// modes are the two ways in. The tokenreview login names its cluster
	// (both clusters have the same issuer); the jwks one does not need to: its
	// role trusts one cluster only.
	type mode struct{ name, role, cluster string }
	modes := []mode{{"jwks", "app-jwks", ""}, {"tokenreview", "app-tr", trName}}
	login := func(m mode, jwt string) (*client.CreateTokenResponse, error) {
		return anon.KubernetesLogin(ctx, client.KubernetesLoginRequest{Role: m.role, JWT: jwt, Cluster: m.cluster})
	}
	clusterOf := func(m mode) string {
		if m.cluster == "" {
			return jwksName
		}
		return m.cluster
	}

	tokA := mint("team-a", audience)
	trCoffer := "" // the Coffer token of the tokenreview login, used in the last step
	if !t.Run("login and encrypt", func(t *testing.T) {
		for _, m := range modes {
			resp, err := login(m, tokA)
			if err != nil {
				t.Fatalf("%s: KubernetesLogin as team-a/api: %v", m.name, err)
			}
			cluster := clusterOf(m)
			ti := resp.TokenInfo
			if ti.Namespace != "team-a" || ti.ServiceAccount != "api" || ti.Role != m.role || ti.Cluster != cluster ||
				ti.Subject != "kubernetes:"+cluster+"/team-a/api" || ti.Kind != "role" {
				t.Errorf("%s: token info %+v: want role %s, subject kubernetes:%s/team-a/api", m.name, ti, m.role, cluster)
			}
			if m.name == "tokenreview" {
				trCoffer = resp.Token
			}
			cl := tokenClient(t, coffer.Addr, resp.Token)
			ct := encrypt(t, cl, alias, "team-a")
			pt, err := cl.Decrypt(ctx, client.DecryptRequest{Ciphertext: ct, Context: map[string]string{"namespace": "team-a"}})
			if err != nil {
				t.Fatalf("%s: Decrypt: %v", m.name, err)
			}
			if string(pt.Plaintext) != "workload secret" {
				t.Errorf("%s: Decrypt gave %q", m.name, pt.Plaintext)
			}
			_, err = cl.Encrypt(ctx, client.EncryptRequest{KeyID: alias, Plaintext: []byte("x"), Context: map[string]string{"namespace": "team-b"}})
			wantAPIError(t, err, http.StatusForbidden, "", "kms:Encrypt", alias)
		}
	}) {
		return
	}

	if !t.Run("refusals", func(t *testing.T) {
		tokB := mint("team-b", audience)
		tokVault := mint("team-a", "vault")
		for _, m := range modes {
			_, err := login(m, tokB)
			wantAPIError(t, err, http.StatusForbidden, tokB, "does not trust service account team-b/api")
			_, err = login(m, tokVault)
			wantAPIError(t, err, http.StatusUnauthorized, tokVault, "audience")
			t.Logf("%s, audience vault: %v", m.name, err)
		}

		// Delete team-a/api: TokenReview refuses its token once the
		// apiserver's cache of the last success (about 10 s) expires.
		api.DeleteServiceAccount(t, "team-a", "api")
		deleted := time.Now()
		var err error
		for time.Since(deleted) < kube.Patience() {
			if _, err = login(modes[1], tokA); err != nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		wantAPIError(t, err, http.StatusUnauthorized, tokA, "the apiserver rejected the token", "not found")
		t.Logf("tokenreview refused the deleted service account's token %s after the deletion: %v", time.Since(deleted).Round(time.Millisecond), err)
		// The jwks mode cannot see the deletion (docs/kubernetes.md §8).
		if _, err := login(modes[0], tokA); err != nil {
			t.Errorf("jwks: the deleted service account's token was refused (%v); the documented limitation says it is accepted until it expires", err)
		}
	}) {
		return
	}

	// The service account is back; from here on its tokens are fresh.
	api.CreateServiceAccount(t, "team-a", "api")
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken := func(jwt string) {
		t.Helper()
		if err := os.WriteFile(tokenFile, []byte(jwt+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	preRevoke := mint("team-a", audience)

	if !t.Run("auto refresh", func(t *testing.T) {
		writeToken(preRevoke)
		cl, err := client.New(coffer.Addr, client.WithKubernetesLogin("app-jwks", tokenFile, jwksName))
		if err != nil {
			t.Fatal(err)
		}
		encrypt(t, cl, alias, "team-a")

		// Revoke the session's token: the next call gets 401, logs in
		// again with the file and succeeds.
		n, err := root.RevokeRoleTokens(ctx, "app-jwks")
		if err != nil || n < 1 {
			t.Fatalf("RevokeRoleTokens: %d, %v", n, err)
		}
		encrypt(t, cl, alias, "team-a")
		t.Logf("revoked %d tokens of app-jwks; the client logged in again and encrypted", n)

		// The file is read at each login: with junk in it, the login
		// after the next revocation fails, and with a token again it
		// works.
		writeToken("not-a-service-account-token")
		if _, err := root.RevokeRoleTokens(ctx, "app-jwks"); err != nil {
			t.Fatal(err)
		}
		_, err = cl.Encrypt(ctx, client.EncryptRequest{KeyID: alias, Plaintext: []byte("x"), Context: map[string]string{"namespace": "team-a"}})
		wantAPIError(t, err, http.StatusUnauthorized, "", "malformed")
		writeToken(preRevoke)
		encrypt(t, cl, alias, "team-a")
	}) {
		return
	}

	if !t.Run("cli", func(t *testing.T) {
		// The real binary, as a pod would run it: no Coffer credential in
		// the environment, only the projected token file.
		writeToken(preRevoke)
		// Standard output only: warnings and notes go to standard error.
		run := func(env []string, stdin string, args ...string) string {
			t.Helper()
			cmd := exec.Command(kube.CofferBin(t), args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "COFFER_ADDR=" + coffer.Addr}, env...)
			cmd.Stdin = strings.NewReader(stdin)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("coffer %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
			}
			return string(out)
		}
		out := run(nil, "", "auth", "kubernetes", "--role", "app-jwks", "--token-file", tokenFile, "--cluster", jwksName, "-o", "json")
		var ti client.CreateTokenResponse
		if err := json.Unmarshal([]byte(out), &ti); err != nil || ti.Namespace != "team-a" || ti.Role != "app-jwks" || !strings.HasPrefix(ti.Token, "cft_") {
			t.Fatalf("coffer auth kubernetes -o json: %v\n%s", err, out)
		}
		// The plaintext on standard input, not on the command line.
		out = run([]string{"COFFER_ROLE=app-jwks", "COFFER_TOKEN_FILE=" + tokenFile, "COFFER_CLUSTER=" + jwksName},
			"from the cli", "kms", "encrypt", "--key", alias, "--context", "namespace=team-a")
		ct := strings.TrimSpace(out)
		out = run([]string{"COFFER_ROLE=app-jwks", "COFFER_TOKEN_FILE=" + tokenFile, "COFFER_CLUSTER=" + jwksName},
			"", "kms", "decrypt", "--context", "namespace=team-a", ct)
		if strings.TrimSpace(out) != "from the cli" {
			t.Fatalf("decrypt through COFFER_ROLE + COFFER_TOKEN_FILE: %q", out)
		}
	}) {
		return
	}

	t.Run("revocation", func(t *testing.T) {
		resp, err := login(modes[0], preRevoke)
		if err != nil {
			t.Fatal(err)
		}
		cl := tokenClient(t, coffer.Addr, resp.Token)
		encrypt(t, cl, alias, "team-a")

		subject := "kubernetes:" + jwksName + "/team-a/api"
		n, err := root.RevokePrincipal(ctx, subject)
		revoked := time.Now()
		if err != nil {
			t.Fatalf("RevokePrincipal: %v", err)
		}
		_, err = cl.Encrypt(ctx, client.EncryptRequest{KeyID: alias, Plaintext: []byte("x"), Context: map[string]string{"namespace": "team-a"}})
		latency := time.Since(revoked)
		wantAPIError(t, err, http.StatusUnauthorized, "")
		t.Logf("RevokePrincipal(%s) revoked %d tokens; the very next request with one was refused, %s after the revoke returned", subject, n, latency.Round(time.Microsecond))
		// The principal is the service account of one cluster: the same
		// account's token obtained through tr-cluster is another one's.
		encrypt(t, tokenClient(t, coffer.Addr, trCoffer), alias, "team-a")

		// A service-account token issued before the revocation cannot be
		// exchanged again.
		_, err = login(modes[0], preRevoke)
		wantAPIError(t, err, http.StatusUnauthorized, preRevoke, "revoked")

		// One minted after it can. iat has whole seconds and a token
		// issued in the second of the revocation counts as before it, so
		// mint in the next second.
		wait := time.Until(revoked.Truncate(time.Second).Add(time.Second))
		time.Sleep(wait)
		post := mint("team-a", audience)
		resp, err = login(modes[0], post)
		if err != nil {
			t.Fatalf("login with a token minted after the revocation: %v", err)
		}
		encrypt(t, tokenClient(t, coffer.Addr, resp.Token), alias, "team-a")
		t.Logf("a token minted after the revocation (waited %s for the next second) logs in", wait.Round(time.Millisecond))
	})

	// Logged, not asserted: a wall-clock budget fails right tests on a
	// loaded CI machine; the waits above are condition polls.
	t.Logf("took %s after the apiserver and Coffer were up", time.Since(start).Round(time.Millisecond))
}

// tokenClient returns a client that sends token.
func tokenClient(t *testing.T, addr, token string) *client.Client {
	t.Helper()
	cl, err := client.New(addr, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// encrypt encrypts with the encryption context namespace=ns and returns
// the ciphertext; it fails t on an error.
func encrypt(t *testing.T, cl *client.Client, key, ns string) []byte {
	t.Helper()
	resp, err := cl.Encrypt(context.Background(), client.EncryptRequest{KeyID: key, Plaintext: []byte("workload secret"), Context: map[string]string{"namespace": ns}})
	if err != nil {
		t.Fatalf("Encrypt with namespace %s: %v", ns, err)
	}
	return resp.Ciphertext
}

// wantAPIError checks that err is an API error with status whose message
// says each of want and holds no part of secret (a JWT) worth stealing.
func wantAPIError(t *testing.T, err error, status int, secret string, want ...string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v, want an API error with status %d", err, status)
	}
	if ae.StatusCode != status {
		t.Fatalf("status %d (%v), want %d", ae.StatusCode, err, status)
	}
	for _, w := range want {
		if !strings.Contains(ae.Message, w) {
			t.Errorf("error %q does not say %q", ae.Message, w)
		}
	}
	if secret == "" {
		return
	}
	for _, seg := range append(strings.Split(secret, "."), secret) {
		if len(seg) >= 16 && strings.Contains(err.Error(), seg) {
			t.Errorf("error %q contains the token or a segment of it", err)
		}
	}
}
