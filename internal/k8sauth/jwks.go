package k8sauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	// MaxJWKSSize bounds a JSON Web Key Set (and any discovery response).
	MaxJWKSSize = 1 << 20
	// minRSABits is the smallest RSA key a JWKS may hold.
	minRSABits = 2048
)

// JWKSVerifier verifies tokens locally against a cluster's
// service-account issuer and public keys. Make one with NewJWKSVerifier.
type JWKSVerifier struct {
	issuer string
	keys   []jose.JSONWebKey
	now    func() time.Time
}

var _ Verifier = (*JWKSVerifier)(nil)

// NewJWKSVerifier returns a verifier for tokens whose iss claim is issuer,
// signed by a key of jwks, a JSON Web Key Set as kube-apiserver serves at
// /openid/v1/jwks (or Discover returns). The set must hold at least one
// key and only public RSA (2048 bits or more) or EC (P-256, P-384, P-521)
// signing keys; a private key, a symmetric ("oct") key, an unknown kty or
// a key for encryption is refused with an error naming the key. now is the
// clock (nil means time.Now).
func NewJWKSVerifier(issuer string, jwks []byte, now func() time.Time) (*JWKSVerifier, error) {
	if issuer == "" {
		return nil, errors.New("k8sauth: the cluster's service-account issuer is empty")
	}
	keys, err := parseJWKS(jwks)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &JWKSVerifier{issuer: issuer, keys: keys, now: now}, nil
}

// Issuer returns the service-account issuer the verifier expects.
func (v *JWKSVerifier) Issuer() string { return v.issuer }

// KeyIDs returns the kid of each key in the set, in order ("" for a key
// without one).
func (v *JWKSVerifier) KeyIDs() []string {
	ids := make([]string, len(v.keys))
	for i, k := range v.keys {
		ids[i] = k.KeyID
	}
	return ids
}

// parseJWKS decodes and checks a JSON Web Key Set.
func parseJWKS(b []byte) ([]jose.JSONWebKey, error) {
	if len(b) > MaxJWKSSize {
		return nil, fmt.Errorf("k8sauth: JWKS is %d bytes, more than %d", len(b), MaxJWKSSize)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("k8sauth: JWKS is not a JSON object with a \"keys\" list: %v", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("k8sauth: JWKS has no keys")
	}
	keys := make([]jose.JSONWebKey, 0, len(set.Keys))
	for i, raw := range set.Keys {
		k, err := parseJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("k8sauth: JWKS key %d: %w", i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// privateMembers are the JWK members (RFC 7518 section 6) that only a
// private or symmetric key has.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

func parseJWK(raw json.RawMessage) (jose.JSONWebKey, error) {
	var k jose.JSONWebKey
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		return k, errors.New("not a JSON object")
	}
	var head struct {
		Kty, Kid, Use, Alg string
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return k, errors.New("kty, kid, use and alg must be strings")
	}
	name := ""
	if head.Kid != "" {
		name = " (kid " + quote(head.Kid) + ")"
	}
	switch head.Kty {
	case "RSA", "EC":
	case "oct":
		return k, fmt.Errorf("key%s is a symmetric key (kty \"oct\"); only RSA and EC public keys are accepted", name)
	case "":
		return k, fmt.Errorf("key%s has no kty", name)
	default:
		return k, fmt.Errorf("key%s has kty %s; only RSA and EC public keys are accepted", name, quote(head.Kty))
	}
	for _, m := range privateMembers {
		if _, ok := members[m]; ok {
			return k, fmt.Errorf("key%s is a private key (it has %q); put only public keys in the set", name, m)
		}
	}
	if head.Use != "" && head.Use != "sig" {
		return k, fmt.Errorf("key%s has use %s, want \"sig\"", name, quote(head.Use))
	}
	if err := k.UnmarshalJSON(raw); err != nil {
		return k, fmt.Errorf("key%s: %v", name, err)
	}
	if !k.IsPublic() || !k.Valid() {
		return k, fmt.Errorf("key%s is not a valid public key", name)
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits {
			return k, fmt.Errorf("key%s is a %d-bit RSA key; at least %d bits are required", name, bits, minRSABits)
		}
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return k, fmt.Errorf("key%s is on an unsupported curve", name)
		}
	default:
		return k, fmt.Errorf("key%s is of type %T; only RSA and EC public keys are accepted", name, k.Key)
	}
	if k.Algorithm != "" {
		if !algAllowed(k.Algorithm) {
			return k, fmt.Errorf("key%s has alg %s; allowed are %s", name, quote(k.Algorithm), algList())
		}
		if !keyFitsAlg(k, jose.SignatureAlgorithm(k.Algorithm)) {
			return k, fmt.Errorf("key%s has alg %s, which does not fit its key type", name, quote(k.Algorithm))
		}
	}
	return k, nil
}

// keyFitsAlg reports whether key k can verify signatures made with alg
// (and, when the key names its alg, that it is this one).
func keyFitsAlg(k jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		return alg == jose.RS256 || alg == jose.RS384 || alg == jose.RS512 || alg == jose.PS256
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return pub.Curve == elliptic.P256()
		case jose.ES384:
			return pub.Curve == elliptic.P384()
		case jose.ES512:
			return pub.Curve == elliptic.P521()
		}
	}
	return false
}

// Verify checks token for audience: structure and size, an allowed
// algorithm, the signature against the set (the key named by the token's
// kid, or else each key), then iss, aud, exp, nbf and iat (with Leeway),
// and that sub names a service account that the kubernetes.io claim, when
// present, agrees with. Every refusal wraps ErrInvalidToken; an empty
// audience is the caller's mistake and gives an error that does not.
func (v *JWKSVerifier) Verify(_ context.Context, token, audience string) (Identity, error) {
	if audience == "" {
		return Identity{}, errNoAudience
	}
	p, err := parseToken(token)
	if err != nil {
		return Identity{}, err
	}
	if err := v.checkSignature(p); err != nil {
		return Identity{}, err
	}
	c := &p.claims
	if c.Issuer != v.issuer {
		return Identity{}, invalid("issuer %s is not the cluster's issuer %s", quote(c.Issuer), quote(v.issuer))
	}
	if len(c.Audience) == 0 {
		return Identity{}, invalid("audience: the token has no aud claim, want %s", quote(audience))
	}
	if !c.Audience.Contains(audience) {
		return Identity{}, invalid("audience: token is for %s, want %s", quoteList(c.Audience), quote(audience))
	}
	if err := checkTimes(c, v.now()); err != nil {
		return Identity{}, err
	}
	return identityFromClaims(p)
}

// checkSignature verifies p's signature with the matching key of the set.
func (v *JWKSVerifier) checkSignature(p *parsedToken) error {
	alg := jose.SignatureAlgorithm(p.header.Algorithm)
	kid := p.header.KeyID
	tried := 0
	for _, k := range v.keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if !keyFitsAlg(k, alg) {
			continue
		}
		tried++
		// Claims with no destination only verifies the signature (the
		// claims were decoded from the same payload bytes by parseToken).
		if err := p.jws.Claims(k.Key); err == nil {
			return nil
		}
	}
	if tried == 0 {
		if kid != "" && !v.hasKid(kid) {
			return &unknownKeyError{fmt.Sprintf("no key with the token's kid %s in the cluster's JWKS (known: %s)", quote(kid), quoteList(v.KeyIDs()))}
		}
		return invalid("no key of the cluster's JWKS fits the token's algorithm %s", strconv.Quote(string(alg)))
	}
	return invalid("signature does not verify with any key of the cluster's JWKS")
}

func (v *JWKSVerifier) hasKid(kid string) bool {
	for _, k := range v.keys {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}

// checkTimes checks exp (required), nbf and iat against now with Leeway.
func checkTimes(c *jwt.Claims, now time.Time) error {
	if c.Expiry == nil {
		return invalid("the token has no expiry (exp claim); bound service-account tokens always have one")
	}
	if exp := c.Expiry.Time(); now.After(exp.Add(Leeway)) {
		return &expiredError{msg: "expired at " + fmtTime(exp)}
	}
	if c.NotBefore != nil {
		if nbf := c.NotBefore.Time(); now.Add(Leeway).Before(nbf) {
			return invalid("not valid before %s", fmtTime(nbf))
		}
	}
	if c.IssuedAt != nil {
		if iat := c.IssuedAt.Time(); now.Add(Leeway).Before(iat) {
			return invalid("issued in the future, at %s", fmtTime(iat))
		}
	}
	return nil
}

// identityFromClaims checks that sub names a service account and that the
// kubernetes.io claim agrees with it, and builds the Identity.
func identityFromClaims(p *parsedToken) (Identity, error) {
	c := &p.claims
	ns, name, ok := parseSubject(c.Subject)
	if !ok {
		return Identity{}, invalid("not a service-account token: sub %s is not system:serviceaccount:NAMESPACE:NAME", quote(c.Subject))
	}
	id := Identity{
		Issuer:         c.Issuer,
		Namespace:      ns,
		ServiceAccount: name,
		Audiences:      append([]string(nil), c.Audience...),
		IssuedAt:       timeOf(c.IssuedAt),
		Expiry:         timeOf(c.Expiry),
	}
	if k := p.kube; k != nil {
		if k.Namespace != ns {
			return Identity{}, invalid("not a service-account token: kubernetes.io namespace %s disagrees with sub's namespace %s", quote(k.Namespace), quote(ns))
		}
		if sa := k.ServiceAccount; sa != nil {
			if sa.Name != name {
				return Identity{}, invalid("not a service-account token: kubernetes.io serviceaccount name %s disagrees with sub's name %s", quote(sa.Name), quote(name))
			}
			id.ServiceAccountUID = sa.UID
		}
		if pod := k.Pod; pod != nil {
			id.PodName, id.PodUID = pod.Name, pod.UID
		}
	}
	return id, nil
}
