package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/authlimit"
)

// TestTokenCreateStaysInsideCaller: over real HTTP, a token made by a
// scoped role session keeps the scope, expires with the session's limit,
// and dies when the session's role or principal is revoked. (It used to
// come out unscoped, with up to 30 days, and outlive every revocation.)
func TestTokenCreateStaysInsideCaller(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	root := e.root
	var key client.Key
	e.must("POST", "/v1/keys", root, client.CreateKeyRequest{Alias: "alias/app"}, &key)
	e.must("PUT", "/v1/policies/app", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [kms:Encrypt, kms:Decrypt, token:Create]
    resources: ["*"]
`}, nil)
	e.must("PUT", "/v1/policies/assume", root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [auth:AssumeRole]
    resources: ["role/*"]
`}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "app", Policies: []string{"app"}, TrustPrincipals: []string{"access-key:*"},
		TTL: "15m", MaxTTL: "15m", BoundCIDRs: []string{"127.0.0.0/8"}}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{"assume"}}, &ak)

	st, _, raw := e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "app", Policy: `statements:
  - effect: allow
    actions: [kms:Encrypt, token:Create]
    resources: ["*"]
`})
	var session client.CreateTokenResponse
	if st != http.StatusOK && st != http.StatusCreated {
		t.Fatalf("assume-role: %d %s", st, raw)
	}
	mustJSON(t, raw, &session)
	var ct client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", session.Token, client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")}, &ct)
	decrypt := func(tok string) (int, string) {
		st, _, raw := e.do("POST", "/v1/kms/decrypt", bearer(tok), client.DecryptRequest{Ciphertext: ct.Ciphertext})
		return st, string(raw)
	}
	if st, body := decrypt(session.Token); st != http.StatusForbidden {
		t.Fatalf("scoped session decrypts: %d %s", st, body)
	}

	var child client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", session.Token, client.CreateTokenRequest{Policies: []string{"app"}, TTL: "720h"}, &child)
	if st, body := decrypt(child.Token); st != http.StatusForbidden || !strings.Contains(body, "scope-down") {
		t.Fatalf("token made by a scoped session decrypts: %d %s", st, body)
	}
	if child.ExpiresAt == nil || child.ExpiresAt.After(*session.ExpiresAt) || !child.Scoped || len(child.BoundCIDRs) != 1 ||
		child.Subject != "access-key:"+ak.ID {
		t.Fatalf("child token %+v, want bounded by the session %+v", child.TokenInfo, session.TokenInfo)
	}

	// Revoking everything the access key obtained reaches the child.
	e.must("POST", "/v1/auth/token/revoke-principal", root, client.RevokePrincipalRequest{Principal: "access-key:" + ak.ID}, nil)
	if st, _, raw := e.do("POST", "/v1/kms/encrypt", bearer(child.Token), client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")}); st != http.StatusUnauthorized {
		t.Fatalf("child after revoking its principal: %d %s", st, raw)
	}

	// New sessions and children: revoking the role reaches the child, and
	// so does the session's end.
	newChild := func() string {
		t.Helper()
		st, _, raw := e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "app"})
		if st/100 != 2 {
			t.Fatalf("assume-role: %d %s", st, raw)
		}
		mustJSON(t, raw, &session)
		e.must("POST", "/v1/auth/token/create", session.Token, client.CreateTokenRequest{Policies: []string{"app"}}, &child)
		if st, body := decrypt(child.Token); st != http.StatusOK {
			t.Fatalf("unscoped session's child: %d %s", st, body)
		}
		return child.Token
	}
	tok := newChild()
	e.must("POST", "/v1/auth/token/revoke-role", root, client.RevokeRoleRequest{Role: "app"}, nil)
	if st, body := decrypt(tok); st != http.StatusUnauthorized {
		t.Fatalf("child after revoking the role: %d %s", st, body)
	}
	newChild()
	e.offset.Add(int64(16 * time.Minute))
	if st, body := decrypt(child.Token); st != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Fatalf("child after the session's limit: %d %s", st, body)
	}
}

func mustJSON(t *testing.T, raw []byte, out any) {
	t.Helper()
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
}

// TestLeakedAccessKeySessionsDie: reporting an access key's secret as
// leaked also revokes the role sessions obtained with it.
func TestLeakedAccessKeySessionsDie(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000}))
	e.must("PUT", "/v1/policies/assume", e.root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [auth:AssumeRole]
    resources: ["role/*"]
`}, nil)
	e.must("POST", "/v1/roles", e.root, client.Role{Name: "ci", TrustPrincipals: []string{"access-key:*"}}, nil)
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", e.root, client.CreateAccessKeyRequest{Policies: []string{"assume"}}, &ak)
	st, _, raw := e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "ci"})
	if st/100 != 2 {
		t.Fatalf("assume-role: %d %s", st, raw)
	}
	var session client.CreateTokenResponse
	mustJSON(t, raw, &session)
	e.must("GET", "/v1/auth/token/lookup-self", session.Token, nil, nil)
	var rep client.ReportLeakedResponse
	e.must("POST", "/v1/auth/token/report-leaked", e.root, client.ReportLeakedRequest{Fingerprints: []string{sha256hex(ak.SecretAccessKey)}}, &rep)
	if len(rep.Revoked) != 1 || rep.Revoked[0] != ak.ID {
		t.Fatalf("report: %+v", rep)
	}
	if st, _, raw := e.do("GET", "/v1/auth/token/lookup-self", bearer(session.Token), nil); st != http.StatusUnauthorized {
		t.Fatalf("session of a leaked key after the report: %d %s", st, raw)
	}
}
