package awskms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const testRegion = "us-east-1"

// signedRequest is an Encrypt request as an AWS client sends it, signed by
// the SDK's signer with id and secret at t.
func signedRequest(t testing.TB, id, secret string, body []byte, at time.Time) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, "https://kms.example:8200/", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	r.Header.Set("X-Amz-Target", "TrentService.Encrypt")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, r,
		hex.EncodeToString(sum[:]), Service, testRegion, at); err != nil {
		t.Fatal(err)
	}
	return r
}

// verify parses and verifies r as the server does, with secret.
func verify(r *http.Request, body []byte, secret string, now time.Time) error {
	s, err := Parse(r)
	if err != nil {
		return err
	}
	return Verify(r, body, s, secret, testRegion, now)
}

// TestVerifyCachesNoSecret: the signers Verify keeps per access key never
// let a key derived from one secret verify a request for another secret
// of the same access key id, in either order, and a day later a signer
// derives its key again.
func TestVerifyCachesNoSecret(t *testing.T) {
	const id = "cfak_CACHETEST"
	body := []byte(`{"KeyId":"alias/a","Plaintext":"AAAA"}`)
	now := time.Now().UTC()
	byA := signedRequest(t, id, "secret-a", body, now)
	byB := signedRequest(t, id, "secret-b", body, now)
	for i, c := range []struct {
		r      *http.Request
		secret string
		ok     bool
	}{
		{byA, "secret-a", true}, // caches a key derived from secret-a
		{byA, "secret-b", false},
		{byB, "secret-b", true},
		{byB, "secret-a", false},
		{byA, "secret-a", true},
	} {
		err := verify(c.r, body, c.secret, now)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrSignature)) {
			t.Fatalf("case %d: %v, want ok=%v", i, err, c.ok)
		}
	}
	// The next day (the derived key changes with the date).
	tomorrow := now.Add(24 * time.Hour)
	if err := verify(signedRequest(t, id, "secret-a", body, tomorrow), body, "secret-a", tomorrow); err != nil {
		t.Fatalf("next day: %v", err)
	}
	if err := verify(signedRequest(t, id, "secret-b", body, tomorrow), body, "secret-a", tomorrow); !errors.Is(err, ErrSignature) {
		t.Fatalf("next day, other secret: %v", err)
	}
	// A day's request verified after the cache moved to the next day.
	if err := verify(byA, body, "secret-a", now); err != nil {
		t.Fatalf("back to the first day: %v", err)
	}
}

// TestSignerCacheBounded: past maxSigners the cache starts over.
func TestSignerCacheBounded(t *testing.T) {
	for i := range maxSigners + 10 {
		signerFor("cfak_BOUND", strings.Repeat("s", i+1))
	}
	signers.mu.Lock()
	n := len(signers.m)
	signers.mu.Unlock()
	if n > maxSigners {
		t.Fatalf("%d signers kept, want at most %d", n, maxSigners)
	}
}

// A session's signer is never kept (its keys die with the session), and
// ForgetSigners (run on seal) drops every kept one.
func TestSessionSignersNotKeptAndForgotten(t *testing.T) {
	count := func() int {
		signers.mu.Lock()
		defer signers.mu.Unlock()
		return len(signers.m)
	}
	ForgetSigners()
	signerFor("cfst_0123456789abcdef", "session-secret")
	if n := count(); n != 0 {
		t.Fatalf("a session's signer was kept (%d signers)", n)
	}
	signerFor("cfak_KEPT", "secret")
	if n := count(); n != 1 {
		t.Fatalf("%d signers kept for an access key, want 1", n)
	}
	ForgetSigners()
	if n := count(); n != 0 {
		t.Fatalf("ForgetSigners left %d signers", n)
	}
}

// BenchmarkVerify is the server's cost of a SigV4 signature: Parse and
// Verify of one Encrypt request, with the same access key every time.
func BenchmarkVerify(b *testing.B) {
	body := []byte(`{"KeyId":"alias/doorbench","Plaintext":"ZGF0YWRhdGFkYXRhZGF0YWRhdGFkYXRhZGF0YWRhdGE="}`)
	now := time.Now().UTC()
	r := signedRequest(b, "cfak_BENCH", "secret", body, now)
	b.ReportAllocs()
	for b.Loop() {
		if err := verify(r, body, "secret", now); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSignatureOf: the signature Verify compares is the 32 bytes at the
// end of the header the signer wrote, and nothing when they are missing or
// malformed (a nil signature never equals one sent).
func TestSignatureOf(t *testing.T) {
	good := strings.Repeat("ab", 32)
	if got := signatureOf("AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=" + good); hex.EncodeToString(got) != good {
		t.Fatalf("got %x", got)
	}
	for _, h := range []string{"", "AWS4-HMAC-SHA256 Credential=x", "Signature=" + good[:62], "Signature=" + good + "00", "Signature=" + strings.Repeat("zz", 32)} {
		if got := signatureOf(h); got != nil {
			t.Errorf("%q: got %x, want nil", h, got)
		}
	}
}
