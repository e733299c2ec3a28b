package server_test

import (
	"net/http"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// With audit.durability batched, only the successful outcomes of
// operations that change nothing and reveal no stored secret may be
// answered before their fsync: the server marks exactly those records
// Relaxed, through every route.
func TestRelaxedRecordsAreTheReadOnlyCryptoSuccesses(t *testing.T) {
	e := newIAMEnv(t, nil)
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/relaxed"}, &k)
	relaxed := func(action string) bool {
		t.Helper()
		r, ok := e.rec.last(action)
		if !ok {
			t.Fatalf("no record of %s", action)
		}
		return r.Relaxed
	}
	pt := []byte("hello")
	var enc client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: "alias/relaxed", Plaintext: pt}, &enc)
	if !relaxed("kms:Encrypt") {
		t.Fatal("a successful encrypt is not relaxed")
	}
	e.must("POST", "/v1/kms/decrypt", e.root, client.DecryptRequest{Ciphertext: enc.Ciphertext}, nil)
	if !relaxed("kms:Decrypt") {
		t.Fatal("a successful decrypt is not relaxed")
	}
	e.must("POST", "/v1/kms/datakey", e.root, client.DataKeyRequest{KeyID: "alias/relaxed"}, nil)
	if !relaxed("kms:GenerateDataKey") {
		t.Fatal("a successful data key is not relaxed")
	}
	e.must("POST", "/v1/kms/reencrypt", e.root, client.ReEncryptRequest{Ciphertext: enc.Ciphertext}, nil)
	if !relaxed("kms:ReEncrypt") {
		t.Fatal("a successful re-encrypt is not relaxed")
	}
	e.must("POST", "/v1/kms/random", e.root, client.RandomRequest{Bytes: 16}, nil)
	if !relaxed("kms:GenerateRandom") {
		t.Fatal("random is not relaxed")
	}
	// A failure stays durable: a decrypt of a forged ciphertext.
	bad := append([]byte(nil), enc.Ciphertext...)
	bad[len(bad)-1] ^= 1
	if st, _, _ := e.do("POST", "/v1/kms/decrypt", bearer(e.root), client.DecryptRequest{Ciphertext: bad}); st/100 == 2 {
		t.Fatalf("a forged ciphertext decrypted (%d)", st)
	}
	if relaxed("kms:Decrypt") {
		t.Fatal("a failed decrypt was marked relaxed")
	}
	// A denial too: a token without kms:Encrypt.
	e.must("PUT", "/v1/policies/describe", e.root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [key:Describe]\n    resources: [\"*\"]\n"}, nil)
	var tok client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", e.root, client.CreateTokenRequest{Policies: []string{"describe"}}, &tok)
	if st, _, _ := e.do("POST", "/v1/kms/encrypt", bearer(tok.Token), client.EncryptRequest{KeyID: "alias/relaxed", Plaintext: pt}); st != http.StatusForbidden {
		t.Fatalf("encrypt without permission: %d, want 403", st)
	}
	if relaxed("kms:Encrypt") {
		t.Fatal("a denied encrypt was marked relaxed")
	}
	// Changes and secret reads stay durable.
	if relaxed("key:Create") {
		t.Fatal("a key creation was marked relaxed")
	}
	e.must("POST", "/v1/secrets/data/app/db", e.root, client.SecretPutRequest{Fields: map[string]string{"password": "x"}}, nil)
	e.must("GET", "/v1/secrets/data/app/db", e.root, nil, nil)
	if relaxed("secret:Read") || relaxed("secret:Write") {
		t.Fatal("a secret read or write was marked relaxed")
	}
}
