package server_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// The webhook's signing key is in the answer of the rotation set that
// made it and nowhere else: not in a metadata read, not in an answer that
// keeps it, not in the audit records.
func TestRotationSigningKeyShownOnce(t *testing.T) {
	e := newRotationEnv(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer hook.Close()
	const name = "team-a/signed"
	e.must("POST", "/v1/secrets/data/"+name, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "first-value-xyz"}}, nil)
	var md client.SecretMetadata
	e.must("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "30d", With: "webhook:" + hook.URL}, &md)
	key := md.Rotation.SigningKey
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 32 {
		t.Fatalf("signing key %q: %d bytes, %v", key, len(k), err)
	}
	var again, read client.SecretMetadata
	e.must("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "7d", With: "webhook:" + hook.URL}, &again)
	e.must("GET", "/v1/secrets/metadata/"+name, e.root, nil, &read)
	if again.Rotation.SigningKey != "" || read.Rotation.SigningKey != "" || read.Rotation.Unsigned {
		t.Fatalf("kept key shown again (%q) or in a read (%q), unsigned %v", again.Rotation.SigningKey, read.Rotation.SigningKey, read.Rotation.Unsigned)
	}
	var rolled client.SecretMetadata
	e.must("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "7d", With: "webhook:" + hook.URL, RollSigningKey: true}, &rolled)
	if rolled.Rotation.SigningKey == "" || rolled.Rotation.SigningKey == key {
		t.Fatalf("rolled key %q", rolled.Rotation.SigningKey)
	}
	e.rec.mu.Lock()
	all, _ := json.Marshal(e.rec.recs)
	e.rec.mu.Unlock()
	for _, k := range []string{key, rolled.Rotation.SigningKey} {
		if strings.Contains(string(all), k) {
			t.Fatal("a signing key is in an audit record")
		}
	}
}

// End to end: a rotator that verifies each call with the key the rotation
// set answered (base64) accepts Coffer's calls, and the rotation succeeds;
// with another key it refuses them, and the rotation fails.
func TestRotationWebhookVerifiedEndToEnd(t *testing.T) {
	e := newRotationEnv(t)
	var key atomic.Value
	key.Store([]byte(nil))
	var verified atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := client.VerifyWebhookSignature(key.Load().([]byte), r.Header.Get(client.WebhookSignatureHeader), body, e.now(), 0); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		verified.Add(1)
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer hook.Close()
	const name = "team-a/verified"
	e.must("POST", "/v1/secrets/data/"+name, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "first-value-xyz"}}, nil)
	var md client.SecretMetadata
	e.must("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "30d", With: "webhook:" + hook.URL}, &md)
	k, err := base64.StdEncoding.DecodeString(md.Rotation.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	wrong := append([]byte(nil), k...)
	wrong[0] ^= 0xff
	key.Store(wrong)
	e.wantErr("POST", "/v1/secrets/rotate/"+name, e.root, nil, 502, "rotation_failed")
	if verified.Load() != 0 {
		t.Fatal("a call verified with the wrong key")
	}
	key.Store(k)
	e.offset.Add(int64(2 * time.Hour)) // past the retry backoff and the claim lease
	var res client.SecretRotateResult
	e.must("POST", "/v1/secrets/rotate/"+name, e.root, nil, &res)
	if res.CurrentVersion != 2 || verified.Load() != 2 {
		t.Fatalf("rotation %+v, %d calls verified", res, verified.Load())
	}
}

// Whoever holds the signing key can sign calls the rotator accepts: the
// audit record of the rotation set that made one (the first webhook set,
// or a roll) says so, and a set that kept the key does not.
func TestRotationSigningKeyMadeAudited(t *testing.T) {
	e := newRotationEnv(t)
	const name = "team-a/keyaudit"
	e.must("POST", "/v1/secrets/data/"+name, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "first-value-xyz"}}, nil)
	for _, c := range []struct {
		roll bool
		made bool
	}{{false, true}, {false, false}, {true, true}} {
		e.must("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "30d", With: "webhook:http://127.0.0.1:9/rotate", RollSigningKey: c.roll}, nil)
		rec, ok := e.rec.last("secret:Rotate")
		if !ok || strings.Contains(rec.Detail, "signing_key=made") != c.made {
			t.Fatalf("roll %v: record detail %q, want signing_key=made %v", c.roll, rec.Detail, c.made)
		}
	}
}
