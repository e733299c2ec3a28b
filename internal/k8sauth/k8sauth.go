// Package k8sauth verifies Kubernetes service-account tokens, so that a pod
// can prove which service account it runs as (workload identity).
//
// A pod reads its projected service-account token, a JWT that
// kube-apiserver signed for an audience the pod asked for (Coffer's, for
// example "coffer"), and presents it. A Verifier answers who the token
// belongs to, as an Identity (namespace, service account and its UID,
// pod), or says why the token is not acceptable.
//
// There are two ways to verify, one per registered cluster:
//
//   - JWKSVerifier (NewJWKSVerifier) checks the token locally against the
//     cluster's service-account issuer and its JSON Web Key Set, the public
//     keys kube-apiserver serves at /openid/v1/jwks. Discover fetches both
//     through OIDC discovery. It needs no call per token, but it cannot know
//     that a service account or pod was deleted after the token was issued:
//     the token stays valid until it expires.
//   - TokenReviewVerifier (NewTokenReviewVerifier) asks the cluster's
//     apiserver (the TokenReview API) for every token. The apiserver also
//     checks that the service account, and the pod the token is bound to,
//     still exist. It costs one round trip per token and needs a reviewer
//     credential allowed to create tokenreviews (system:auth-delegator).
//
// Errors: a token that is not acceptable gives an error wrapping
// ErrInvalidToken (answer 401); an apiserver that cannot be asked gives one
// wrapping ErrUnavailable (answer 503). Messages say which check failed
// but never contain the token or any raw part of it, so they can be logged
// and returned to the caller.
//
// Verifiers are immutable and safe for concurrent use.
package k8sauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Identity is a verified Kubernetes service account.
type Identity struct {
	// Issuer is the token's iss claim (the cluster's service-account
	// issuer).
	Issuer string
	// Namespace and ServiceAccount name the service account.
	Namespace, ServiceAccount string
	// ServiceAccountUID is the service account's UID; it tells a
	// re-created account from the old one. Empty when the token does not
	// carry it.
	ServiceAccountUID string
	// PodName and PodUID name the pod the token is bound to; empty for a
	// token not bound to a pod.
	PodName, PodUID string
	// Audiences the token is valid for. In JWKS mode all of the token's
	// audiences; in TokenReview mode those the apiserver confirmed (the
	// requested one).
	Audiences []string
	// IssuedAt and Expiry are the token's iat and exp claims; zero when
	// absent.
	IssuedAt, Expiry time.Time
}

// Verifier verifies a service-account token presented for audience and
// returns whose it is. audience must not be empty.
type Verifier interface {
	Verify(ctx context.Context, token, audience string) (Identity, error)
}

var (
	// ErrInvalidToken is wrapped by every error that means the token is
	// not acceptable: malformed, badly signed, expired, for another
	// issuer or audience, not a service account's, or rejected by the
	// apiserver.
	ErrInvalidToken = errors.New("k8sauth: invalid token")
	// ErrUnavailable is wrapped by errors that mean the apiserver could
	// not be asked or gave no usable answer; the token may be fine.
	ErrUnavailable = errors.New("k8sauth: apiserver unavailable")
	// ErrUnknownKey is wrapped (with ErrInvalidToken) when a token names
	// a kid the JWKS does not hold: the cluster may have rotated its
	// signing key, so fetching its JWKS again may help.
	ErrUnknownKey = errors.New("k8sauth: unknown signing key")
	// ErrExpired is wrapped (with ErrInvalidToken) when a verifier that
	// checks the token itself (JWKS) finds it past its exp: a client
	// should read its projected token again, not retry this one.
	ErrExpired = errors.New("k8sauth: token expired")
)

// expiredError is an ErrInvalidToken that is also an ErrExpired.
type expiredError struct{ msg string }

func (e *expiredError) Error() string { return ErrInvalidToken.Error() + ": " + e.msg }

// Is matches ErrInvalidToken and ErrExpired.
func (e *expiredError) Is(target error) bool {
	return target == ErrInvalidToken || target == ErrExpired
}

// unknownKeyError is an ErrInvalidToken that is also an ErrUnknownKey.
type unknownKeyError struct{ msg string }

func (e *unknownKeyError) Error() string { return ErrInvalidToken.Error() + ": " + e.msg }

// Is matches ErrInvalidToken and ErrUnknownKey.
func (e *unknownKeyError) Is(target error) bool {
	return target == ErrInvalidToken || target == ErrUnknownKey
}

const (
	// MaxTokenSize bounds the length of a token, checked before parsing.
	// Kubernetes tokens are about 1 KiB.
	MaxTokenSize = 16 << 10
	// Leeway is the clock skew allowed when checking exp, nbf and iat.
	Leeway = 60 * time.Second
	// saPrefix starts the subject (and TokenReview username) of a
	// service account: system:serviceaccount:NAMESPACE:NAME.
	saPrefix = "system:serviceaccount:"
)

// allowedAlgs are the signature algorithms a token may use: asymmetric
// only. "none" and the HMAC algorithms (HS256, ...) are refused, so a
// public key can never serve as a shared secret.
var allowedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.ES512,
}

// invalid returns an error wrapping ErrInvalidToken.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, fmt.Sprintf(format, args...))
}

// unavailable returns an error wrapping ErrUnavailable.
func unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnavailable, fmt.Sprintf(format, args...))
}

// kubeClaim is the "kubernetes.io" private claim of a bound
// service-account token.
type kubeClaim struct {
	Namespace      string  `json:"namespace"`
	ServiceAccount *objRef `json:"serviceaccount"`
	Pod            *objRef `json:"pod"`
}

type objRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

type privateClaims struct {
	Kubernetes *kubeClaim `json:"kubernetes.io"`
}

// parsedToken is a JWT whose structure was checked; its claims are not
// verified yet.
type parsedToken struct {
	jws    *jwt.JSONWebToken
	header jose.Header
	claims jwt.Claims
	kube   *kubeClaim
}

// parseToken checks the token's size and structure and decodes its header
// and claims without verifying anything. Its errors wrap ErrInvalidToken
// and describe the token's shape only.
func parseToken(token string) (*parsedToken, error) {
	if len(token) > MaxTokenSize {
		return nil, invalid("malformed: token is %d bytes, more than the %d allowed", len(token), MaxTokenSize)
	}
	if token == "" {
		return nil, invalid("malformed: empty token")
	}
	segs := strings.Split(token, ".")
	if len(segs) != 3 {
		return nil, invalid("malformed: a JWT has 3 dot-separated segments, this token has %d", len(segs))
	}
	names := [3]string{"header", "payload", "signature"}
	var dec [3][]byte
	for i, s := range segs {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return nil, invalid("malformed: the %s segment is not unpadded base64url", names[i])
		}
		dec[i] = b
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if !isJSONObject(dec[0]) || json.Unmarshal(dec[0], &hdr) != nil {
		return nil, invalid("malformed: the header is not a JSON object")
	}
	if !isJSONObject(dec[1]) {
		return nil, invalid("malformed: the payload is not a JSON object")
	}
	if !algAllowed(hdr.Alg) {
		return nil, invalid("signing algorithm %s is not allowed (want one of %s)", describeAlg(hdr.Alg), algList())
	}
	jws, err := jwt.ParseSigned(token, allowedAlgs)
	if err != nil {
		// go-jose's message may quote header content; keep it out.
		return nil, invalid("malformed: not a JWS in compact serialization with one signature")
	}
	if len(jws.Headers) != 1 {
		return nil, invalid("malformed: want exactly one signature, got %d", len(jws.Headers))
	}
	p := &parsedToken{jws: jws, header: jws.Headers[0]}
	var priv privateClaims
	if err := jws.UnsafeClaimsWithoutVerification(&p.claims, &priv); err != nil {
		return nil, invalid("malformed: the claims do not have the registered JSON types (iss, sub string; aud string or list; exp, nbf, iat numbers; kubernetes.io object)")
	}
	p.kube = priv.Kubernetes
	return p, nil
}

func isJSONObject(b []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

func algAllowed(alg string) bool {
	for _, a := range allowedAlgs {
		if string(a) == alg {
			return true
		}
	}
	return false
}

func algList() string {
	s := make([]string, len(allowedAlgs))
	for i, a := range allowedAlgs {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}

// knownAlgs are the JOSE algorithm names a refusal may quote back; any
// other value of the token's alg header is not echoed.
var knownAlgs = map[string]bool{
	"none": true, "HS256": true, "HS384": true, "HS512": true, "EdDSA": true, "Ed25519": true,
	"PS384": true, "PS512": true, "ES256K": true,
}

func describeAlg(alg string) string {
	switch {
	case alg == "":
		return "(missing)"
	case knownAlgs[alg] || algAllowed(alg):
		return strconv.Quote(alg)
	default:
		return "(unrecognised)"
	}
}

// parseSubject splits "system:serviceaccount:NS:NAME".
func parseSubject(sub string) (ns, name string, ok bool) {
	rest, found := strings.CutPrefix(sub, saPrefix)
	if !found {
		return "", "", false
	}
	ns, name, found = strings.Cut(rest, ":")
	if !found || !isDNSLabel(ns) || !isDNSSubdomain(name) {
		return "", "", false
	}
	return ns, name, true
}

// isDNSLabel reports whether s is an RFC 1123 label (a namespace name).
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

// isDNSSubdomain reports whether s is an RFC 1123 subdomain (a service
// account name).
func isDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

// quote renders a claim value for an error message: truncated, quoted,
// control characters escaped.
func quote(s string) string { return strconv.Quote(truncate(s, 128)) }

func quoteList(ss []string) string {
	if len(ss) > 8 {
		ss = append(ss[:8:8], fmt.Sprintf("... %d more", len(ss)-8))
	}
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quote(s)
	}
	return "[" + strings.Join(q, " ") + "]"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// sanitize prepares text from elsewhere (an apiserver's message) for an
// error: the token and its segments are cut out, control characters
// dropped, the length bounded.
func sanitize(msg, token string, n int) string {
	if token != "" {
		msg = strings.ReplaceAll(msg, token, "[token]")
		for _, seg := range strings.Split(token, ".") {
			if len(seg) >= 8 {
				msg = strings.ReplaceAll(msg, seg, "[token]")
			}
		}
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, msg)
	return truncate(strings.TrimSpace(msg), n)
}

func timeOf(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time()
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

var errNoAudience = errors.New("k8sauth: Verify needs a non-empty audience to check the token against")
