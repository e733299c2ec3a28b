package server

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/cofferkms/coffer/internal/secrets"
)

// The signing key's bytes are cleared once encoded into the answer: the
// answer's string is the one copy that leaves.
func TestSecretMetadataOfClearsSigningKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xa5}, secrets.SigningKeySize)
	want := base64.StdEncoding.EncodeToString(key)
	out, err := secretMetadataOf(secrets.Metadata{Rotation: &secrets.RotationInfo{NewSigningKey: key}}, nil)
	if err != nil || out.Rotation == nil || out.Rotation.SigningKey != want {
		t.Fatalf("answer %+v, %v", out.Rotation, err)
	}
	if !bytes.Equal(key, make([]byte, secrets.SigningKeySize)) {
		t.Fatal("the key's bytes were left after encoding")
	}
}
