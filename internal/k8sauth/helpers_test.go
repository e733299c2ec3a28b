package k8sauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	testIssuer   = "https://kubernetes.default.svc"
	testAudience = "coffer"
)

// testNow is the verifier's clock in the tests.
var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// testKeys are generated once per test binary (RSA generation is slow).
type testKeys struct {
	rsa1, rsa2, otherRSA *rsa.PrivateKey
	ec1, ec384           *ecdsa.PrivateKey
	jwks                 []byte
}

var (
	keysOnce sync.Once
	keys     testKeys
)

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// getKeys returns the test keys and the JWKS of their public halves:
// rsa1 (alg RS256, as kube-apiserver publishes), rsa2 (no alg), ec1
// (P-256, ES256) and ec384 (P-384, no kid).
func getKeys(tb testing.TB) *testKeys {
	tb.Helper()
	keysOnce.Do(func() {
		keys.rsa1, keys.rsa2, keys.otherRSA = mustRSA(2048), mustRSA(2048), mustRSA(2048)
		keys.ec1, keys.ec384 = mustEC(elliptic.P256()), mustEC(elliptic.P384())
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &keys.rsa1.PublicKey, KeyID: "rsa1", Algorithm: "RS256", Use: "sig"},
			{Key: &keys.rsa2.PublicKey, KeyID: "rsa2", Use: "sig"},
			{Key: &keys.ec1.PublicKey, KeyID: "ec1", Algorithm: "ES256", Use: "sig"},
			{Key: &keys.ec384.PublicKey},
		}}
		var err error
		if keys.jwks, err = json.Marshal(set); err != nil {
			panic(err)
		}
	})
	return &keys
}

func numeric(t time.Time) int64 { return t.Unix() }

// goodClaims are the claims of a bound token of team-a/app in pod app-0.
func goodClaims() map[string]any {
	return map[string]any{
		"iss": testIssuer,
		"aud": []string{testAudience},
		"sub": "system:serviceaccount:team-a:app",
		"exp": numeric(testNow.Add(10 * time.Minute)),
		"iat": numeric(testNow.Add(-time.Minute)),
		"nbf": numeric(testNow.Add(-time.Minute)),
		"kubernetes.io": map[string]any{
			"namespace":      "team-a",
			"serviceaccount": map[string]any{"name": "app", "uid": "sa-uid-1"},
			"pod":            map[string]any{"name": "app-0", "uid": "pod-uid-1"},
		},
	}
}

// with returns goodClaims changed by f.
func with(f func(c map[string]any)) map[string]any {
	c := goodClaims()
	f(c)
	return c
}

// mint signs claims with key using alg, with the kid header when kid is
// not empty.
func mint(tb testing.TB, key any, alg jose.SignatureAlgorithm, kid string, claims any) string {
	tb.Helper()
	opts := &jose.SignerOptions{}
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// checkRefusal asserts that err wraps want, names the reason and quotes
// no raw part of token.
func checkRefusal(t *testing.T, err, want error, reason, token string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want a refusal with %q", reason)
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %q does not wrap %v", err, want)
	}
	msg := err.Error()
	if !strings.Contains(msg, reason) {
		t.Errorf("error %q does not say %q", msg, reason)
	}
	noTokenIn(t, msg, token)
}

// noTokenIn asserts that msg contains neither token nor any of its
// segments of 16 bytes or more (shorter ones are too likely to occur by
// chance), in particular not the signature.
func noTokenIn(t *testing.T, msg, token string) {
	t.Helper()
	if token == "" {
		return
	}
	if strings.Contains(msg, token) {
		t.Errorf("error message contains the token: %q", msg)
	}
	for i, seg := range strings.Split(token, ".") {
		if len(seg) >= 16 && strings.Contains(msg, seg) {
			t.Errorf("error message contains segment %d of the token: %q", i, msg)
		}
	}
}

// otherCA returns the PEM of a freshly made self-signed CA certificate,
// which vouches for no test server (httptest servers all share one
// built-in certificate).
func otherCA(tb testing.TB) []byte {
	tb.Helper()
	key := mustEC(elliptic.P256())
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "not the apiserver's CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
