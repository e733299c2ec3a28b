package webhooksig

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: no header or body makes Verify panic or accept a call that
// the key did not sign, and every call Sign made for the body verifies.
func FuzzVerify(f *testing.F) {
	key := bytes.Repeat([]byte{7}, KeySize)
	now := time.Unix(1_800_000_000, 0)
	f.Add(Sign(key, now, []byte(`{"secret":"a"}`)), []byte(`{"secret":"a"}`))
	f.Add("t=1800000000,v1=00", []byte("x"))
	f.Add("t=,t=1800000000,v1="+string(bytes.Repeat([]byte("a"), 64)), []byte(""))
	f.Add("v2=1,t=1800000000", []byte("{}"))
	f.Add("t=1800000000,v1="+strings.Repeat("ab", 32), []byte("{}"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := Verify(key, header, body, now, 0)
		if err == nil && !signedBy(key, header, body) {
			t.Fatalf("Verify accepted %q for a body the key did not sign", header)
		}
		if err != nil && !errors.Is(err, ErrMissing) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrExpired) && !errors.Is(err, ErrMismatch) {
			t.Fatalf("unexpected error %v", err)
		}
		if err := Verify(key, Sign(key, now, body), body, now, 0); err != nil {
			t.Fatalf("a signed call does not verify: %v", err)
		}
	})
}

// signedBy is the fuzz oracle, written apart from Verify: some v1 part of
// header is the HMAC of the header's t part, a dot and body under key.
func signedBy(key []byte, header string, body []byte) bool {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		if v, ok := strings.CutPrefix(part, "t="); ok {
			ts = v
		}
		if v, ok := strings.CutPrefix(part, "v1="); ok {
			sigs = append(sigs, v)
		}
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}
