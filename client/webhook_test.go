package client_test

import (
	"encoding/base64"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// The test vector of docs/formats.md, "Rotation webhook signature"
// (computed with openssl dgst -sha256 -mac HMAC, not with this code).
const (
	vectorKey  = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	vectorBody = `{"secret":"team-a/db","old_version":1,"new_version":2,"step":"apply"}`
	vectorSig  = "t=1767225600,v1=91e0c99152ee1ad5fc626a8ed9e2db67d5bd697cf48866272f194bc498674bfb"
)

var vectorTime = time.Unix(1767225600, 0)

func vectorKeyBytes(t *testing.T) []byte {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(vectorKey)
	if err != nil || len(k) != 32 {
		t.Fatalf("vector key: %d bytes, %v", len(k), err)
	}
	return k
}

func TestWebhookSignatureVector(t *testing.T) {
	k := vectorKeyBytes(t)
	if got := client.WebhookSignature(k, vectorTime, []byte(vectorBody)); got != vectorSig {
		t.Fatalf("signature %s, want %s", got, vectorSig)
	}
	if err := client.VerifyWebhookSignature(k, vectorSig, []byte(vectorBody), vectorTime.Add(4*time.Minute), 0); err != nil {
		t.Fatalf("the vector does not verify: %v", err)
	}
}

// Each alteration of a signed call is refused with the error naming it.
func TestVerifyWebhookSignatureRefuses(t *testing.T) {
	k := vectorKeyBytes(t)
	other := append([]byte(nil), k...)
	other[31] ^= 1
	body := []byte(vectorBody)
	now := vectorTime.Add(time.Minute)
	resigned := client.WebhookSignature(k, vectorTime.Add(-time.Hour), body)
	otherSig := client.WebhookSignature(other, vectorTime, body)
	for _, c := range []struct {
		name, header, body string
		key                []byte
		now                time.Time
		tolerance          time.Duration
		want               error
	}{
		{"tampered body", vectorSig, strings.Replace(vectorBody, `"new_version":2`, `"new_version":1`, 1), k, now, 0, client.ErrWebhookSignatureMismatch},
		{"tampered timestamp", strings.Replace(vectorSig, "t=1767225600", "t=1767225660", 1), vectorBody, k, now, 0, client.ErrWebhookSignatureMismatch},
		{"another key", vectorSig, vectorBody, other, now, 0, client.ErrWebhookSignatureMismatch},
		{"signed with another key", otherSig, vectorBody, k, now, 0, client.ErrWebhookSignatureMismatch},
		{"old", vectorSig, vectorBody, k, vectorTime.Add(5*time.Minute + time.Second), 0, client.ErrWebhookSignatureExpired},
		{"from the future", vectorSig, vectorBody, k, vectorTime.Add(-5*time.Minute - time.Second), 0, client.ErrWebhookSignatureExpired},
		{"replayed an hour later", resigned, vectorBody, k, vectorTime, 0, client.ErrWebhookSignatureExpired},
		{"outside a tighter tolerance", vectorSig, vectorBody, k, vectorTime.Add(31 * time.Second), 30 * time.Second, client.ErrWebhookSignatureExpired},
		{"no header", "", vectorBody, k, now, 0, client.ErrWebhookSignatureMissing},
		{"no v1", "t=1767225600", vectorBody, k, now, 0, client.ErrWebhookSignatureMissing},
		{"no t", "v1=" + strings.Split(vectorSig, "v1=")[1], vectorBody, k, now, 0, client.ErrWebhookSignatureMissing},
		{"short v1", "t=1767225600,v1=91e0", vectorBody, k, now, 0, client.ErrWebhookSignatureMalformed},
		{"v1 not hex", "t=1767225600,v1=" + strings.Repeat("zz", 32), vectorBody, k, now, 0, client.ErrWebhookSignatureMalformed},
		{"two t", "t=1767225600,t=1767225600,v1=" + strings.Split(vectorSig, "v1=")[1], vectorBody, k, now, 0, client.ErrWebhookSignatureMalformed},
		{"t not a number", "t=+1767225600,v1=" + strings.Split(vectorSig, "v1=")[1], vectorBody, k, now, 0, client.ErrWebhookSignatureMalformed},
		{"no equals", "garbage", vectorBody, k, now, 0, client.ErrWebhookSignatureMalformed},
		{"oversized", vectorSig + strings.Repeat(",x=y", 300), vectorBody, k, now, 0, client.ErrWebhookSignatureMalformed},
	} {
		if err := client.VerifyWebhookSignature(c.key, c.header, []byte(c.body), c.now, c.tolerance); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// A header may carry several v1 signatures (one must match) and parts of
// schemes a later version adds.
func TestVerifyWebhookSignatureSeveral(t *testing.T) {
	k := vectorKeyBytes(t)
	v1 := strings.Split(vectorSig, "v1=")[1]
	h := "t=1767225600,v2=abc,v1=" + strings.Repeat("00", 32) + ", v1=" + v1
	if err := client.VerifyWebhookSignature(k, h, []byte(vectorBody), vectorTime, 0); err != nil {
		t.Fatal(err)
	}
}

// A verifier given no key (an unset variable decoded to nothing) refuses
// every call: with an empty HMAC key anyone could sign one.
func TestVerifyWebhookSignatureNeedsKey(t *testing.T) {
	body := []byte(vectorBody)
	for _, key := range [][]byte{nil, {}, []byte("short")} {
		forged := client.WebhookSignature(key, vectorTime, body)
		if err := client.VerifyWebhookSignature(key, forged, body, vectorTime, 0); !errors.Is(err, client.ErrWebhookKeyInvalid) {
			t.Errorf("a %d-byte key: %v, want %v", len(key), err, client.ErrWebhookKeyInvalid)
		}
	}
}

// Timestamps other than a plain non-negative decimal are refused as
// malformed before any clock comparison: negative, signed zero, leading
// zeros, a fraction, beyond int64, and an empty t beside a second one.
func TestVerifyWebhookSignatureTimestampForms(t *testing.T) {
	k := vectorKeyBytes(t)
	v1 := ",v1=" + strings.Repeat("ab", 32)
	for _, h := range []string{
		"t=-1" + v1, "t=-0" + v1, "t=01767225600" + v1, "t=1767225600.5" + v1, "t=1.7e9" + v1,
		"t=99999999999999999999" + v1, "t=,t=1767225600" + v1, "t=0x10" + v1,
	} {
		if err := client.VerifyWebhookSignature(k, h, []byte(vectorBody), vectorTime, 0); !errors.Is(err, client.ErrWebhookSignatureMalformed) {
			t.Errorf("%s: %v, want %v", h, err, client.ErrWebhookSignatureMalformed)
		}
	}
}

// The clock comparison does not overflow: a timestamp at the far end of
// int64 against a receiver clock before 1970 is outside the tolerance,
// not wrapped into it.
func TestVerifyWebhookSignatureNoOverflow(t *testing.T) {
	k := vectorKeyBytes(t)
	body := []byte(vectorBody)
	for _, c := range []struct{ signed, now time.Time }{
		{time.Unix(math.MaxInt64, 0), time.Unix(-1, 0)},
		{time.Unix(0, 0), time.Unix(math.MinInt64+1, 0)},
	} {
		h := client.WebhookSignature(k, c.signed, body)
		if err := client.VerifyWebhookSignature(k, h, body, c.now, time.Minute); !errors.Is(err, client.ErrWebhookSignatureExpired) {
			t.Errorf("%s at %d: %v, want %v", h, c.now.Unix(), err, client.ErrWebhookSignatureExpired)
		}
	}
}
