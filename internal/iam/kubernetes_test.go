package iam

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cofferkms/coffer/internal/auth"
)

// TestJWKSRefreshOnRotation: a cluster registered by discovery picks up a
// rotated signing key the first time a token names it, fetching the JWKS
// at most once a minute however many unknown kids are presented.
func TestJWKSRefreshOnRotation(t *testing.T) {
	e := newEnv(t)
	key1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var mu sync.Mutex
	published := []jose.JSONWebKey{{Key: &key1.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}
	var fetches atomic.Int32
	var ts *httptest.Server
	ts = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]string{"issuer": "https://kubernetes.default.svc", "jwks_uri": ts.URL + "/openid/v1/jwks"})
		case "/openid/v1/jwks":
			fetches.Add(1)
			mu.Lock()
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: published})
			mu.Unlock()
		default:
			http.NotFound(w, r)
		}
	}))
	defer ts.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}))
	if _, err := e.iam.RegisterCluster(ctx, Cluster{Name: "prod", Mode: ModeJWKS, DiscoveryURL: ts.URL, CACert: ca}); err != nil {
		t.Fatal(err)
	}
	e.policy(t, "enc", allowEncryptApp)
	if _, err := e.iam.CreateRole(ctx, Role{Name: "app", Policies: []string{"enc"},
		Kubernetes: []KubernetesTrust{{Cluster: "prod", Namespace: "team-a", ServiceAccount: "api"}}}); err != nil {
		t.Fatal(err)
	}
	mint := func(key *ecdsa.PrivateKey, kid string) string {
		sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
		c := jwt.Claims{Issuer: "https://kubernetes.default.svc", Subject: "system:serviceaccount:team-a:api", Audience: jwt.Audience{"coffer"},
			IssuedAt: jwt.NewNumericDate(e.now), Expiry: jwt.NewNumericDate(e.now.Add(10 * time.Minute))}
		tok, err := jwt.Signed(sig).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	login := func(tok string) error {
		_, _, err := e.iam.KubernetesLogin(ctx, KubernetesLoginRequest{Role: "app", JWT: tok})
		return err
	}
	if err := login(mint(key1, "k1")); err != nil {
		t.Fatalf("login with the registered key: %v", err)
	}
	start := fetches.Load()

	// The cluster rotates: k2 is published; a k2 token logs in after one
	// refresh.
	mu.Lock()
	published = append(published, jose.JSONWebKey{Key: &key2.PublicKey, KeyID: "k2", Algorithm: "ES256", Use: "sig"})
	mu.Unlock()
	if err := login(mint(key2, "k2")); err != nil {
		t.Fatalf("login with the rotated key: %v", err)
	}
	if n := fetches.Load() - start; n != 1 {
		t.Fatalf("%d JWKS fetches for one rotation, want 1", n)
	}
	// The new key set is stored: a fresh service loads it.
	n := New(e.store, e.tokens, e.keys, func() time.Time { return e.now })
	if err := n.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.KubernetesLogin(ctx, KubernetesLoginRequest{Role: "app", JWT: mint(key2, "k2")}); err != nil {
		t.Fatalf("after reload: %v", err)
	}

	// Unknown kids do not make the server fetch more than once a minute.
	e.now = e.now.Add(2 * time.Minute)
	for range 5 {
		if err := login(mint(key2, "nope")); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if n := fetches.Load() - start; n != 2 {
		t.Fatalf("%d fetches after 5 unknown kids, want 2 (one per minute)", n)
	}
}
