package transit_test

// The seal against a fake unsealing Coffer (httptest over TLS) that gives
// answers a real one does not: each error class, and answers that must be
// refused.

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/internal/seal/transit"
)

// fakeKeyID is the key the fake's ciphertexts name.
const fakeKeyID = "00112233-4455-6677-8899-aabbccddeeff"

// fakeCiphertext is a well-formed v1 Coffer ciphertext of a 32-byte
// plaintext under fakeKeyID version 1 (its sealed bytes are not real).
func fakeCiphertext() []byte {
	ct := []byte{'C', 'F', 1, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 0, 0, 1}
	return append(ct, make([]byte, 12+32+16)...)
}

// fake serves /v1/kms/encrypt and /v1/kms/decrypt with the handlers given.
func fake(t *testing.T, encrypt, decrypt http.HandlerFunc) *transit.Seal {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/kms/encrypt", encrypt)
	mux.HandleFunc("POST /v1/kms/decrypt", decrypt)
	ts := httptest.NewTLSServer(mux)
	t.Cleanup(ts.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644)
	return newSeal(t, transit.Config{Address: ts.URL, Key: "alias/unseal", CACertFile: ca, TokenFile: tokenFile(t, validToken(t))})
}

func answer(v any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
}

func apiError(status int, code string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		var eb client.ErrorBody
		eb.Error.Code, eb.Error.Message = code, "fake "+code
		json.NewEncoder(w).Encode(eb)
	}
}

// echoEncrypt answers Encrypt with fakeCiphertext.
var echoEncrypt = answer(client.EncryptResponse{Ciphertext: fakeCiphertext(), KeyID: fakeKeyID, KeyVersion: 1})

// blobFor is a blob of fakeCiphertext.
func blobFor() []byte {
	return buildBlob("alias/unseal", map[string]string{"coffer-seal": "root-key"}, fakeCiphertext())
}

func TestErrorClasses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		status int
		code   string
		want   error
		says   string
	}{
		{503, "sealed", transit.ErrUnavailable, "cannot serve now"},
		{503, "", transit.ErrUnavailable, "cannot serve now"},
		{502, "", transit.ErrUnavailable, "cannot serve now"},
		{429, "too_many_auth_failures", transit.ErrUnavailable, "cannot serve now"},
		{401, "unauthenticated", transit.ErrRefused, "does not accept the token in"},
		{403, "permission_denied", transit.ErrRefused, "permission denied for kms:Decrypt on key alias/unseal"},
		{409, "key_disabled", transit.ErrRefused, "alias/unseal is disabled"},
		{409, "key_pending_deletion", transit.ErrRefused, "scheduled for deletion"},
		{404, "alias_not_found", transit.ErrRefused, "alias/unseal was not found"},
		{404, "key_not_found", transit.ErrRefused, "has no key with the id"},
		{410, "key_deleted", seal.ErrMisconfigured, "was deleted"},
		{400, "invalid_ciphertext", seal.ErrBlob, "not authentic"},
	}
	for _, c := range cases {
		s := fake(t, echoEncrypt, apiError(c.status, c.code))
		_, err := s.Unwrap(testCtx(t), blobFor())
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%d %s: Unwrap = %v, want %v saying %q", c.status, c.code, err, c.want, c.says)
		}
		for _, other := range []error{transit.ErrUnavailable, transit.ErrRefused, seal.ErrMisconfigured, seal.ErrBlob} {
			if other != c.want && errors.Is(err, other) {
				t.Errorf("%d %s: Unwrap = %v is also %v", c.status, c.code, err, other)
			}
		}
	}
	// An unclassified answer is none of the classes.
	s := fake(t, echoEncrypt, apiError(500, "internal"))
	_, err := s.Unwrap(testCtx(t), blobFor())
	if err == nil || errors.Is(err, transit.ErrUnavailable) || errors.Is(err, transit.ErrRefused) || errors.Is(err, seal.ErrBlob) {
		t.Errorf("500: Unwrap = %v", err)
	}
	// invalid_ciphertext from Encrypt is no blob fault.
	s = fake(t, apiError(400, "invalid_ciphertext"), echoEncrypt)
	if _, err := s.Wrap(testCtx(t), rootKey(t)); err == nil || errors.Is(err, seal.ErrBlob) {
		t.Errorf("Encrypt answering invalid_ciphertext: Wrap = %v", err)
	}
}

// TestDecryptAnswerChecked: a Decrypt answer that is no root key of the
// blob's key is refused, and its plaintext not returned.
func TestDecryptAnswerChecked(t *testing.T) {
	t.Parallel()
	for name, resp := range map[string]client.DecryptResponse{
		"16 bytes":  {Plaintext: make([]byte, 16), KeyID: fakeKeyID, KeyVersion: 1},
		"33 bytes":  {Plaintext: make([]byte, 33), KeyID: fakeKeyID, KeyVersion: 1},
		"other key": {Plaintext: make([]byte, 32), KeyID: "ffffffff-4455-6677-8899-aabbccddeeff", KeyVersion: 1},
	} {
		s := fake(t, echoEncrypt, answer(resp))
		got, err := s.Unwrap(testCtx(t), blobFor())
		if !errors.Is(err, seal.ErrBlob) || got != nil {
			t.Errorf("%s: Unwrap = %d bytes, %v; want ErrBlob", name, len(got), err)
		}
	}
	s := fake(t, echoEncrypt, answer(client.DecryptResponse{Plaintext: make([]byte, 32), KeyID: fakeKeyID, KeyVersion: 1}))
	if got, err := s.Unwrap(testCtx(t), blobFor()); err != nil || len(got) != 32 {
		t.Fatalf("a good answer: Unwrap = %d bytes, %v", len(got), err)
	}
}

// TestWrapChecksItself: Wrap returns a blob only when the Encrypt answer
// is consistent and the blob decrypts to the root key.
func TestWrapChecksItself(t *testing.T) {
	t.Parallel()
	key := rootKey(t)
	good := answer(client.DecryptResponse{Plaintext: key, KeyID: fakeKeyID, KeyVersion: 1})
	s := fake(t, echoEncrypt, good)
	blob, err := s.Wrap(testCtx(t), key)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if !bytes.Equal(blob, buildBlob("alias/unseal", map[string]string{"coffer-seal": "root-key"}, fakeCiphertext())) {
		t.Fatalf("blob %x is not the documented encoding", blob)
	}
	for name, h := range map[string][2]http.HandlerFunc{
		"other plaintext":       {echoEncrypt, answer(client.DecryptResponse{Plaintext: rootKey(t), KeyID: fakeKeyID, KeyVersion: 1})},
		"decrypt refused":       {echoEncrypt, apiError(403, "permission_denied")},
		"answer names key":      {answer(client.EncryptResponse{Ciphertext: fakeCiphertext(), KeyID: "ffffffff-4455-6677-8899-aabbccddeeff", KeyVersion: 1}), good},
		"answer names version":  {answer(client.EncryptResponse{Ciphertext: fakeCiphertext(), KeyID: fakeKeyID, KeyVersion: 2}), good},
		"not a ciphertext":      {answer(client.EncryptResponse{Ciphertext: []byte("plain"), KeyID: fakeKeyID, KeyVersion: 1}), good},
		"ciphertext too long":   {answer(client.EncryptResponse{Ciphertext: append(fakeCiphertext(), 0), KeyID: fakeKeyID, KeyVersion: 1}), good},
		"encrypt not a ciphert": {answer(map[string]string{"x": "y"}), good},
	} {
		s := fake(t, h[0], h[1])
		out, err := s.Wrap(testCtx(t), key)
		if err == nil || out != nil {
			t.Errorf("%s: Wrap = %d bytes, %v; want an error", name, len(out), err)
		}
	}
}

// TestRequestShape: what the seal sends: the token of the file as a bearer
// token, the configured key, the context with the purpose pair; Decrypt
// names the configured key (which binds the blob to it).
func TestRequestShape(t *testing.T) {
	t.Parallel()
	var encReq, decReq atomic.Value
	var auth atomic.Value
	key := rootKey(t)
	s := fake(t, func(w http.ResponseWriter, r *http.Request) {
		var req client.EncryptRequest
		json.NewDecoder(r.Body).Decode(&req)
		encReq.Store(req)
		auth.Store(r.Header.Get("Authorization"))
		echoEncrypt(w, r)
	}, func(w http.ResponseWriter, r *http.Request) {
		var req client.DecryptRequest
		json.NewDecoder(r.Body).Decode(&req)
		decReq.Store(req)
		answer(client.DecryptResponse{Plaintext: key, KeyID: fakeKeyID, KeyVersion: 1})(w, r)
	})
	if _, err := s.Wrap(testCtx(t), key); err != nil {
		t.Fatal(err)
	}
	e := encReq.Load().(client.EncryptRequest)
	if e.KeyID != "alias/unseal" || !bytes.Equal(e.Plaintext, key) || len(e.Context) != 1 || e.Context["coffer-seal"] != "root-key" {
		t.Fatalf("Encrypt request = key %s context %v", e.KeyID, e.Context)
	}
	d := decReq.Load().(client.DecryptRequest)
	if d.KeyID != "alias/unseal" || len(d.Context) != 1 || d.Context["coffer-seal"] != "root-key" || !bytes.Equal(d.Ciphertext, fakeCiphertext()) {
		t.Fatalf("Decrypt request = key %s context %v", d.KeyID, d.Context)
	}
	if a, _ := auth.Load().(string); !strings.HasPrefix(a, "Bearer cft_") {
		t.Fatalf("Authorization = %q", a)
	}
}
