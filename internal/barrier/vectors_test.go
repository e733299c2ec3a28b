package barrier

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// Pinned encodings of the version 2 root-key records (docs/formats.md,
// "Root key and seal configuration (version 2)"). They change only with a
// deliberate format change and a new version number.
const (
	vecSecret   = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00"
	vecKEK      = "246bf054ec30ef425dd98713597fe38ee63574ff64dd159ee79e4f50a47a5b46"
	vecRoot     = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	vecRootRec  = `{"version":1,"seal":"shamir","blob":"ASV1WG1nO1LyjWkOWDQVAeJqY6lN6qEP356B5M7x0Xij0vYjHwfjCrw7pPzWWXDvNwJwfQcvHnl6zzFHVQ=="}`
	vecRecovery = "72362ad20e46a7500c9362e8b1fc333ed681b4d13a1e86350a8ed82de172a7d1f1f52d37c99dbaad36e46dd93384c35bbf389780bcc41fc93be612dbedaef261ad4325dfc52bf6e7f36285242808b86028867ebfa0224bf746f830888579d401754c93"
	vecVerifier = "153ae0a3a5c4e49abc479f3eca0af9ad7642a93bb30109579f93fd0f3ca4335b"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRootKeyVectors(t *testing.T) {
	secret, root := unhex(t, vecSecret), unhex(t, vecRoot)
	kek, err := deriveKey(secret, infoShamirKEK)
	if err != nil || !bytes.Equal(kek, unhex(t, vecKEK)) {
		t.Fatalf("KEK derivation: %x %v", kek, err)
	}
	if v, _ := deriveKey(secret, infoRecovery); !bytes.Equal(v, unhex(t, vecVerifier)) {
		t.Fatalf("recovery verifier derivation: %x", v)
	}
	var rec storedRoot
	if err := json.Unmarshal([]byte(vecRootRec), &rec); err != nil || rec.Version != 1 || rec.Seal != TypeShamir {
		t.Fatalf("core/root record: %+v %v", rec, err)
	}
	got, err := unwrapWithKEK(kek, rec.Blob)
	if err != nil || !bytes.Equal(got, root) {
		t.Fatalf("Shamir blob: %x %v", got, err)
	}
	for i := range rec.Blob {
		bad := bytes.Clone(rec.Blob)
		bad[i] ^= 0x80
		if _, err := unwrapWithKEK(kek, bad); err == nil {
			t.Fatalf("byte %d of the Shamir blob is not authenticated", i)
		}
	}
	// core/recovery opens under the root key and checks the secret.
	be := inmem.New()
	be.Apply(ctx, storage.Put(pathRecovery, unhex(t, vecRecovery)))
	b := New(be)
	if err := b.verifyRecovery(ctx, root, secret); err != nil {
		t.Fatalf("recovery record: %v", err)
	}
	other := bytes.Clone(secret)
	other[0] ^= 1
	if err := b.verifyRecovery(ctx, root, other); !errors.Is(err, ErrBadShare) {
		t.Fatalf("another secret: %v", err)
	}
	wrongRoot := bytes.Clone(root)
	wrongRoot[0] ^= 1
	if err := b.verifyRecovery(ctx, wrongRoot, secret); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("another root key: %v", err)
	}
}
