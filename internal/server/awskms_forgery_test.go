package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TestAWSKMSSigV4Forgeries: SigV4 variants a client may try in place of a
// header signature over this request's real body are refused before any
// operation runs: a presigned query string, another algorithm, an unsigned
// or mislabelled payload, a second X-Amz-Target value, signed-header names
// not in canonical case, a credential naming another key than the secret.
// A replay of a well-signed request within the skew is accepted, as AWS
// does (docs/aws-kms.md says so).
func TestAWSKMSSigV4Forgeries(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	other := e.accessKey("other", allowAll)
	const body = `{"NumberOfBytes":16}`
	sum := sha256.Sum256([]byte(body))
	bodyHash := hex.EncodeToString(sum[:])

	send := func(req *http.Request) (int, string) {
		t.Helper()
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	newReq := func(url string) *http.Request {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		req.Header.Set("X-Amz-Target", "TrentService.GenerateRandom")
		return req
	}
	sign := func(req *http.Request, id, secret, payloadHash string) {
		t.Helper()
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, req,
			payloadHash, "kms", e.cfg.Region, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(name string, req *http.Request, want string) {
		t.Helper()
		st, raw := send(req)
		if st != 400 || !strings.Contains(raw, `"__type":"`+want+`"`) || strings.Contains(raw, "Plaintext") {
			t.Errorf("%s: %d %s, want 400 %s", name, st, raw, want)
		}
		if strings.Contains(raw, ak.SecretAccessKey) || strings.Contains(raw, other.SecretAccessKey) {
			t.Errorf("%s: the answer repeats a secret", name)
		}
	}

	// The well-signed request, sent twice: a replay within the skew is
	// accepted (AWS-equivalent; TLS keeps requests from being captured).
	good := newReq(e.ts.URL + "/")
	sign(good, ak.ID, ak.SecretAccessKey, bodyHash)
	auth, date := good.Header.Get("Authorization"), good.Header.Get("X-Amz-Date")
	for i := range 2 {
		again := newReq(e.ts.URL + "/")
		again.Header.Set("Authorization", auth)
		again.Header.Set("X-Amz-Date", date)
		if st, raw := send(again); st != 200 || !strings.Contains(raw, "Plaintext") {
			t.Fatalf("well-signed request %d: %d %s", i, st, raw)
		}
	}

	// Presigned: the signature in the query string, no Authorization.
	pre := newReq(e.ts.URL + "/")
	url, hdr, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: ak.ID, SecretAccessKey: ak.SecretAccessKey},
		pre, bodyHash, "kms", e.cfg.Region, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pre = newReq(url)
	for k, v := range hdr {
		pre.Header[k] = v
	}
	refused("presigned query string", pre, "IncompleteSignatureException")

	// Another algorithm name over the same signature.
	for _, alg := range []string{"AWS4-ECDSA-P256-SHA256", "AWS4-HMAC-SHA512", "aws4-hmac-sha256", "AWS3-HTTPS"} {
		r := newReq(e.ts.URL + "/")
		sign(r, ak.ID, ak.SecretAccessKey, bodyHash)
		r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256", alg, 1))
		refused("algorithm "+alg, r, "IncompleteSignatureException")
	}

	// An unsigned payload, declared and signed as such: the server hashes
	// the body it received.
	unsigned := newReq(e.ts.URL + "/")
	unsigned.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	sign(unsigned, ak.ID, ak.SecretAccessKey, "UNSIGNED-PAYLOAD")
	refused("UNSIGNED-PAYLOAD", unsigned, "InvalidSignatureException")
	// A streaming (aws-chunked) payload: its chunks are not verified.
	stream := newReq(e.ts.URL + "/")
	stream.Header.Set("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
	stream.Header.Set("Content-Encoding", "aws-chunked")
	sign(stream, ak.ID, ak.SecretAccessKey, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
	refused("aws-chunked payload", stream, "InvalidSignatureException")
	// A payload hash of another body, declared in X-Amz-Content-Sha256.
	otherSum := sha256.Sum256([]byte(`{"NumberOfBytes":1024}`))
	lie := newReq(e.ts.URL + "/")
	lie.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(otherSum[:]))
	sign(lie, ak.ID, ak.SecretAccessKey, hex.EncodeToString(otherSum[:]))
	refused("payload hash of another body", lie, "InvalidSignatureException")

	// A second X-Amz-Target value added after signing.
	dup := newReq(e.ts.URL + "/")
	sign(dup, ak.ID, ak.SecretAccessKey, bodyHash)
	dup.Header.Add("X-Amz-Target", "TrentService.ListKeys")
	refused("a second target", dup, "InvalidSignatureException")
	// A first X-Amz-Target value put before the signed one.
	first := newReq(e.ts.URL + "/")
	sign(first, ak.ID, ak.SecretAccessKey, bodyHash)
	first.Header["X-Amz-Target"] = []string{"TrentService.ListKeys", "TrentService.GenerateRandom"}
	refused("another target first", first, "InvalidSignatureException")

	// SignedHeaders not as the canonical request lists them.
	for _, edit := range []struct{ name, from, to string }{
		{"upper-case names", "SignedHeaders=content-length;content-type;host;x-amz-date;x-amz-target", "SignedHeaders=Content-Length;Content-Type;Host;X-Amz-Date;X-Amz-Target"},
		{"host left out", ";host;", ";"},
		{"x-amz-date left out", ";x-amz-date;", ";"},
		{"unsorted", "content-type;host", "host;content-type"},
	} {
		r := newReq(e.ts.URL + "/")
		sign(r, ak.ID, ak.SecretAccessKey, bodyHash)
		h := r.Header.Get("Authorization")
		if !strings.Contains(h, edit.from) {
			t.Fatalf("%s: %q not in %q", edit.name, edit.from, h)
		}
		r.Header.Set("Authorization", strings.Replace(h, edit.from, edit.to, 1))
		refused("SignedHeaders "+edit.name, r, "IncompleteSignatureException")
	}

	// A credential or signature not of SigV4's form.
	for _, edit := range []struct {
		name string
		fn   func(string) string
	}{
		{"a scope not ending in aws4_request", func(h string) string { return strings.Replace(h, "/aws4_request,", "/aws4_other,", 1) }},
		{"no access key id", func(h string) string { return strings.Replace(h, "Credential="+ak.ID, "Credential=", 1) }},
		{"a signature of 32 hex digits", func(h string) string {
			i := strings.Index(h, "Signature=") + len("Signature=")
			return h[:i+32]
		}},
	} {
		r := newReq(e.ts.URL + "/")
		sign(r, ak.ID, ak.SecretAccessKey, bodyHash)
		h := r.Header.Get("Authorization")
		if edit.fn(h) == h {
			t.Fatalf("%s: no change", edit.name)
		}
		r.Header.Set("Authorization", edit.fn(h))
		refused(edit.name, r, "IncompleteSignatureException")
	}
	// A query string added after signing (the canonical request has it).
	q := newReq(e.ts.URL + "/")
	sign(q, ak.ID, ak.SecretAccessKey, bodyHash)
	q.URL.RawQuery = "Action=Decrypt"
	refused("a query added after signing", q, "InvalidSignatureException")

	// Signed with one key's secret, claiming another key.
	swap := newReq(e.ts.URL + "/")
	sign(swap, other.ID, ak.SecretAccessKey, bodyHash)
	refused("another key's credential", swap, "InvalidSignatureException")
	if r, _ := e.rec.last("kms:GenerateRandom"); r.Outcome != "error" || r.Principal.ID != other.ID || r.Door != "aws-kms" {
		t.Fatalf("record of a credential signed with another secret: %+v", r)
	}
}
