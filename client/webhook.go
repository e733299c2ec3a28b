package client

import (
	"time"

	"github.com/cofferkms/coffer/internal/webhooksig"
)

// WebhookSignatureHeader is the header that carries the signature of a
// rotation webhook call (docs/formats.md, "Rotation webhook signature").
const WebhookSignatureHeader = webhooksig.Header

// DefaultWebhookTolerance is how far a signed call's timestamp may be from
// the receiver's clock, either way, for VerifyWebhookSignature to accept it.
const DefaultWebhookTolerance = webhooksig.DefaultTolerance

// Errors of VerifyWebhookSignature. None carries the key, the body or the
// expected signature.
var (
	// ErrWebhookSignatureMissing: the call has no signature header, or a
	// header without a t= or v1= part.
	ErrWebhookSignatureMissing = webhooksig.ErrMissing
	// ErrWebhookSignatureMalformed: the header does not parse.
	ErrWebhookSignatureMalformed = webhooksig.ErrMalformed
	// ErrWebhookSignatureExpired: the timestamp is outside the tolerance
	// (a replayed or delayed call, or a clock off by more than it).
	ErrWebhookSignatureExpired = webhooksig.ErrExpired
	// ErrWebhookSignatureMismatch: no v1 signature matches the body, the
	// timestamp and the key (a forged or altered call, or another key).
	ErrWebhookSignatureMismatch = webhooksig.ErrMismatch
	// ErrWebhookKeyInvalid: the verifier was given no key, or not the 32
	// bytes of one; with an empty HMAC key anyone could sign a call, so
	// none is accepted.
	ErrWebhookKeyInvalid = webhooksig.ErrKeyInvalid
)

// WebhookSignature returns the Coffer-Signature header value of a call
// with body sent at t, signed with key (the 32 bytes of the signing key
// that rotation set returned, base64-decoded): t=UNIX,v1=HEX where HEX is
// HMAC-SHA256(key, UNIX + "." + body).
func WebhookSignature(key []byte, t time.Time, body []byte) string {
	return webhooksig.Sign(key, t, body)
}

// VerifyWebhookSignature checks the Coffer-Signature header of a rotation
// webhook call: body is the raw request body, read before any parsing;
// key is the signing key (32 bytes, base64-decoded; any other length is
// refused with ErrWebhookKeyInvalid); now is the receiver's clock;
// tolerance (DefaultWebhookTolerance when 0 or less) bounds how old or how
// far ahead the signed timestamp may be. The comparison takes constant
// time. Several v1= parts are allowed (one must match); parts of other
// schemes are ignored, so a later scheme can be sent beside v1.
func VerifyWebhookSignature(key []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	return webhooksig.Verify(key, header, body, now, tolerance)
}
