package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// iamEnv is a server over real loopback HTTP with a movable clock and the
// identity configuration of the authorization table.
type iamEnv struct {
	t      *testing.T
	url    string
	offset atomic.Int64 // added to time.Now for the server's clock
	root   string
	jwtKey *ecdsa.PrivateKey
	other  *ecdsa.PrivateKey
	now    func() time.Time
	rec    *memRecorder
}

// memRecorder keeps the records of completed requests.
type memRecorder struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (m *memRecorder) Record(_ context.Context, r *audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.Phase == audit.PhaseDone {
		m.recs = append(m.recs, *r)
	}
	return nil
}

// last returns the newest record of action.
func (m *memRecorder) last(action string) (audit.Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.recs) - 1; i >= 0; i-- {
		if m.recs[i].Action == action {
			return m.recs[i], true
		}
	}
	return audit.Record{}, false
}

const issuer = "https://kind.example"

func newIAMEnv(t *testing.T, limit *authlimit.Limiter) *iamEnv {
	t.Helper()
	e := &iamEnv{t: t, rec: &memRecorder{}}
	e.now = func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }
	s := sys.New(barrier.New(inmem.New()), e.now)
	api := server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AuthLimit: limit, Audit: e.rec})
	ts := httptest.NewServer(api)
	t.Cleanup(ts.Close)
	e.url = ts.URL
	var ir client.InitResponse
	e.must("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	e.must("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	e.root = ir.RootToken
	e.jwtKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.other, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return e
}

func (e *iamEnv) do(method, path string, hdr http.Header, in any) (int, http.Header, []byte) {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.url+path, body)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

func (e *iamEnv) must(method, path, token string, in, out any) {
	e.t.Helper()
	st, _, raw := e.do(method, path, bearer(token), in)
	if st/100 != 2 {
		e.t.Fatalf("%s %s: %d %s", method, path, st, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// jwtFor mints a service-account token signed by key.
func (e *iamEnv) jwtFor(key *ecdsa.PrivateKey, edit func(c *jwt.Claims, priv map[string]any)) string {
	e.t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		e.t.Fatal(err)
	}
	now := e.now()
	c := jwt.Claims{Issuer: issuer, Subject: "system:serviceaccount:team-a:api", Audience: jwt.Audience{"coffer"},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}
	priv := map[string]any{"kubernetes.io": map[string]any{"namespace": "team-a", "serviceaccount": map[string]string{"name": "api", "uid": "u-1"}}}
	if edit != nil {
		edit(&c, priv)
	}
	tok, err := jwt.Signed(sig).Claims(c).Claims(priv).Serialize()
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func basic(id, secret string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))}}
}

// TestAuthTable sends credentials that must be refused, and valid
// principals without permission, over real HTTP: every 401 gives a reason
// without echoing the secret, every 403 names the action and the resource.
func TestAuthTable(t *testing.T) {
	// The table's failures come from one source, several claiming the pod's principal.
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000}))
	root := e.root

	// A key with an alias, policies, roles, access keys and a cluster.
	var key client.Key
	e.must("POST", "/v1/keys", root, client.CreateKeyRequest{Alias: "alias/app"}, &key)
	var other client.Key
	e.must("POST", "/v1/keys", root, client.CreateKeyRequest{Alias: "alias/other"}, &other)
	policies := map[string]string{
		"encrypt-app": `statements:
  - effect: allow
    actions: [kms:Encrypt]
    resources: [alias/app]
`,
		"own-namespace": `statements:
  - sid: OwnNamespace
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: ["alias/*"]
    conditions:
      StringEquals:
        context.namespace: ${principal.namespace}
`,
		"office-hours": `statements:
  - effect: allow
    actions: [kms:GenerateRandom]
    resources: ["*"]
    conditions:
      IpAddress:
        source_ip: [10.0.0.0/8]
  - effect: allow
    actions: [key:List]
    resources: ["*"]
    conditions:
      DateLessThan:
        time: "2001-01-01T00:00:00Z"
`,
		"deny-other": `statements:
  - effect: allow
    actions: ["kms:*"]
    resources: ["*"]
  - sid: NeverOther
    effect: deny
    actions: ["kms:*"]
    resources: [alias/other]
`,
	}
	for name, doc := range policies {
		e.must("PUT", "/v1/policies/"+name, root, client.PutPolicyRequest{Document: doc}, nil)
	}
	e.must("PUT", "/v1/keys/alias%2Fapp/policy", root, client.KeyPolicy{Document: `statements:
  - effect: allow
    actions: ["kms:*"]
    resources: ["*"]
  - sid: NoDecryptForCI
    effect: deny
    actions: [kms:Decrypt]
    resources: ["*"]
    principals: ["role:ci"]
`}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "ci", Policies: []string{"deny-other"}, TrustPrincipals: []string{"access-key:*"}, MaxTTL: "2h"}, nil)
	e.must("POST", "/v1/roles", root, client.Role{Name: "pod", Policies: []string{"own-namespace"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &e.jwtKey.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	e.must("POST", "/v1/auth/kubernetes/clusters", root, client.Cluster{Name: "kind", Mode: "jwks", Issuer: issuer, JWKS: string(jwks)}, nil)

	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{"encrypt-app", "office-hours"}}, &ak)
	var akOff client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{}}, &akOff)
	e.must("PATCH", "/v1/access-keys/"+akOff.ID, root, client.UpdateAccessKeyRequest{Enabled: new(false)}, nil)
	var akGone client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{}}, &akGone)
	e.must("DELETE", "/v1/access-keys/"+akGone.ID, root, nil, nil)
	var akOld client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{}, ExpiresIn: "1m"}, &akOld)

	var akLeaked client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", root, client.CreateAccessKeyRequest{Policies: []string{}}, &akLeaked)
	var rep client.ReportLeakedResponse
	e.must("POST", "/v1/auth/token/report-leaked", root, client.ReportLeakedRequest{Fingerprints: []string{sha256hex(akLeaked.SecretAccessKey)}}, &rep)
	if len(rep.Revoked) != 1 || rep.Revoked[0] != akLeaked.ID || rep.Unknown != 0 {
		t.Fatalf("reporting a leaked access key: %+v", rep)
	}
	var plain, expiring, bound, revoked, leaked client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", root, client.CreateTokenRequest{TTL: "1h", Policies: []string{"encrypt-app"}}, &plain)
	e.must("POST", "/v1/auth/token/create", root, client.CreateTokenRequest{TTL: "1m"}, &expiring)
	e.must("POST", "/v1/auth/token/create", root, client.CreateTokenRequest{TTL: "1h"}, &revoked)
	e.must("POST", "/v1/auth/token/revoke", root, client.RevokeTokenRequest{Token: revoked.Token}, nil)
	e.must("POST", "/v1/auth/token/create", root, client.CreateTokenRequest{TTL: "1h"}, &leaked)
	fp := sha256hex(leaked.Token)
	e.must("POST", "/v1/auth/token/report-leaked", root, client.ReportLeakedRequest{Fingerprints: []string{fp}}, nil)

	// Role tokens: plain, scoped down, bound to a network that is not loopback.
	var ci, scoped client.CreateTokenResponse
	assume := func(req client.AssumeRoleRequest, out *client.CreateTokenResponse) {
		t.Helper()
		st, _, raw := e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), req)
		if st != 200 {
			t.Fatalf("assume-role %+v: %d %s", req, st, raw)
		}
		json.Unmarshal(raw, out)
	}
	// The access key may assume roles only if its policies allow it.
	st, _, raw := e.do("POST", "/v1/auth/assume-role", basic(ak.ID, ak.SecretAccessKey), client.AssumeRoleRequest{Role: "ci"})
	if st != 403 || !strings.Contains(string(raw), "auth:AssumeRole on role/ci") {
		t.Fatalf("assume-role without auth:AssumeRole: %d %s", st, raw)
	}
	e.must("PUT", "/v1/policies/assume", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [auth:AssumeRole]\n    resources: [role/ci]\n"}, nil)
	e.must("PATCH", "/v1/access-keys/"+ak.ID, root, client.UpdateAccessKeyRequest{Policies: &[]string{"encrypt-app", "office-hours", "assume"}}, nil)
	assume(client.AssumeRoleRequest{Role: "ci"}, &ci)
	assume(client.AssumeRoleRequest{Role: "ci", Policy: "statements:\n  - effect: allow\n    actions: [kms:Encrypt]\n    resources: [\"*\"]\n"}, &scoped)
	assume(client.AssumeRoleRequest{Role: "ci", BoundCIDRs: []string{"10.0.0.0/8"}}, &bound)

	// A pod's token, then the JWT of a revoked principal.
	var pod client.CreateTokenResponse
	e.must("POST", "/v1/auth/kubernetes/login", "", client.KubernetesLoginRequest{Role: "pod", JWT: e.jwtFor(e.jwtKey, nil)}, &pod)
	if pod.Namespace != "team-a" || pod.ServiceAccount != "api" || pod.Role != "pod" || pod.Subject != "kubernetes:kind/team-a/api" {
		t.Fatalf("pod token info = %+v", pod.TokenInfo)
	}
	oldJWT := e.jwtFor(e.jwtKey, nil)
	e.offset.Add(int64(2 * time.Second))
	e.must("POST", "/v1/auth/token/revoke-principal", root, client.RevokePrincipalRequest{Principal: "kubernetes:kind/team-a/api"}, nil)
	e.offset.Add(int64(2 * time.Second))

	// Move the clock: the 1-minute token and access key expire.
	e.offset.Add(int64(2 * time.Minute))

	enc := func(keyID, ns string) client.EncryptRequest {
		r := client.EncryptRequest{KeyID: keyID, Plaintext: []byte("x")}
		if ns != "" {
			r.Context = map[string]string{"namespace": ns}
		}
		return r
	}
	var ct client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", root, enc("alias/app", ""), &ct)
	login := func(jwt string) client.KubernetesLoginRequest {
		return client.KubernetesLoginRequest{Role: "pod", JWT: jwt}
	}
	wrongIss := e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) { c.Issuer = "https://evil.example" })

	cases := []struct {
		name, method, path string
		hdr                http.Header
		body               any
		status             int
		msg                []string // all must appear
		secret             string   // must not appear
	}{
		// 401: tokens.
		{name: "no credential", method: "POST", path: "/v1/kms/encrypt", body: enc("alias/app", ""), status: 401, msg: []string{"no token"}},
		{name: "malformed token", method: "POST", path: "/v1/kms/encrypt", hdr: bearer("cft_tooshort"), body: enc("alias/app", ""), status: 401, msg: []string{"malformed"}, secret: "cft_tooshort"},
		{name: "unknown token", method: "POST", path: "/v1/kms/encrypt", hdr: bearer(newtokenValue()), body: enc("alias/app", ""), status: 401, msg: []string{"unknown or was revoked"}},
		{name: "expired token", method: "POST", path: "/v1/kms/encrypt", hdr: bearer(expiring.Token), body: enc("alias/app", ""), status: 401, msg: []string{"expired at"}, secret: expiring.Token},
		{name: "revoked token", method: "GET", path: "/v1/auth/token/lookup-self", hdr: bearer(revoked.Token), status: 401, msg: []string{"unknown or was revoked"}, secret: revoked.Token},
		{name: "leaked token", method: "GET", path: "/v1/auth/token/lookup-self", hdr: bearer(leaked.Token), status: 401, msg: []string{"reported as leaked"}, secret: leaked.Token},
		{name: "token bound to another network", method: "POST", path: "/v1/kms/encrypt", hdr: bearer(bound.Token), body: enc("alias/app", ""), status: 401, msg: []string{"bound to 10.0.0.0/8", "127.0.0.1"}, secret: bound.Token},
		{name: "unsupported scheme", method: "GET", path: "/v1/keys", hdr: http.Header{"Authorization": {"Digest x"}}, status: 401, msg: []string{"Bearer"}},
		// 401: access keys.
		{name: "access key wrong secret", method: "GET", path: "/v1/keys", hdr: basic(ak.ID, "cfsk_wrongwrongwrong"), status: 401, msg: []string{"secret does not match", ak.ID}, secret: "cfsk_wrongwrongwrong"},
		{name: "access key disabled", method: "GET", path: "/v1/keys", hdr: basic(akOff.ID, akOff.SecretAccessKey), status: 401, msg: []string{"disabled"}, secret: akOff.SecretAccessKey},
		{name: "access key deleted", method: "GET", path: "/v1/keys", hdr: basic(akGone.ID, akGone.SecretAccessKey), status: 401, msg: []string{"unknown or was deleted"}, secret: akGone.SecretAccessKey},
		{name: "access key expired", method: "GET", path: "/v1/keys", hdr: basic(akOld.ID, akOld.SecretAccessKey), status: 401, msg: []string{"expired at"}, secret: akOld.SecretAccessKey},
		{name: "access key reported leaked", method: "GET", path: "/v1/keys", hdr: basic(akLeaked.ID, akLeaked.SecretAccessKey), status: 401, msg: []string{"reported as leaked and disabled", akLeaked.ID}, secret: akLeaked.SecretAccessKey},
		{name: "access key id malformed", method: "GET", path: "/v1/keys", hdr: basic("AKIAEXAMPLE", "s3cr3t-value"), status: 401, msg: []string{"not an access key id"}, secret: "s3cr3t-value"},
		// 401: Kubernetes service-account tokens.
		{name: "jwt expired", method: "POST", path: "/v1/auth/kubernetes/login", body: login(e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) {
			c.IssuedAt = jwt.NewNumericDate(e.now().Add(-time.Hour))
			c.NotBefore = c.IssuedAt
			c.Expiry = jwt.NewNumericDate(e.now().Add(-10 * time.Minute))
		})), status: 401, msg: []string{"expired"}},
		{name: "jwt not yet valid", method: "POST", path: "/v1/auth/kubernetes/login", body: login(e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) {
			c.NotBefore = jwt.NewNumericDate(e.now().Add(5 * time.Minute))
		})), status: 401, msg: []string{"not valid before"}},
		{name: "jwt wrong issuer", method: "POST", path: "/v1/auth/kubernetes/login", body: login(wrongIss), status: 401, msg: []string{"issuer", "evil.example"}, secret: strings.Split(wrongIss, ".")[2]},
		{name: "jwt wrong audience", method: "POST", path: "/v1/auth/kubernetes/login", body: login(e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) {
			c.Audience = jwt.Audience{"vault"}
		})), status: 401, msg: []string{"audience"}},
		{name: "jwt bad signature", method: "POST", path: "/v1/auth/kubernetes/login", body: login(e.jwtFor(e.other, nil)), status: 401, msg: []string{"signature"}},
		{name: "jwt malformed", method: "POST", path: "/v1/auth/kubernetes/login", body: login("not.a.jwt"), status: 401, msg: []string{"malformed"}},
		{name: "jwt replayed after revocation", method: "POST", path: "/v1/auth/kubernetes/login", body: login(oldJWT), status: 401, msg: []string{"revoked", "kubernetes:kind/team-a/api"}, secret: strings.Split(oldJWT, ".")[2]},
		{name: "pod token revoked with its principal", method: "POST", path: "/v1/kms/encrypt", hdr: bearer(pod.Token), body: enc("alias/app", "team-a"), status: 401, msg: []string{"unknown or was revoked"}},
		// 403: valid principals without permission.
		{name: "jwt of an untrusted namespace", method: "POST", path: "/v1/auth/kubernetes/login", body: login(e.jwtFor(e.jwtKey, func(c *jwt.Claims, p map[string]any) {
			c.Subject = "system:serviceaccount:team-b:api"
			p["kubernetes.io"] = map[string]any{"namespace": "team-b", "serviceaccount": map[string]string{"name": "api", "uid": "u-2"}}
		})), status: 403, msg: []string{"does not trust service account team-b/api"}},
		{name: "token without the action", method: "POST", path: "/v1/kms/decrypt", hdr: bearer(plain.Token), body: client.DecryptRequest{Ciphertext: ct.Ciphertext}, status: 403, msg: []string{"may not kms:Decrypt on " + key.ID}},
		{name: "token on another key", method: "POST", path: "/v1/kms/encrypt", hdr: bearer(plain.Token), body: enc("alias/other", ""), status: 403, msg: []string{"kms:Encrypt on alias/other", "default deny"}},
		{name: "token admin action", method: "POST", path: "/v1/sys/seal", hdr: bearer(plain.Token), status: 403, msg: []string{"may not sys:Seal"}},
		{name: "token escalates policies", method: "POST", path: "/v1/auth/token/create", hdr: bearer(plain.Token), body: client.CreateTokenRequest{Policies: []string{"deny-other"}}, status: 403, msg: []string{"token:Create"}},
		{name: "explicit deny wins", method: "POST", path: "/v1/kms/encrypt", hdr: bearer(ci.Token), body: enc("alias/other", ""), status: 403, msg: []string{"role:ci may not kms:Encrypt on alias/other", "explicitly denied"}},
		{name: "key policy denies", method: "POST", path: "/v1/kms/decrypt", hdr: bearer(ci.Token), body: client.DecryptRequest{Ciphertext: ct.Ciphertext}, status: 403, msg: []string{"kms:Decrypt on " + key.ID, "explicitly denied"}},
		{name: "scope-down denies", method: "POST", path: "/v1/kms/datakey", hdr: bearer(scoped.Token), body: client.DataKeyRequest{KeyID: "alias/app"}, status: 403, msg: []string{"kms:GenerateDataKey on alias/app", "scope-down"}},
		{name: "source condition", method: "POST", path: "/v1/kms/random", hdr: basic(ak.ID, ak.SecretAccessKey), body: client.RandomRequest{Bytes: 8}, status: 403, msg: []string{"kms:GenerateRandom"}},
		{name: "time condition", method: "GET", path: "/v1/keys", hdr: basic(ak.ID, ak.SecretAccessKey), status: 403, msg: []string{"key:List"}},
		{name: "role not trusting the caller", method: "POST", path: "/v1/auth/assume-role", hdr: bearer(plain.Token), body: client.AssumeRoleRequest{Role: "ci"}, status: 403, msg: []string{"auth:AssumeRole on role/ci"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, _, raw := e.do(c.method, c.path, c.hdr, c.body)
			var eb client.ErrorBody
			if err := json.Unmarshal(raw, &eb); err != nil || st != c.status {
				t.Fatalf("status %d (want %d): %s", st, c.status, raw)
			}
			wantCode := map[int]string{401: "unauthenticated", 403: "permission_denied"}[c.status]
			if eb.Error.Code != wantCode {
				t.Errorf("code %q, want %q", eb.Error.Code, wantCode)
			}
			for _, m := range c.msg {
				if !strings.Contains(eb.Error.Message, m) {
					t.Errorf("message %q does not contain %q", eb.Error.Message, m)
				}
			}
			if c.secret != "" && strings.Contains(string(raw), c.secret) {
				t.Errorf("the answer echoes the secret: %s", raw)
			}
		})
	}
	if len(cases) < 25 {
		t.Fatalf("only %d cases", len(cases))
	}

	// The allowed paths of the same principals work.
	okCases := []struct {
		name string
		hdr  http.Header
		path string
		body any
	}{
		{"token encrypts its key", bearer(plain.Token), "/v1/kms/encrypt", enc("alias/app", "")},
		{"access key encrypts", basic(ak.ID, ak.SecretAccessKey), "/v1/kms/encrypt", enc("alias/app", "")},
		{"role encrypts", bearer(ci.Token), "/v1/kms/encrypt", enc("alias/app", "")},
		{"scoped role encrypts", bearer(scoped.Token), "/v1/kms/encrypt", enc("alias/app", "")},
	}
	for _, c := range okCases {
		if st, _, raw := e.do("POST", c.path, c.hdr, c.body); st != 200 {
			t.Errorf("%s: %d %s", c.name, st, raw)
		}
	}
	// A fresh pod token works for its own namespace only.
	var pod2 client.CreateTokenResponse
	e.must("POST", "/v1/auth/kubernetes/login", "", login(e.jwtFor(e.jwtKey, nil)), &pod2)
	if st, _, raw := e.do("POST", "/v1/kms/encrypt", bearer(pod2.Token), enc("alias/app", "team-a")); st != 200 {
		t.Errorf("pod encrypts with its namespace: %d %s", st, raw)
	}
	if st, _, raw := e.do("POST", "/v1/kms/encrypt", bearer(pod2.Token), enc("alias/app", "team-b")); st != 403 || !strings.Contains(string(raw), "kms:Encrypt on alias/app") {
		t.Errorf("pod encrypts with another namespace: %d %s", st, raw)
	}
	// The audit record of the denied request names the workload.
	if r, ok := e.rec.last("kms:Encrypt"); !ok || r.ErrorCode != "permission_denied" || r.Principal.Kind != "role" || r.Principal.Role != "pod" ||
		r.Principal.Namespace != "team-a" || r.Principal.ServiceAccount != "api" || r.Principal.Cluster != "kind" || r.Principal.Accessor != pod2.Accessor {
		t.Errorf("audit record of the pod's denied request: %+v", r)
	}
	// An access key's record names the key, so alerts can disable it.
	e.do("POST", "/v1/kms/encrypt", basic(ak.ID, ak.SecretAccessKey), enc("alias/app", ""))
	if r, _ := e.rec.last("kms:Encrypt"); r.Principal.Kind != "access-key" || r.Principal.Accessor != ak.ID || r.Outcome != "ok" {
		t.Errorf("audit record of an access key's request: %+v", r.Principal)
	}
	// The access key's last use is recorded.
	var got client.AccessKey
	e.must("GET", "/v1/access-keys/"+ak.ID, root, nil, &got)
	if got.LastUsedAt == nil || got.LastSource != "127.0.0.1" {
		t.Errorf("access key last use = %v from %q", got.LastUsedAt, got.LastSource)
	}
}

// TestAuthFailuresThrottled: a source that keeps failing gets 429 with
// Retry-After, valid credentials from it still work, and other sources are
// not affected (they have their own buckets).
func TestAuthFailuresThrottled(t *testing.T) {
	e := newIAMEnv(t, authlimit.New(authlimit.Config{Burst: 3, Refill: time.Hour}))
	bad := bearer(newtokenValue())
	for i := range 3 {
		if st, _, raw := e.do("GET", "/v1/keys", bad, nil); st != 401 {
			t.Fatalf("failure %d: %d %s", i+1, st, raw)
		}
	}
	st, hdr, raw := e.do("GET", "/v1/keys", bad, nil)
	if st != 429 || hdr.Get("Retry-After") == "" || !strings.Contains(string(raw), "too_many_auth_failures") {
		t.Fatalf("after the burst: %d %v %s", st, hdr, raw)
	}
	if st, _, raw := e.do("GET", "/v1/keys", bearer(e.root), nil); st != 200 {
		t.Fatalf("a valid token from the throttled source: %d %s", st, raw)
	}
	// Logins from the throttled source are refused before verification.
	if st, _, raw := e.do("POST", "/v1/auth/kubernetes/login", nil, client.KubernetesLoginRequest{Role: "x", JWT: "a.b.c"}); st != 429 {
		t.Fatalf("login while throttled: %d %s", st, raw)
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// newtokenValue is a well-formed token the server never issued.
func newtokenValue() string { return credential.New(credential.TokenPrefix) }
