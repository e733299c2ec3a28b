package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// TestChildTokenKeepsIdentity: a token made (token create) from a role
// token or a Kubernetes role token acts in the role: a deny keyed on role:,
// on ${principal.namespace} or ${principal.role} still applies to it, and
// narrowing the role later narrows the child. (The child used to come out
// as a plain token with the role's policy names and nothing else.)
func TestChildTokenKeepsIdentity(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	root := e.root
	for _, alias := range []string{"alias/app", "alias/secret-team-a", "alias/only-app"} {
		e.must("POST", "/v1/keys", root, client.CreateKeyRequest{Alias: alias}, nil)
	}
	e.must("PUT", "/v1/policies/app", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [kms:Encrypt, kms:Decrypt, token:Create]
    resources: ["*"]
  - sid: NotAsRole
    effect: deny
    actions: [kms:Decrypt]
    resources: ["*"]
    principals: ["role:app"]
  - sid: NotOwnSecrets
    effect: deny
    actions: [kms:Encrypt]
    resources: ["alias/secret-${principal.namespace}"]
  - sid: OnlyPodRole
    effect: deny
    actions: [kms:Encrypt]
    resources: ["alias/only-${principal.role}"]
`}, nil)
	e.must("PUT", "/v1/policies/extra", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [kms:GenerateRandom]
    resources: ["*"]
`}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "app", Policies: []string{"app", "extra"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	e.registerKind()

	var pod client.CreateTokenResponse
	e.must("POST", "/v1/auth/kubernetes/login", "", client.KubernetesLoginRequest{Role: "app", JWT: e.jwtFor(e.jwtKey, nil)}, &pod)
	var child client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", pod.Token, client.CreateTokenRequest{Policies: []string{"app", "extra"}}, &child)
	if child.Role != "app" || child.Namespace != "team-a" || child.ServiceAccount != "api" || child.Cluster != "kind" {
		t.Fatalf("child token %+v does not carry the pod's identity", child.TokenInfo)
	}
	var ct client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", root, client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")}, &ct)
	for _, tok := range []struct{ name, token string }{{"pod", pod.Token}, {"child", child.Token}} {
		if st, _, raw := e.do("POST", "/v1/kms/encrypt", bearer(tok.token), client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")}); st != http.StatusOK {
			t.Fatalf("%s encrypts: %d %s", tok.name, st, raw)
		}
		checks := []struct {
			what string
			path string
			body any
		}{
			{"deny on role:app", "/v1/kms/decrypt", client.DecryptRequest{Ciphertext: ct.Ciphertext}},
			{"deny on ${principal.namespace}", "/v1/kms/encrypt", client.EncryptRequest{KeyID: "alias/secret-team-a", Plaintext: []byte("x")}},
			{"deny on ${principal.role}", "/v1/kms/encrypt", client.EncryptRequest{KeyID: "alias/only-app", Plaintext: []byte("x")}},
		}
		for _, c := range checks {
			if st, _, raw := e.do("POST", c.path, bearer(tok.token), c.body); st != http.StatusForbidden || !strings.Contains(string(raw), "explicitly denied") {
				t.Errorf("%s, %s: %d %s", tok.name, c.what, st, raw)
			}
		}
	}

	// Narrowing the role reaches the child at its next request.
	random := func(tok string) int {
		st, _, _ := e.do("POST", "/v1/kms/random", bearer(tok), client.RandomRequest{Bytes: 8})
		return st
	}
	if st := random(child.Token); st != http.StatusOK {
		t.Fatalf("child before narrowing: %d", st)
	}
	e.must("PUT", "/v1/roles/app", root, client.Role{Policies: []string{"app"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	if st := random(pod.Token); st != http.StatusForbidden {
		t.Fatalf("role token after narrowing: %d", st)
	}
	if st := random(child.Token); st != http.StatusForbidden {
		t.Errorf("child token after its role was narrowed: %d, want 403", st)
	}
	// And a child cannot hand out a policy the role no longer has.
	if st, _, raw := e.do("POST", "/v1/auth/token/create", bearer(child.Token), client.CreateTokenRequest{Policies: []string{"extra"}}); st != http.StatusForbidden {
		t.Errorf("grandchild with a policy the role lost: %d %s", st, raw)
	}
}

// TestChildOfAccessKeyFollowsKey: a token made with an access key follows
// the key's current policies: removing one with PATCH, or disabling the
// key, reaches the token.
func TestChildOfAccessKeyFollowsKey(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	root := e.root
	e.must("PUT", "/v1/policies/mint", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [token:Create]\n    resources: [\"*\"]\n"}, nil)
	e.must("PUT", "/v1/policies/random", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:GenerateRandom]\n    resources: [\"*\"]\n"}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{"mint", "random"}}, &ak)
	mint := func() string {
		t.Helper()
		st, _, raw := e.do("POST", "/v1/auth/token/create", basic(ak.ID, ak.SecretAccessKey), client.CreateTokenRequest{Policies: []string{"random"}})
		if st != http.StatusCreated {
			t.Fatalf("token create with the access key: %d %s", st, raw)
		}
		var out client.CreateTokenResponse
		mustJSON(t, raw, &out)
		return out.Token
	}
	random := func(tok string) int {
		st, _, _ := e.do("POST", "/v1/kms/random", bearer(tok), client.RandomRequest{Bytes: 8})
		return st
	}
	child := mint()
	if st := random(child); st != http.StatusOK {
		t.Fatalf("child: %d", st)
	}
	e.must("PATCH", "/v1/access-keys/"+ak.ID, root, client.UpdateAccessKeyRequest{Policies: &[]string{"mint"}}, nil)
	if st := random(child); st != http.StatusForbidden {
		t.Errorf("child after its key lost the policy: %d, want 403", st)
	}
	e.must("PATCH", "/v1/access-keys/"+ak.ID, root, client.UpdateAccessKeyRequest{Policies: &[]string{"mint", "random"}}, nil)
	child = mint()
	e.must("PATCH", "/v1/access-keys/"+ak.ID, root, client.UpdateAccessKeyRequest{Enabled: new(false)}, nil)
	if st := random(child); st != http.StatusForbidden {
		t.Errorf("child after its key was disabled: %d, want 403", st)
	}
}

// registerKind registers the test cluster "kind" (jwks mode, e.jwtKey).
func (e *iamEnv) registerKind() {
	e.t.Helper()
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &e.jwtKey.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	e.must("POST", "/v1/auth/kubernetes/clusters", e.root, client.Cluster{Name: "kind", Mode: "jwks", Issuer: issuer, JWKS: string(jwks)}, nil)
}

// TestAccessKeyFailureAttributed: a failed access-key authentication is
// audited against the key id when the id is well-formed, and an id and
// secret sent the wrong way round never come back in the answer or the
// record. (Failures were audited as anonymous, and a swapped pair echoed
// 40 characters of the secret.)
func TestAccessKeyFailureAttributed(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", e.root, client.CreateAccessKeyRequest{Policies: []string{}}, &ak)
	unknownID, _ := credential.NewAccessKey()
	for _, c := range []struct{ name, id, secret string }{
		{"wrong secret", ak.ID, credential.New(credential.AccessKeySecretPrefix)},
		{"unknown id", unknownID, ak.SecretAccessKey},
	} {
		st, _, raw := e.do("GET", "/v1/keys", basic(c.id, c.secret), nil)
		r, ok := e.rec.last("key:List")
		if st != http.StatusUnauthorized || !ok || r.Principal.Kind != "access-key" || r.Principal.ID != c.id || r.Principal.Accessor != c.id {
			t.Errorf("%s: %d %s; audited as %+v, want access-key %s", c.name, st, raw, r.Principal, c.id)
		}
	}

	// Swapped: the secret in the id's place.
	st, _, raw := e.do("GET", "/v1/keys", basic(ak.SecretAccessKey, ak.ID), nil)
	if st != http.StatusUnauthorized {
		t.Fatalf("swapped pair: %d %s", st, raw)
	}
	r, _ := e.rec.last("key:List")
	recJSON, _ := json.Marshal(r)
	body := ak.SecretAccessKey[len(credential.AccessKeySecretPrefix)+1:]
	for i := 0; i+8 <= len(body); i++ {
		if piece := body[i : i+8]; strings.Contains(string(raw), piece) || strings.Contains(string(recJSON), piece) {
			t.Fatalf("the answer or the record repeats part of the secret (%q): %s / %s", piece, raw, recJSON)
		}
	}
	if r.Principal.Kind != "anonymous" {
		t.Errorf("a malformed id was attributed: %+v", r.Principal)
	}
	// The same for the access-key routes that take an id in the path.
	st, _, raw = e.do("GET", "/v1/access-keys/"+ak.SecretAccessKey, bearer(e.root), nil)
	if st/100 != 4 || strings.Contains(string(raw), body[:8]) {
		t.Errorf("GET /v1/access-keys/<secret>: %d %s", st, raw)
	}
}

// TestLoginRoleEnumeration: a login to a role that does not exist is
// answered exactly as one to a role that does not trust the caller, for
// every kind of bad token, and counts against the failure budget. (A
// missing role answered 404 and was never throttled.)
func TestLoginRoleEnumeration(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	e.must("PUT", "/v1/policies/p", e.root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:GenerateRandom]\n    resources: [\"*\"]\n"}, nil)
	e.must("POST", "/v1/roles", e.root, client.Role{Name: "pod", Policies: []string{"p"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	e.must("POST", "/v1/roles", e.root, client.Role{Name: "ops", Policies: []string{"p"}}, nil) // trusts no workload
	e.registerKind()

	other := func(c *jwt.Claims, p map[string]any) {
		c.Subject = "system:serviceaccount:team-b:api"
		p["kubernetes.io"] = map[string]any{"namespace": "team-b", "serviceaccount": map[string]string{"name": "api", "uid": "u-2"}}
	}
	tokens := map[string]string{
		"malformed":          "not.a.jwt",
		"other issuer":       e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) { c.Issuer = "https://evil.example" }),
		"forged signature":   e.jwtFor(e.other, nil),
		"expired":            e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) { c.Expiry = jwt.NewNumericDate(e.now().Add(-time.Minute)) }),
		"untrusted workload": e.jwtFor(e.jwtKey, other),
	}
	answer := func(role, jwt string) string {
		st, _, raw := e.do("POST", "/v1/auth/kubernetes/login", nil, client.KubernetesLoginRequest{Role: role, JWT: jwt})
		var eb client.ErrorBody
		json.Unmarshal(raw, &eb)
		return fmt.Sprintf("%d %s %s", st, eb.Error.Code, strings.ReplaceAll(eb.Error.Message, `"`+role+`"`, `"R"`))
	}
	for name, jwt := range tokens {
		want := answer("pod", jwt)
		if !strings.HasPrefix(want, "401 ") && !strings.HasPrefix(want, "403 ") {
			t.Errorf("%s, existing role: %s", name, want)
		}
		for _, role := range []string{"nope", "ops"} {
			if got := answer(role, jwt); got != want {
				t.Errorf("%s: role %s answers %q, an existing role that does not trust it %q", name, role, got, want)
			}
		}
	}
	// assume-role: the same for a caller allowed auth:AssumeRole on any role.
	e.must("PUT", "/v1/policies/assume", e.root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [auth:AssumeRole]\n    resources: [\"role/*\"]\n"}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", e.root, client.CreateAccessKeyRequest{Policies: []string{"assume"}}, &ak)
	assume := func(role string) string {
		st, _, raw := e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: role})
		var eb client.ErrorBody
		json.Unmarshal(raw, &eb)
		return fmt.Sprintf("%d %s %s", st, eb.Error.Code, strings.ReplaceAll(eb.Error.Message, `"`+role+`"`, `"R"`))
	}
	if a, b := assume("nope"), assume("ops"); a != b {
		t.Errorf("assume-role of a missing role: %q; of one that does not trust the caller: %q", a, b)
	}

	// Logins to a missing role count against the budget.
	e2 := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 3, Refill: time.Hour, PairBurst: 100}))
	for i := range 3 {
		if st, _, raw := e2.do("POST", "/v1/auth/kubernetes/login", nil, client.KubernetesLoginRequest{Role: fmt.Sprintf("nope-%d", i), JWT: e2.jwtFor(e2.jwtKey, nil)}); st != http.StatusUnauthorized {
			t.Fatalf("login %d to a missing role: %d %s", i+1, st, raw)
		}
	}
	if st, _, raw := e2.do("POST", "/v1/auth/kubernetes/login", nil, client.KubernetesLoginRequest{Role: "nope-x", JWT: e2.jwtFor(e2.jwtKey, nil)}); st != http.StatusTooManyRequests {
		t.Fatalf("after 3 failed logins to missing roles: %d %s, want 429", st, raw)
	}
}

// TestValidLoginBesideAttacker: a workload that logged in before keeps
// logging in from a source where an attacker runs the failure budget out,
// while the attacker's further logins, and logins claiming principals not
// seen there before, stay refused. (The whole source was refused, valid
// logins included.)
func TestValidLoginBesideAttacker(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 3, Refill: time.Hour}))
	e.must("PUT", "/v1/policies/p", e.root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:GenerateRandom]\n    resources: [\"*\"]\n"}, nil)
	e.must("POST", "/v1/roles", e.root, client.Role{Name: "pod", Policies: []string{"p"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	e.registerKind()
	login := func(jwt string) int {
		st, _, _ := e.do("POST", "/v1/auth/kubernetes/login", nil, client.KubernetesLoginRequest{Role: "pod", JWT: jwt})
		return st
	}
	if st := login(e.jwtFor(e.jwtKey, nil)); st != http.StatusOK {
		t.Fatalf("first login: %d", st)
	}
	attacks := 0
	for i := range 20 {
		forged := e.jwtFor(e.other, func(c *jwt.Claims, _ map[string]any) { c.Subject = fmt.Sprintf("system:serviceaccount:x:sa-%d", i) })
		if st := login(forged); st == http.StatusTooManyRequests {
			break
		}
		attacks++
	}
	if attacks != 3 {
		t.Fatalf("the attacker got %d failing logins from one source, want the burst of 3", attacks)
	}
	if st := login(e.jwtFor(e.jwtKey, nil)); st != http.StatusOK {
		t.Errorf("the workload's valid login beside the attacker: %d, want 200", st)
	}
	newcomer := e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) { c.Subject = "system:serviceaccount:team-a:new" })
	if st := login(newcomer); st != http.StatusTooManyRequests {
		t.Errorf("a principal never seen from the source, while it is over budget: %d, want 429", st)
	}
}

// TestRolePrincipalPattern: principals: ["role:*"] matches callers acting
// in a role, never access keys or plain tokens (whose role is empty).
func TestRolePrincipalPattern(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	root := e.root
	e.must("PUT", "/v1/policies/roles-only", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [kms:GenerateRandom, auth:AssumeRole]
    resources: ["*"]
    principals: ["role:*"]
  - effect: allow
    actions: [auth:AssumeRole]
    resources: ["*"]
`}, nil)
	e.must("PUT", "/v1/policies/deny-roles", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [key:List]
    resources: ["*"]
  - effect: deny
    actions: [key:List]
    resources: ["*"]
    principals: ["role:*"]
`}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "r", Policies: []string{"roles-only", "deny-roles"}, TrustPrincipals: []string{"access-key:*"}}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{"roles-only", "deny-roles"}}, &ak)
	var plain client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", root, client.CreateTokenRequest{Policies: []string{"roles-only", "deny-roles"}}, &plain)
	st, _, raw := e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "r"})
	var session client.CreateTokenResponse
	if st != http.StatusOK {
		t.Fatalf("assume-role: %d %s", st, raw)
	}
	mustJSON(t, raw, &session)
	for _, c := range []struct {
		name        string
		hdr         http.Header
		random, lst int
	}{
		{"access key", basic(ak.ID, ak.SecretAccessKey), 403, 200},
		{"plain token", bearer(plain.Token), 403, 200},
		{"role token", bearer(session.Token), 200, 403},
	} {
		st, _, raw := e.do("POST", "/v1/kms/random", c.hdr, client.RandomRequest{Bytes: 8})
		if st != c.random {
			t.Errorf("%s: allow on role:* gives %d %s, want %d", c.name, st, raw, c.random)
		}
		st, _, raw = e.do("GET", "/v1/keys", c.hdr, nil)
		if st != c.lst {
			t.Errorf("%s: deny on role:* gives %d %s, want %d", c.name, st, raw, c.lst)
		}
	}
}

// TestCIDRContainment: a requested network must lie inside the role's (or
// the caller's) by prefix length too: 10.0.0.0/7 starts inside 10.0.0.0/8
// but is twice as large.
func TestCIDRContainment(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	root := e.root
	e.must("PUT", "/v1/policies/assume", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [auth:AssumeRole]\n    resources: [\"*\"]\n"}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "ten", Policies: []string{"assume"}, TrustPrincipals: []string{"access-key:*"}, BoundCIDRs: []string{"10.0.0.0/8"}}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{"assume"}}, &ak)
	st, _, raw := e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "ten", BoundCIDRs: []string{"10.0.0.0/7"}})
	if st != http.StatusBadRequest || !strings.Contains(string(raw), "outside the role's networks") {
		t.Errorf("role token for 10.0.0.0/7 from a role bound to 10.0.0.0/8: %d %s", st, raw)
	}

	// Chained: a session bound to 126.0.0.0/7 (loopback lies inside)
	// assumes a role without networks and asks for 126.0.0.0/8: it gets
	// /8, not the session's wider /7.
	e.must("POST", "/v1/roles", root, client.Role{Name: "wide", Policies: []string{"assume"}, TrustPrincipals: []string{"access-key:*"}, BoundCIDRs: []string{"126.0.0.0/7"}}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "next", Policies: []string{"assume"}, TrustPrincipals: []string{"role:wide"}}, nil)
	var session, chained client.CreateTokenResponse
	st, _, raw = e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "wide"})
	if st != http.StatusOK {
		t.Fatalf("assume wide: %d %s", st, raw)
	}
	mustJSON(t, raw, &session)
	e.must("POST", "/v1/auth/assume-role", session.Token, client.AssumeRoleRequest{Role: "next", BoundCIDRs: []string{"126.0.0.0/8"}}, &chained)
	if len(chained.BoundCIDRs) != 1 || chained.BoundCIDRs[0] != "126.0.0.0/8" {
		t.Errorf("chained token bound to %v, want [126.0.0.0/8]", chained.BoundCIDRs)
	}
}

// TestBoundTokenOverUnixSocket: over a Unix socket the source address is
// unknown (the zero netip.Addr); a token bound to networks is refused
// there, and an unbound one works.
func TestBoundTokenOverUnixSocket(t *testing.T) {
	s := sys.New(barrier.New(inmem.New()), nil)
	api := server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ts := httptest.NewServer(api)
	t.Cleanup(ts.Close)
	sock := filepath.Join(t.TempDir(), "coffer.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	us := &http.Server{Handler: api}
	go us.Serve(ln)
	t.Cleanup(func() { us.Close() })
	tcp := &iamEnv{t: t, url: ts.URL}
	var ir client.InitResponse
	tcp.must("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	tcp.must("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	tcp.must("PUT", "/v1/policies/assume", ir.RootToken, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [auth:AssumeRole]\n    resources: [\"*\"]\n"}, nil)
	tcp.must("POST", "/v1/roles", ir.RootToken, client.Role{Name: "local", Policies: []string{"assume"}, TrustPrincipals: []string{"token:*"}, BoundCIDRs: []string{"0.0.0.0/0", "::/0"}}, nil)
	var plain, bound client.CreateTokenResponse
	tcp.must("POST", "/v1/auth/token/create", ir.RootToken, client.CreateTokenRequest{Policies: []string{"assume"}}, &plain)
	tcp.must("POST", "/v1/auth/assume-role", plain.Token, client.AssumeRoleRequest{Role: "local"}, &bound)
	tcp.must("GET", "/v1/auth/token/lookup-self", bound.Token, nil, nil) // works over TCP

	uc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	lookup := func(tok string) (int, string) {
		req, _ := http.NewRequest("GET", "http://coffer/v1/auth/token/lookup-self", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := uc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	if st, body := lookup(plain.Token); st != http.StatusOK {
		t.Fatalf("unbound token over the socket: %d %s", st, body)
	}
	if st, body := lookup(bound.Token); st != http.StatusUnauthorized || !strings.Contains(body, "bound to") {
		t.Errorf("token bound to every network, over a socket with no source address: %d %s, want 401", st, body)
	}
}

// TestAccessKeyCannotGrantItself: a key allowed accesskey:Update on its
// own id may re-describe itself or drop policies, but not attach a policy
// it does not hold, nor may a token made from it; an administrator still
// can. (The key could add any policy to itself.)
func TestAccessKeyCannotGrantItself(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	root := e.root
	e.must("PUT", "/v1/policies/self", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [accesskey:Update, accesskey:Read, token:Create]
    resources: ["${principal.id}", "*"]
`}, nil)
	e.must("PUT", "/v1/policies/admin", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [\"*\"]\n    resources: [\"*\"]\n"}, nil)
	e.must("PUT", "/v1/policies/random", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:GenerateRandom]\n    resources: [\"*\"]\n"}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{"self", "random"}}, &ak)
	me := basic(ak.ID, ak.SecretAccessKey)
	patch := func(hdr http.Header, req client.UpdateAccessKeyRequest) (int, string) {
		st, _, raw := e.do("PATCH", "/v1/access-keys/"+ak.ID, hdr, req)
		return st, string(raw)
	}
	if st, body := patch(me, client.UpdateAccessKeyRequest{Policies: &[]string{"self", "random", "admin"}}); st != http.StatusForbidden || !strings.Contains(body, "its own access key") {
		t.Fatalf("the key attaches admin to itself: %d %s", st, body)
	}
	var child client.CreateTokenResponse
	st, _, raw := e.do("POST", "/v1/auth/token/create", me, client.CreateTokenRequest{Policies: []string{"self"}})
	if st != http.StatusCreated {
		t.Fatalf("token create: %d %s", st, raw)
	}
	mustJSON(t, raw, &child)
	if st, body := patch(bearer(child.Token), client.UpdateAccessKeyRequest{Policies: &[]string{"self", "admin"}}); st != http.StatusForbidden {
		t.Fatalf("a token made from the key attaches admin to the key: %d %s", st, body)
	}
	var got client.AccessKey
	e.must("GET", "/v1/access-keys/"+ak.ID, root, nil, &got)
	if slices.Contains(got.Policies, "admin") {
		t.Fatalf("the key holds %v", got.Policies)
	}
	// Narrowing itself and describing itself are fine.
	desc := "mine"
	if st, body := patch(me, client.UpdateAccessKeyRequest{Description: &desc, Policies: &[]string{"self"}}); st != http.StatusOK {
		t.Fatalf("the key narrows itself: %d %s", st, body)
	}
	if st, body := patch(me, client.UpdateAccessKeyRequest{Policies: &[]string{"self", "random"}}); st != http.StatusForbidden {
		t.Fatalf("the key re-attaches a policy it dropped: %d %s", st, body)
	}
	// An administrator grants what it likes.
	e.must("PATCH", "/v1/access-keys/"+ak.ID, root, client.UpdateAccessKeyRequest{Policies: &[]string{"self", "random", "admin"}}, nil)
}

// TestCredentialsNotEchoed: a credential typed where an accessor or a
// principal name belongs is refused without being repeated.
func TestCredentialsNotEchoed(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	var tok client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", e.root, client.CreateTokenRequest{TTL: "1h"}, &tok)
	_, secret := credential.NewAccessKey()
	for _, c := range []struct {
		path, cred string
		body       any
	}{
		{"/v1/auth/token/revoke", tok.Token, client.RevokeTokenRequest{Accessor: tok.Token}},
		{"/v1/auth/token/revoke-principal", secret, client.RevokePrincipalRequest{Principal: secret}},
		{"/v1/auth/token/revoke-principal", tok.Token, client.RevokePrincipalRequest{Principal: tok.Token}},
	} {
		st, _, raw := e.do("POST", c.path, bearer(e.root), c.body)
		if st != http.StatusBadRequest {
			t.Errorf("%s with a credential: %d %s", c.path, st, raw)
		}
		_, body, _ := strings.Cut(c.cred, "_")
		for i := 0; i+10 <= len(body); i++ {
			if strings.Contains(string(raw), body[i:i+10]) {
				t.Errorf("%s repeats part of the credential: %s", c.path, raw)
				break
			}
		}
	}
}
