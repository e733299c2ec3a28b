// Package awskms holds the protocol pieces of Coffer's AWS KMS door (the
// JSON 1.1 "TrentService" API): Signature Version 4 verification, the
// key ARNs Coffer answers with and accepts, and the request and response
// shapes of the operations. It makes no decision about keys: the server
// package routes each operation through the same handler path as the REST
// API (authentication, authorization, audit, body limits) and calls the
// same key service methods.
package awskms

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Service is the signing name of the KMS API in a credential scope.
const Service = "kms"

// MaxSkew is how far a request's X-Amz-Date may be from the server's clock.
const MaxSkew = 15 * time.Minute

const (
	algorithm  = "AWS4-HMAC-SHA256"
	dateFormat = "20060102T150405Z"
)

// ErrSignature marks a request whose signature was checked and refused
// (another secret, body, host or header, or a date outside the skew):
// AWS's InvalidSignatureException. Other authentication failures (no or
// malformed Authorization, unknown or disabled keys) are
// UnrecognizedClientException.
var ErrSignature = errors.New("the request signature does not match")

// Signed is what a request's Authorization header declares.
type Signed struct {
	AccessKeyID   string
	Date          string // yyyymmdd of the credential scope
	Region        string
	SignedHeaders []string
	Signature     []byte
	Time          time.Time // X-Amz-Date
	// Service is the signing name of the credential scope (kms, sts).
	Service string
}

// Parse reads the SigV4 Authorization header and X-Amz-Date of r. Its
// errors never repeat the signature.
func Parse(r *http.Request) (Signed, error) {
	return ParseFor(r, Service, "x-amz-target")
}

// ParseFor is Parse for the API of signing name service (kms, sts), whose
// signature must cover the headers need besides host and x-amz-date.
func ParseFor(r *http.Request, service string, need ...string) (Signed, error) {
	h := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(h, algorithm+" ")
	if !ok {
		return Signed{}, fmt.Errorf("the Authorization header must be an %s signature (AWS Signature Version 4)", algorithm)
	}
	var s Signed
	var cred, sig string
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			s.SignedHeaders = strings.Split(v, ";")
		case "Signature":
			sig = v
		}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || scope[0] == "" {
		return Signed{}, fmt.Errorf("the signature's Credential must be ACCESS_KEY_ID/DATE/REGION/%s/aws4_request", service)
	}
	if scope[3] != service {
		return Signed{}, fmt.Errorf("the signature's credential scope names service %q; this API is %q", truncate(scope[3]), service)
	}
	s.AccessKeyID, s.Date, s.Region, s.Service = scope[0], scope[1], scope[2], service
	b, err := hex.DecodeString(sig)
	if err != nil || len(b) != sha256.Size {
		return Signed{}, errors.New("the signature's Signature must be 64 hex digits")
	}
	s.Signature = b
	if len(s.SignedHeaders) == 0 || !slices.IsSorted(s.SignedHeaders) {
		return Signed{}, errors.New("the signature's SignedHeaders must list the signed headers in order")
	}
	for _, need := range append([]string{"host", "x-amz-date"}, need...) {
		if !slices.Contains(s.SignedHeaders, need) {
			return Signed{}, fmt.Errorf("the signature must cover the %s header", need)
		}
	}
	d := r.Header.Get("X-Amz-Date")
	if d == "" {
		return Signed{}, errors.New("the X-Amz-Date header is missing")
	}
	if s.Time, err = time.Parse(dateFormat, d); err != nil {
		return Signed{}, errors.New("the X-Amz-Date header must be yyyymmddThhmmssZ")
	}
	if s.Time.Format("20060102") != s.Date {
		return Signed{}, errors.New("the credential scope's date is not the date of X-Amz-Date")
	}
	return s, nil
}

// Verify checks that sig was made with secret over r with body (the bytes
// the server read), in region, at a time within MaxSkew of now. It signs
// again, with the SDK's own signer, the request as the client declared
// it (exactly its signed headers, the host it was sent to, the hash of
// the body received) and compares the signatures in constant time. The
// session token of temporary credentials is checked by the caller (it is
// one of the signed headers when sent).
func Verify(r *http.Request, body []byte, s Signed, secret, region string, now time.Time) error {
	if s.Region != region {
		return fmt.Errorf("%w: the credential scope names region %q; this server signs as region %q", ErrSignature, truncate(s.Region), region)
	}
	if d := now.Sub(s.Time); d > MaxSkew || d < -MaxSkew {
		return fmt.Errorf("%w: signature expired: X-Amz-Date %s is more than %s from the server's time %s", ErrSignature,
			s.Time.Format(dateFormat), MaxSkew, now.UTC().Format(dateFormat))
	}
	// The request as the client declared it, over https (the URL of r
	// names no scheme or host on the server's side).
	re := &http.Request{Method: r.Method, Host: r.Host, Header: make(http.Header, len(s.SignedHeaders)+1),
		URL: &url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}}
	for _, h := range s.SignedHeaders {
		switch h {
		case "host":
		case "content-length":
			re.ContentLength = int64(len(body))
		default:
			if vs, ok := r.Header[http.CanonicalHeaderKey(h)]; ok {
				re.Header[http.CanonicalHeaderKey(h)] = vs
			}
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: secret}
	if err := signerFor(s.AccessKeyID, secret).SignHTTP(context.Background(), creds, re, hex.EncodeToString(sum[:]), s.Service, s.Region, s.Time); err != nil {
		return fmt.Errorf("%w: the request cannot be signed again", ErrSignature)
	}
	if subtle.ConstantTimeCompare(signatureOf(re.Header.Get("Authorization")), s.Signature) != 1 {
		return fmt.Errorf("%w: the signature we calculated does not match the one sent; check the secret access key and the signing method (the body, host and signed headers are part of it)", ErrSignature)
	}
	return nil
}

// signatureOf is the signature of an Authorization header the SDK's
// signer wrote (it ends in ", Signature=HEX"); nil if there is none.
func signatureOf(auth string) []byte {
	const field = "Signature="
	i := strings.LastIndex(auth, field)
	if i < 0 {
		return nil
	}
	b, err := hex.DecodeString(auth[i+len(field):])
	if err != nil || len(b) != sha256.Size {
		return nil
	}
	return b
}

// truncate bounds a caller-supplied string quoted in an error.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
