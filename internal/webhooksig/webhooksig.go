// Package webhooksig is the signature of Coffer's rotation webhook calls
// (docs/formats.md, "Rotation webhook signature"): the secrets service
// signs with Sign, a receiver checks with Verify (the public client
// re-exports both). It lives apart from the client so that the secrets
// service signs without importing the client's wire types.
package webhooksig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Header is the header that carries the signature of a
// rotation webhook call (docs/formats.md, "Rotation webhook signature").
const Header = "Coffer-Signature"

// DefaultTolerance is how far a signed call's timestamp may be from
// the receiver's clock, either way, for Verify to accept it.
const DefaultTolerance = 5 * time.Minute

// maxSignatureHeader bounds the header a verifier parses.
const maxSignatureHeader = 1024

// Errors of Verify. None carries the key, the body or the
// expected signature.
var (
	// ErrMissing: the call has no signature header, or a
	// header without a t= or v1= part.
	ErrMissing = errors.New("the webhook call carries no Coffer-Signature with t= and v1=")
	// ErrMalformed: the header does not parse.
	ErrMalformed = errors.New("the webhook call's Coffer-Signature does not parse as t=UNIX,v1=HEX")
	// ErrExpired: the timestamp is outside the tolerance
	// (a replayed or delayed call, or a clock off by more than it).
	ErrExpired = errors.New("the webhook call's signature timestamp is outside the tolerance")
	// ErrMismatch: no v1 signature matches the body, the
	// timestamp and the key (a forged or altered call, or another key).
	ErrMismatch = errors.New("the webhook call's signature does not match")
	// ErrKeyInvalid: the verifier was given no key, or not the 32
	// bytes of one (an unset or undecoded variable); with an empty HMAC
	// key anyone could sign a call, so none is accepted.
	ErrKeyInvalid = errors.New("the webhook signing key given to the verifier is not 32 bytes (base64-decode the key rotation set printed)")
)

// KeySize is the size of a rotation webhook's signing key.
const KeySize = 32

// Sign returns the Coffer-Signature header value of a call
// with body sent at t, signed with key (the 32 bytes of the signing key
// that rotation set returned, base64-decoded): t=UNIX,v1=HEX where HEX is
// HMAC-SHA256(key, UNIX + "." + body).
func Sign(key []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(key, ts, body))
}

func mac(key []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks the Coffer-Signature header of a rotation
// webhook call: body is the raw request body, read before any parsing;
// key is the signing key (32 bytes, base64-decoded; any other length is
// refused with ErrKeyInvalid); now is the receiver's
// clock; tolerance (DefaultTolerance when 0 or less) bounds how old
// or how far ahead the signed timestamp may be. The comparison takes
// constant time. Several v1= parts are allowed (one must match); parts of
// other schemes are ignored, so a later scheme can be sent beside v1.
func Verify(key []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if len(key) != KeySize {
		return ErrKeyInvalid
	}
	if header == "" {
		return ErrMissing
	}
	if len(header) > maxSignatureHeader {
		return ErrMalformed
	}
	ts, seenT := "", false
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrMalformed
		}
		switch k {
		case "t":
			// Exactly one t, an empty one counted too.
			if seenT {
				return ErrMalformed
			}
			ts, seenT = v, true
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return ErrMalformed
			}
			sigs = append(sigs, sig)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return ErrMissing
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || unix < 0 || strconv.FormatInt(unix, 10) != ts {
		return ErrMalformed
	}
	// Compared in seconds, without building a time that could overflow;
	// the distance is taken unsigned, as a signed difference of two int64
	// can wrap (a huge t against a clock before 1970).
	if secondsApart(now.Unix(), unix) > uint64(tolerance/time.Second) {
		return ErrExpired
	}
	want := mac(key, ts, body)
	match := 0
	for _, sig := range sigs {
		match |= boolInt(hmac.Equal(sig, want))
	}
	if match == 0 {
		return ErrMismatch
	}
	return nil
}

// secondsApart is |a-b| without overflow.
func secondsApart(a, b int64) uint64 {
	if a < b {
		a, b = b, a
	}
	return uint64(a) - uint64(b)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
