package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/server"
)

// TestReviewAnonymousBodiesDoNotTakeTheBudget: a caller with no credential
// at all cannot take the large-body budget from authorized batches by
// opening slow, chunked bodies on the public routes (logins, init,
// unseal), whose real bodies are all tiny. (Each such body reserved the
// 1 MiB default limit: 64 anonymous connections made every large batch
// wait and get 503 busy.)
func TestReviewAnonymousBodiesDoNotTakeTheBudget(t *testing.T) {
	e := newBoundsEnv(t, nil)
	var pipes []*io.PipeWriter
	var wg sync.WaitGroup
	for i := range server.MaxBodyBudget / server.MaxBody {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		path := "/v1/auth/kubernetes/login"
		if i%2 == 1 {
			path = "/v1/auth/cert/login"
		}
		wg.Go(func() {
			req, _ := http.NewRequest("POST", e.url+path, pr) // no credential, undeclared length
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
		if _, err := pw.Write([]byte(`{"role":"`)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // the handlers are reading
	defer func() {
		for _, pw := range pipes {
			pw.Close()
		}
		wg.Wait()
	}()
	big := emptyItems(10)
	big = append(big[:len(big)-2], []byte(strings.Repeat(" ", 100<<10)+"]}")...)
	if st, _, raw := e.send("POST", "/v1/kms/decrypt-batch", e.root, nil, bytes.NewReader(big)); st == http.StatusServiceUnavailable {
		t.Fatalf("an authorized large batch while anonymous callers hold slow bodies: %d %.300s", st, raw)
	}
}

// TestReviewSessionFromKeyTokenCannotGrantKey: the rule that no principal
// grants itself a policy holds along every chain from an access key: a
// token made with the key, assuming a role, is still the key acting. (The
// session took the token's name as its subject and lost the key, so it
// could attach admin to the key.)
func TestReviewSessionFromKeyTokenCannotGrantKey(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	root := e.root
	e.must("PUT", "/v1/policies/key", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [token:Create, auth:AssumeRole]
    resources: ["*"]
`}, nil)
	e.must("PUT", "/v1/policies/keyadmin", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [accesskey:Update, accesskey:Read]
    resources: ["*"]
`}, nil)
	e.must("PUT", "/v1/policies/admin", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [\"*\"]\n    resources: [\"*\"]\n"}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "keyops", Policies: []string{"keyadmin"}, TrustPrincipals: []string{"access-key:*", "token:*"}}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{"key"}}, &ak)

	patchAdmin := func(who string, hdr http.Header) {
		t.Helper()
		if st, _, raw := e.do("PATCH", "/v1/access-keys/"+ak.ID, hdr, client.UpdateAccessKeyRequest{Policies: &[]string{"key", "admin"}}); st != http.StatusForbidden {
			t.Errorf("%s attaches admin to the key it derives from: %d %s", who, st, raw)
		}
	}
	// Directly: refused today.
	var direct client.CreateTokenResponse
	mustDo(t, e, "POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "keyops"}, &direct)
	patchAdmin("a session the key obtained", bearer(direct.Token))

	// Through a token made with the key.
	st, _, raw := e.do("POST", "/v1/auth/token/create", basic(ak.ID, ak.SecretAccessKey), client.CreateTokenRequest{Policies: []string{"key"}})
	if st != http.StatusCreated {
		t.Fatalf("token create: %d %s", st, raw)
	}
	var child client.CreateTokenResponse
	mustJSON(t, raw, &child)
	var session client.CreateTokenResponse
	mustDo(t, e, "POST", "/v1/auth/assume-role", bearer(child.Token), client.AssumeRoleRequest{Role: "keyops"}, &session)
	patchAdmin("a session obtained by a token made with the key", bearer(session.Token))
	if session.Subject != "access-key:"+ak.ID {
		t.Errorf("the session's subject is %q, want the key it derives from", session.Subject)
	}
}

// mustDo is e.do that must succeed, decoding the answer into out.
func mustDo(t *testing.T, e *iamEnv, method, path string, hdr http.Header, in, out any) {
	t.Helper()
	st, _, raw := e.do(method, path, hdr, in)
	if st/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, st, raw)
	}
	mustJSON(t, raw, out)
}

// TestReviewRoleSessionCannotGrantItsRole: a role session allowed
// role:Update on its own role may change it, but not attach a policy the
// role does not carry, which would grant the session (and every token
// made from it) that policy at its next request. An administrator still
// can. (A session could give its own role admin.)
func TestReviewRoleSessionCannotGrantItsRole(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	root := e.root
	e.must("PUT", "/v1/policies/roleops", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [role:Update, role:Read, token:Create, auth:AssumeRole]
    resources: ["*"]
`}, nil)
	e.must("PUT", "/v1/policies/admin", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [\"*\"]\n    resources: [\"*\"]\n"}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "ops", Policies: []string{"roleops"}, TrustPrincipals: []string{"access-key:*"}}, nil)
	e.must("PUT", "/v1/policies/assume", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [auth:AssumeRole]\n    resources: [\"role/ops\"]\n"}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{"assume"}}, &ak)
	var session client.CreateTokenResponse
	mustDo(t, e, "POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "ops"}, &session)
	var child client.CreateTokenResponse
	mustDo(t, e, "POST", "/v1/auth/token/create", bearer(session.Token), client.CreateTokenRequest{Policies: []string{"roleops"}}, &child)

	grant := client.Role{Policies: []string{"roleops", "admin"}, TrustPrincipals: []string{"access-key:*"}}
	for _, who := range []struct{ name, token string }{{"the role's session", session.Token}, {"a token made from it", child.Token}} {
		if st, _, raw := e.do("PUT", "/v1/roles/ops", bearer(who.token), grant); st != http.StatusForbidden {
			t.Errorf("%s attaches admin to its own role: %d %s", who.name, st, raw)
		}
	}
	var got client.Role
	e.must("GET", "/v1/roles/ops", root, nil, &got)
	if len(got.Policies) != 1 {
		t.Fatalf("the role carries %v", got.Policies)
	}
	// Changing its role otherwise is fine; an administrator grants.
	if st, _, raw := e.do("PUT", "/v1/roles/ops", bearer(session.Token), client.Role{Policies: []string{"roleops"}, TrustPrincipals: []string{"access-key:*"}, TTL: "30m"}); st != http.StatusOK {
		t.Fatalf("the session updates its role without granting: %d %s", st, raw)
	}
	e.must("PUT", "/v1/roles/ops", root, grant, nil)
}

// TestReviewCredentialsNotRecorded: a token or secret typed where an
// accessor, a principal or an access key id belongs is neither repeated in
// the answer nor written to the audit trail as the request's resource.
// (The answers were fixed, but the records kept the credential in clear,
// and token lookup still echoed it.)
func TestReviewCredentialsNotRecorded(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	var tok client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", e.root, client.CreateTokenRequest{TTL: "1h"}, &tok)
	_, secret := credential.NewAccessKey()
	cases := []struct {
		method, path, cred string
		body               any
	}{
		{"POST", "/v1/auth/token/revoke", tok.Token, client.RevokeTokenRequest{Accessor: tok.Token}},
		{"POST", "/v1/auth/token/lookup", tok.Token, client.LookupTokenRequest{Accessor: tok.Token}},
		{"POST", "/v1/auth/token/revoke-principal", secret, client.RevokePrincipalRequest{Principal: secret}},
		{"POST", "/v1/auth/token/revoke-principal", secret, client.RevokePrincipalRequest{Principal: "access-key:" + secret}},
		{"GET", "/v1/access-keys/" + secret, secret, nil},
		{"DELETE", "/v1/access-keys/" + secret, secret, nil},
	}
	for _, c := range cases {
		before := len(e.rec.all())
		st, _, raw := e.do(c.method, c.path, bearer(e.root), c.body)
		if st/100 == 2 || st >= 500 {
			t.Errorf("%s %s with a credential: %d %s", c.method, c.path, st, raw)
		}
		_, body, _ := strings.Cut(c.cred, "_")
		recs, _ := json.Marshal(e.rec.all()[before:])
		for i := 0; i+10 <= len(body); i++ {
			if strings.Contains(string(raw), body[i:i+10]) {
				t.Errorf("%s %s repeats part of the credential: %s", c.method, c.path, raw)
				break
			}
		}
		for i := 0; i+10 <= len(body); i++ {
			if strings.Contains(string(recs), body[i:i+10]) {
				t.Errorf("%s %s: the audit record holds part of the credential: %s", c.method, c.path, recs)
				break
			}
		}
	}
}

// all returns a copy of the records so far.
func (m *memRecorder) all() []audit.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.recs)
}
