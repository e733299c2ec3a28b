package k8sauth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func newTestJWKSVerifier(tb testing.TB) *JWKSVerifier {
	tb.Helper()
	v, err := NewJWKSVerifier(testIssuer, getKeys(tb).jwks, func() time.Time { return testNow })
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func b64JSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// splice replaces segment i of token.
func splice(token string, i int, seg string) string {
	parts := strings.Split(token, ".")
	parts[i] = seg
	return strings.Join(parts, ".")
}

func TestJWKSVerify(t *testing.T) {
	k := getKeys(t)
	v := newTestJWKSVerifier(t)
	pubDER, err := x509.MarshalPKIXPublicKey(&k.rsa1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	good := mint(t, k.rsa1, jose.RS256, "rsa1", goodClaims())
	wantID := Identity{
		Issuer: testIssuer, Namespace: "team-a", ServiceAccount: "app", ServiceAccountUID: "sa-uid-1",
		PodName: "app-0", PodUID: "pod-uid-1", Audiences: []string{testAudience},
		IssuedAt: testNow.Add(-time.Minute), Expiry: testNow.Add(10 * time.Minute),
	}

	cases := []struct {
		name   string
		token  string
		want   *Identity // nil: refused
		reason string    // part of the refusal's message
	}{
		{name: "valid RSA", token: good, want: &wantID},
		{name: "valid EC", token: mint(t, k.ec1, jose.ES256, "ec1", goodClaims()), want: &wantID},
		{name: "valid ES384 without kid", token: mint(t, k.ec384, jose.ES384, "", goodClaims()), want: &wantID},
		{name: "valid PS256 without kid tries each key", token: mint(t, k.rsa2, jose.PS256, "", goodClaims()), want: &wantID},
		{name: "valid RS512 with a key without alg", token: mint(t, k.rsa2, jose.RS512, "rsa2", goodClaims()), want: &wantID},
		{name: "valid with aud as a string and several audiences", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["aud"] = "coffer" })), want: &wantID},
		{name: "valid without the kubernetes.io claim", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { delete(c, "kubernetes.io") })),
			want: &Identity{Issuer: testIssuer, Namespace: "team-a", ServiceAccount: "app", Audiences: []string{testAudience},
				IssuedAt: testNow.Add(-time.Minute), Expiry: testNow.Add(10 * time.Minute)}},
		{name: "valid: expired 30s ago, inside the leeway", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) {
			c["exp"] = numeric(testNow.Add(-30 * time.Second))
		})), want: &Identity{Issuer: testIssuer, Namespace: "team-a", ServiceAccount: "app", ServiceAccountUID: "sa-uid-1",
			PodName: "app-0", PodUID: "pod-uid-1", Audiences: []string{testAudience},
			IssuedAt: testNow.Add(-time.Minute), Expiry: testNow.Add(-30 * time.Second)}},

		{name: "expired", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["exp"] = numeric(testNow.Add(-2 * time.Minute)) })),
			reason: "expired at 2026-05-01T11:58:00Z"},
		{name: "no exp", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { delete(c, "exp") })),
			reason: "no expiry (exp claim)"},
		{name: "not yet valid (nbf)", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["nbf"] = numeric(testNow.Add(5 * time.Minute)) })),
			reason: "not valid before 2026-05-01T12:05:00Z"},
		{name: "iat in the future beyond the leeway", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["iat"] = numeric(testNow.Add(2 * time.Minute)) })),
			reason: "issued in the future, at 2026-05-01T12:02:00Z"},
		{name: "wrong issuer", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["iss"] = "https://other.example" })),
			reason: `issuer "https://other.example" is not the cluster's issuer "https://kubernetes.default.svc"`},
		{name: "wrong audience", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["aud"] = []string{"vault", "https://kubernetes.default.svc"} })),
			reason: `audience: token is for ["vault" "https://kubernetes.default.svc"], want "coffer"`},
		{name: "missing audience", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { delete(c, "aud") })),
			reason: `audience: the token has no aud claim, want "coffer"`},
		{name: "bad signature: another key under a known kid", token: mint(t, k.otherRSA, jose.RS256, "rsa1", goodClaims()),
			reason: "signature does not verify with any key of the cluster's JWKS"},
		{name: "bad signature: another key without kid", token: mint(t, k.otherRSA, jose.RS256, "", goodClaims()),
			reason: "signature does not verify with any key of the cluster's JWKS"},
		{name: "bad signature: payload swapped", token: splice(good, 1, b64JSON(with(func(c map[string]any) { c["sub"] = "system:serviceaccount:kube-system:admin" }))),
			reason: "signature does not verify with any key of the cluster's JWKS"},
		{name: "bad signature: signature of another token", token: splice(good, 2, strings.Split(mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["jti"] = "x" })), ".")[2]),
			reason: "signature does not verify with any key of the cluster's JWKS"},
		{name: "kid naming no key", token: mint(t, k.rsa1, jose.RS256, "nope", goodClaims()),
			reason: `no key with the token's kid "nope" in the cluster's JWKS`},
		{name: "algorithm does not fit the kid's key", token: mint(t, k.ec1, jose.ES256, "rsa1", goodClaims()),
			reason: `no key of the cluster's JWKS fits the token's algorithm "ES256"`},
		{name: "key's alg pins RS256", token: mint(t, k.rsa1, jose.RS384, "rsa1", goodClaims()),
			reason: `fits the token's algorithm "RS384"`},
		{name: "alg none", token: b64JSON(map[string]string{"alg": "none", "kid": "rsa1"}) + "." + b64JSON(goodClaims()) + ".",
			reason: `signing algorithm "none" is not allowed`},
		{name: "alg missing", token: b64JSON(map[string]string{"kid": "rsa1"}) + "." + b64JSON(goodClaims()) + "." + strings.Split(good, ".")[2],
			reason: "signing algorithm (missing) is not allowed"},
		{name: "alg unknown is not echoed", token: b64JSON(map[string]string{"alg": "RS256\nforged log line"}) + "." + b64JSON(goodClaims()) + "." + strings.Split(good, ".")[2],
			reason: "signing algorithm (unrecognised) is not allowed"},
		{name: "HS256 with the public key as secret", token: mint(t, pubPEM, jose.HS256, "rsa1", goodClaims()),
			reason: `signing algorithm "HS256" is not allowed`},
		{name: "HS256 with the DER public key as secret", token: mint(t, pubDER, jose.HS256, "", goodClaims()),
			reason: `signing algorithm "HS256" is not allowed`},
		{name: "malformed: two segments", token: strings.Join(strings.Split(good, ".")[:2], "."),
			reason: "malformed: a JWT has 3 dot-separated segments, this token has 2"},
		{name: "malformed: four segments", token: good + ".abc", reason: "this token has 4"},
		{name: "malformed: empty", token: "", reason: "malformed: empty token"},
		{name: "malformed: bad base64 in the header", token: splice(good, 0, "eyJ*bGci"), reason: "malformed: the header segment is not unpadded base64url"},
		{name: "malformed: padded base64 payload", token: splice(good, 1, b64JSON(goodClaims())+"=="), reason: "the payload segment is not unpadded base64url"},
		{name: "malformed: bad base64 in the signature", token: splice(good, 2, "sig+/sig"), reason: "the signature segment is not unpadded base64url"},
		{name: "malformed: header not JSON", token: splice(good, 0, b64(`{"alg":"RS256",`)), reason: "malformed: the header is not a JSON object"},
		{name: "malformed: header a JSON string", token: splice(good, 0, b64(`"RS256"`)), reason: "malformed: the header is not a JSON object"},
		{name: "malformed: payload not JSON", token: splice(good, 1, b64(`iss=me`)), reason: "malformed: the payload is not a JSON object"},
		{name: "malformed: claims of the wrong type", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["exp"] = "tomorrow" })),
			reason: "malformed: the claims do not have the registered JSON types"},
		{name: "malformed: kubernetes.io not an object", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["kubernetes.io"] = "team-a" })),
			reason: "malformed: the claims do not have the registered JSON types"},
		{name: "sub not a service account", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["sub"] = "alice" })),
			reason: `not a service-account token: sub "alice" is not system:serviceaccount:NAMESPACE:NAME`},
		{name: "sub missing", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { delete(c, "sub") })),
			reason: `not a service-account token: sub ""`},
		{name: "sub with a bad namespace", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["sub"] = "system:serviceaccount:Team_A:app" })),
			reason: "not a service-account token"},
		{name: "sub with an extra colon", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["sub"] = "system:serviceaccount:team-a:app:x" })),
			reason: "not a service-account token"},
		{name: "kubernetes.io namespace disagrees with sub", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) {
			c["kubernetes.io"].(map[string]any)["namespace"] = "kube-system"
		})), reason: `kubernetes.io namespace "kube-system" disagrees with sub's namespace "team-a"`},
		{name: "kubernetes.io service account disagrees with sub", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) {
			c["kubernetes.io"].(map[string]any)["serviceaccount"] = map[string]any{"name": "admin", "uid": "x"}
		})), reason: `kubernetes.io serviceaccount name "admin" disagrees with sub's name "app"`},
		{name: "kubernetes.io without namespace", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) {
			delete(c["kubernetes.io"].(map[string]any), "namespace")
		})), reason: `kubernetes.io namespace "" disagrees`},
		{name: "oversized token", token: mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["pad"] = strings.Repeat("x", MaxTokenSize) })),
			reason: "more than the 16384 allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.token, testAudience)
			if tc.want == nil {
				checkRefusal(t, err, ErrInvalidToken, tc.reason, tc.token)
				if !errors.Is(err, ErrInvalidToken) || errors.Is(err, ErrUnavailable) {
					t.Errorf("error %v: want ErrInvalidToken only", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !identityEqual(id, *tc.want) {
				t.Errorf("identity\n got %+v\nwant %+v", id, *tc.want)
			}
		})
	}
}

func identityEqual(a, b Identity) bool {
	return a.Issuer == b.Issuer && a.Namespace == b.Namespace && a.ServiceAccount == b.ServiceAccount &&
		a.ServiceAccountUID == b.ServiceAccountUID && a.PodName == b.PodName && a.PodUID == b.PodUID &&
		slices.Equal(a.Audiences, b.Audiences) && a.IssuedAt.Equal(b.IssuedAt) && a.Expiry.Equal(b.Expiry)
}

func TestJWKSVerifyClock(t *testing.T) {
	k := getKeys(t)
	tok := mint(t, k.rsa1, jose.RS256, "rsa1", goodClaims()) // nbf/iat now-1m, exp now+10m
	cases := []struct {
		now    time.Time
		reason string // "" accepted
	}{
		{testNow.Add(-2 * time.Minute), ""},                              // nbf 1m ahead: inside the leeway
		{testNow.Add(-2*time.Minute - time.Second), "not valid before"},  // beyond it
		{testNow.Add(11 * time.Minute), ""},                              // exp 1m ago: inside the leeway
		{testNow.Add(11*time.Minute + time.Second), "expired at"},        // beyond it
		{testNow.Add(-10 * time.Minute), "not valid before"},             // well before
		{testNow.Add(24 * time.Hour), "expired at 2026-05-01T12:10:00Z"}, // well after
	}
	for _, tc := range cases {
		v, err := NewJWKSVerifier(testIssuer, k.jwks, func() time.Time { return tc.now })
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(context.Background(), tok, testAudience)
		if tc.reason == "" {
			if err != nil {
				t.Errorf("at %s: %v", tc.now, err)
			}
			continue
		}
		checkRefusal(t, err, ErrInvalidToken, tc.reason, tok)
		// Only an expired token is ErrExpired (the AWS door tells the
		// client to read its token again instead of retrying it).
		if expired := strings.HasPrefix(tc.reason, "expired"); errors.Is(err, ErrExpired) != expired {
			t.Errorf("at %s: errors.Is(%v, ErrExpired) = %v, want %v", tc.now, err, !expired, expired)
		}
	}
}

func TestJWKSVerifyNeedsAudience(t *testing.T) {
	v := newTestJWKSVerifier(t)
	tok := mint(t, getKeys(t).rsa1, jose.RS256, "rsa1", goodClaims())
	_, err := v.Verify(context.Background(), tok, "")
	if err == nil || errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("Verify with no audience: %v; want a non-token error about the audience", err)
	}
}

func TestNewJWKSVerifierRejects(t *testing.T) {
	k := getKeys(t)
	marshal := func(keys ...jose.JSONWebKey) []byte {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pub := jose.JSONWebKey{Key: &k.rsa1.PublicKey, KeyID: "ok"}
	small := mustRSA(1024)
	cases := []struct {
		name, issuer string
		jwks         []byte
		reason       string
	}{
		{"empty set", testIssuer, []byte(`{"keys":[]}`), "JWKS has no keys"},
		{"no keys member", testIssuer, []byte(`{}`), "JWKS has no keys"},
		{"not JSON", testIssuer, []byte(`keys`), "not a JSON object"},
		{"empty issuer", "", k.jwks, "issuer is empty"},
		{"private RSA key", testIssuer, marshal(pub, jose.JSONWebKey{Key: k.rsa2, KeyID: "priv"}), `key 1: key (kid "priv") is a private key`},
		{"private EC key", testIssuer, marshal(jose.JSONWebKey{Key: k.ec1, KeyID: "ecpriv"}), `key (kid "ecpriv") is a private key`},
		{"oct key", testIssuer, marshal(pub, jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac"}), `key (kid "hmac") is a symmetric key`},
		{"oct key without k", testIssuer, []byte(`{"keys":[{"kty":"oct","kid":"s"}]}`), "symmetric key"},
		{"unknown kty", testIssuer, []byte(`{"keys":[{"kty":"XYZ","kid":"x"}]}`), `kty "XYZ"; only RSA and EC public keys`},
		{"OKP key", testIssuer, []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`), `kty "OKP"`},
		{"missing kty", testIssuer, []byte(`{"keys":[{"kid":"x","n":"AQAB","e":"AQAB"}]}`), "has no kty"},
		{"RSA key too small", testIssuer, marshal(jose.JSONWebKey{Key: &small.PublicKey, KeyID: "small"}), "1024-bit RSA key"},
		{"encryption key", testIssuer, marshal(jose.JSONWebKey{Key: &k.rsa1.PublicKey, KeyID: "enc", Use: "enc"}), `use "enc"`},
		{"HMAC alg on an RSA key", testIssuer, marshal(jose.JSONWebKey{Key: &k.rsa1.PublicKey, KeyID: "x", Algorithm: "HS256"}), `alg "HS256"`},
		{"EC alg on an RSA key", testIssuer, marshal(jose.JSONWebKey{Key: &k.rsa1.PublicKey, KeyID: "x", Algorithm: "ES256"}), "does not fit its key type"},
		{"broken RSA key", testIssuer, []byte(`{"keys":[{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}]}`), `key (kid "x")`},
		{"key not an object", testIssuer, []byte(`{"keys":["abc"]}`), "key 0: not a JSON object"},
		{"oversized", testIssuer, []byte(`{"keys":[` + strings.Repeat(" ", MaxJWKSSize) + `]}`), "more than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewJWKSVerifier(tc.issuer, tc.jwks, nil)
			if err == nil {
				t.Fatalf("accepted (keys %v)", v.KeyIDs())
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
		})
	}
}

func TestNewJWKSVerifierAccepts(t *testing.T) {
	k := getKeys(t)
	v, err := NewJWKSVerifier(testIssuer, k.jwks, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.KeyIDs(); !slices.Equal(got, []string{"rsa1", "rsa2", "ec1", ""}) {
		t.Errorf("KeyIDs = %q", got)
	}
	if v.Issuer() != testIssuer {
		t.Errorf("Issuer = %q", v.Issuer())
	}
	// The real clock: a token valid now verifies.
	now := time.Now()
	tok := mint(t, k.ec1, jose.ES256, "ec1", with(func(c map[string]any) {
		c["iat"], c["nbf"], c["exp"] = now.Unix(), now.Unix(), now.Add(time.Hour).Unix()
	}))
	if _, err := v.Verify(context.Background(), tok, testAudience); err != nil {
		t.Fatal(err)
	}
}

func FuzzVerify(f *testing.F) {
	k := getKeys(f)
	v := newTestJWKSVerifier(f)
	good := mint(f, k.rsa1, jose.RS256, "rsa1", goodClaims())
	for _, s := range []string{
		good,
		mint(f, k.ec1, jose.ES256, "ec1", goodClaims()),
		mint(f, k.rsa2, jose.PS256, "", goodClaims()),
		mint(f, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["aud"] = "coffer" })),
		b64JSON(map[string]string{"alg": "none"}) + "." + b64JSON(goodClaims()) + ".",
		splice(good, 1, b64JSON(with(func(c map[string]any) { c["kubernetes.io"] = []int{1} }))),
		"", ".", "..", "a.b.c", "eyJ.eyJ.", good + ".",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(context.Background(), token, testAudience)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			return
		}
		if id.Namespace == "" || id.ServiceAccount == "" || id.Issuer != testIssuer || !slices.Contains(id.Audiences, testAudience) {
			t.Fatalf("accepted with identity %+v", id)
		}
	})
}

// TestUnknownKeyIsMarked: only a kid the set does not hold is ErrUnknownKey
// (worth fetching the JWKS again); a bad signature under a known kid is not.
func TestUnknownKeyIsMarked(t *testing.T) {
	k := getKeys(t)
	v, err := NewJWKSVerifier(testIssuer, k.jwks, func() time.Time { return testNow })
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), mint(t, k.rsa1, jose.RS256, "rotated", goodClaims()), testAudience)
	if !errors.Is(err, ErrUnknownKey) || !errors.Is(err, ErrInvalidToken) || !strings.HasPrefix(err.Error(), "k8sauth: invalid token: no key") {
		t.Fatalf("unknown kid: %v", err)
	}
	_, err = v.Verify(t.Context(), mint(t, k.otherRSA, jose.RS256, "rsa1", goodClaims()), testAudience)
	if errors.Is(err, ErrUnknownKey) || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("bad signature under a known kid: %v", err)
	}
}
