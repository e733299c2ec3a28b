package awskms

import (
	"crypto/sha256"
	"sync"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// maxSigners bounds the signers kept; past it the cache starts over.
const maxSigners = 1024

// signerKey names a signer: an access key id and the SHA-256 of the secret
// it signs with, so that the cache keeps no secret as a key.
type signerKey struct {
	id     string
	secret [sha256.Size]byte
}

// signers holds the SDK signers Verify signs with again, one per access key
// and secret. An SDK signer keeps the signing key it derived from a
// secret, per region and service, for the day of its last signature (four
// HMACs it then skips on every later request of that day). It tells its
// keys apart by access key id and day, never by secret, so one signer
// serves one id and one secret: a request signed with another secret meets
// another signer and a key derived from that secret.
var signers = struct {
	mu sync.Mutex
	m  map[signerKey]*v4.Signer
}{m: map[signerKey]*v4.Signer{}}

// signerFor returns the signer of access key id with secret.
func signerFor(id, secret string) *v4.Signer {
	k := signerKey{id: id, secret: sha256.Sum256([]byte(secret))}
	signers.mu.Lock()
	defer signers.mu.Unlock()
	s := signers.m[k]
	if s == nil {
		if len(signers.m) >= maxSigners {
			clear(signers.m)
		}
		s = v4.NewSigner()
		signers.m[k] = s
	}
	return s
}
