package iam

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cofferkms/coffer/internal/auth"
)

// webIdentityEnv has a jwks cluster "kind" and a role "app" (max_ttl 30m)
// trusting team-a/api; mint makes that service account's token.
func webIdentityEnv(t *testing.T) (*env, func() string) {
	t.Helper()
	e := newEnv(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if _, err := e.iam.RegisterCluster(ctx, Cluster{Name: "kind", Mode: ModeJWKS, Issuer: "https://kind.example", JWKS: string(jwks)}); err != nil {
		t.Fatal(err)
	}
	e.policy(t, "enc", allowEncryptApp)
	if _, err := e.iam.CreateRole(ctx, Role{Name: "app", Policies: []string{"enc"}, MaxTTL: "30m",
		Kubernetes: []KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}); err != nil {
		t.Fatal(err)
	}
	mint := func() string {
		sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
		c := jwt.Claims{Issuer: "https://kind.example", Subject: "system:serviceaccount:team-a:api", Audience: jwt.Audience{"coffer"},
			IssuedAt: jwt.NewNumericDate(e.now), Expiry: jwt.NewNumericDate(e.now.Add(10 * time.Minute))}
		priv := map[string]any{"kubernetes.io": map[string]any{"namespace": "team-a", "serviceaccount": map[string]string{"name": "api", "uid": "u-1"}}}
		tok, err := jwt.Signed(sig).Claims(c).Claims(priv).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	return e, mint
}

// TestWebIdentitySession: the session is a role token of the service
// account, marked for SigV4 only, named after the session, capped at the
// role's max_ttl; a plain Kubernetes login still gives a bearer token.
func TestWebIdentitySession(t *testing.T) {
	e, mint := webIdentityEnv(t)
	tok, p, err := e.iam.WebIdentitySession(ctx, WebIdentityRequest{Role: "app", JWT: mint(), SessionName: "build-7", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != auth.KindRole || p.Role != "app" || p.Namespace != "team-a" || p.ServiceAccount != "api" || p.Subject != "kubernetes:kind/team-a/api" ||
		p.DisplayName != "build-7" || p.Attributes["session"] != "build-7" || p.Attributes["cluster"] != "kind" {
		t.Errorf("session principal: %+v", p)
	}
	if want := e.now.Add(30 * time.Minute); !p.ExpiresAt.Equal(want) {
		t.Errorf("a 1h session of a role with max_ttl 30m expires at %s, want %s", p.ExpiresAt, want)
	}
	if _, err := e.tokens.Lookup(tok, netip.Addr{}); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("the session token as a bearer token: %v", err)
	}
	if _, err := e.tokens.LookupSession(tok, netip.Addr{}); err != nil {
		t.Errorf("LookupSession: %v", err)
	}
	plain, _, err := e.iam.KubernetesLogin(ctx, KubernetesLoginRequest{Role: "app", JWT: mint()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.tokens.Lookup(plain, netip.Addr{}); err != nil {
		t.Errorf("a Kubernetes login's token as a bearer token: %v", err)
	}
	for _, q := range []WebIdentityRequest{
		{Role: "app", JWT: mint(), Duration: time.Hour},
		{Role: "app", JWT: mint(), SessionName: "s", Duration: 0},
	} {
		if _, _, err := e.iam.WebIdentitySession(ctx, q); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%+v: %v", q, err)
		}
	}
}

// TestAuthenticateSessionSigned: the verifier gets the session's derived
// secret, only after the access key id matched; a refused signature is
// attributed to the session's accessor; a revoked session is refused
// before anything is verified.
func TestAuthenticateSessionSigned(t *testing.T) {
	e, mint := webIdentityEnv(t)
	tok, p, err := e.iam.WebIdentitySession(ctx, WebIdentityRequest{Role: "app", JWT: mint(), SessionName: "s1", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want, err := e.tokens.SessionSecret(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	id := auth.SessionKeyID(p.Accessor)
	var got string
	calls := 0
	verify := func(secret string) error { calls++; got = secret; return nil }
	if q, err := e.iam.AuthenticateSessionSigned(ctx, tok, id, netip.Addr{}, verify); err != nil || q.Accessor != p.Accessor || got != string(want) {
		t.Fatalf("good session: %+v %v; verifier got the derived secret: %t", q, err, got == string(want))
	}
	calls = 0
	if _, err := e.iam.AuthenticateSessionSigned(ctx, tok, auth.SessionKeyID("acc_000000000000000000000000"), netip.Addr{}, verify); !errors.Is(err, auth.ErrUnauthenticated) || calls != 0 {
		t.Errorf("another key id: %v (verifier called %d times)", err, calls)
	}
	refuse := func(string) error { return auth.ErrUnauthenticated }
	var who *auth.AttributedError
	if _, err := e.iam.AuthenticateSessionSigned(ctx, tok, id, netip.Addr{}, refuse); !errors.As(err, &who) || who.ID != p.Accessor {
		t.Errorf("refused signature: %v, want it attributed to %s", err, p.Accessor)
	}
	if _, err := e.iam.RevokePrincipal(ctx, "kubernetes:kind/team-a/api"); err != nil {
		t.Fatal(err)
	}
	calls = 0
	if _, err := e.iam.AuthenticateSessionSigned(ctx, tok, id, netip.Addr{}, verify); !errors.Is(err, auth.ErrUnauthenticated) || calls != 0 {
		t.Errorf("revoked session: %v (verifier called %d times)", err, calls)
	}
}
