package keys_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/cofferkms/coffer/internal/ciphertext"
	"github.com/cofferkms/coffer/internal/storage"
)

// The key of the committed vectors in internal/ciphertext/testdata: key id
// 789b70f3-369c-49f7-beb2-8394f1f1ef89, version 3, material 0x42 * 32.
const (
	vectorKeyID     = "789b70f3-369c-49f7-beb2-8394f1f1ef89"
	vectorMaterial  = "4242424242424242424242424242424242424242424242424242424242424242"
	vectorCipher    = "434601789b70f3369c49f7beb28394f1f1ef8900000003070707070707070707070707108731c0dadd52984c328a55afadf66ca25fbcfdd9f609707fbf506f00"
	vectorPlaintext = "hello, coffer"
)

var vectorContext = map[string]string{"app": "billing", "namespace": "prod"}

// vectorEnv is a key service holding the vector key, written to the store
// as a persisted key record.
func vectorEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	material, _ := hex.DecodeString(vectorMaterial)
	rec := map[string]any{
		"id": vectorKeyID, "state": "Enabled", "created_at": "2026-01-01T00:00:00Z", "last_rotated_at": "2026-01-01T00:00:00Z",
		"primary":  3,
		"versions": []map[string]any{{"version": 3, "created_at": "2026-01-01T00:00:00Z", "material": material}},
	}
	b, _ := json.Marshal(rec)
	if err := e.store.Apply(ctx, storage.Put("keys/"+vectorKeyID, b)); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDecryptBindsHeaderVector: the service opens a committed vector whose
// AAD is the 23-byte header followed by the context, and refuses it under a
// header it was not sealed with. It fails if Decrypt leaves the header out
// of the AAD (even if Encrypt leaves it out too).
func TestDecryptBindsHeaderVector(t *testing.T) {
	e := vectorEnv(t)
	ct, _ := hex.DecodeString(vectorCipher)
	got, err := e.svc.Decrypt(ctx, ct, vectorContext, "")
	if err != nil {
		t.Fatalf("the committed vector does not open: %v (is the ciphertext header still part of the AAD?)", err)
	}
	if string(got.Plaintext) != vectorPlaintext || got.KeyID != vectorKeyID || got.KeyVersion != 3 {
		t.Fatalf("got %q from %s v%d", got.Plaintext, got.KeyID, got.KeyVersion)
	}
}

// TestEncryptBindsHeaderVector: what Encrypt returns opens with plain
// AES-256-GCM under AAD = header || canonical context, and not under the
// context alone. It fails if Encrypt leaves the header out of the AAD.
func TestEncryptBindsHeaderVector(t *testing.T) {
	e := vectorEnv(t)
	sealed, err := e.svc.Encrypt(ctx, vectorKeyID, []byte(vectorPlaintext), vectorContext)
	if err != nil {
		t.Fatal(err)
	}
	ct := sealed.Ciphertext
	if len(ct) < ciphertext.Overhead || sealed.KeyVersion != 3 {
		t.Fatalf("ciphertext of %d bytes, version %d", len(ct), sealed.KeyVersion)
	}
	material, _ := hex.DecodeString(vectorMaterial)
	block, _ := aes.NewCipher(material)
	gcm, _ := cipher.NewGCM(block)
	hdr, nonce, body := ct[:ciphertext.HeaderSize], ct[ciphertext.HeaderSize:ciphertext.HeaderSize+ciphertext.NonceSize], ct[ciphertext.HeaderSize+ciphertext.NonceSize:]
	ctxBytes, err := ciphertext.AppendContext(nil, vectorContext)
	if err != nil {
		t.Fatal(err)
	}
	aad := append(bytes.Clone(hdr), ctxBytes...)
	plain, err := gcm.Open(nil, nonce, body, aad)
	if err != nil || string(plain) != vectorPlaintext {
		t.Fatalf("Encrypt's output does not open under AAD = header || context: %v", err)
	}
	if _, err := gcm.Open(nil, nonce, body, ctxBytes); err == nil {
		t.Fatal("Encrypt's output opens under the context alone: the header is not bound")
	}
}
