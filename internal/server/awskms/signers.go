package awskms

import (
	"crypto/sha256"
	"strings"
	"sync"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cofferkms/coffer/internal/auth"
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

// signerFor returns the signer of access key id with secret. A session's
// credentials (cfst_ ids, derived for each token) get a fresh signer that
// is not kept: they are many and short-lived, and what is derived from
// them must not outlive the session.
func signerFor(id, secret string) *v4.Signer {
	if strings.HasPrefix(id, auth.SessionKeyIDPrefix) {
		return v4.NewSigner()
	}
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

// ForgetSigners drops every kept signer and the signing keys they derived:
// the server calls it on seal, which wipes the secrets they came from.
func ForgetSigners() {
	signers.mu.Lock()
	defer signers.mu.Unlock()
	clear(signers.m)
}
