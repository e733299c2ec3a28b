// Package seal defines an auto-unseal: something outside Coffer's store
// that wraps the root key, so that a server unseals itself at start by
// asking it to unwrap, and the material that could unwrap the root key
// stays off the machine's disk.
//
// Implementations live in sub-packages: pkcs11 (an HSM), tpm (this
// machine's TPM 2.0) and transit (a key in another Coffer). The barrier
// stores what Wrap returns in core/root and hands it back to Unwrap; the
// blob is the implementation's own versioned format (docs/formats.md).
package seal

import (
	"context"
	"errors"
)

// Seal wraps and unwraps the root key. Implementations are safe for
// concurrent use.
type Seal interface {
	// Type names the seal: "pkcs11", "tpm2" or "transit".
	Type() string
	// Wrap encrypts plaintext (a 32-byte root key) and returns a
	// self-describing blob for Unwrap. It never returns plaintext in an
	// error.
	Wrap(ctx context.Context, plaintext []byte) ([]byte, error)
	// Unwrap recovers the plaintext from a blob Wrap returned, or fails;
	// a blob that is malformed or was not made by this seal's key is an
	// error wrapping ErrBlob.
	Unwrap(ctx context.Context, blob []byte) ([]byte, error)
	// Health reports whether the device or service answers and the key is
	// usable now, without wrapping anything secret.
	Health(ctx context.Context) error
	// Info describes the seal for seal-status: what it is and where (a
	// library, a token and key label, a TPM device and PCRs, a transit
	// address and key). It holds no secret: no PIN, no token.
	Info() map[string]string
	// Close releases sessions and connections.
	Close() error
}

// Errors a Seal wraps so that callers can tell faults apart.
var (
	// ErrMisconfigured means retrying will not help until the
	// configuration or the device changes: a wrong PIN (a real HSM locks
	// the token after a few wrong attempts), a missing key, a library that
	// is not a PKCS#11 module. The server stays sealed and says why
	// instead of retrying.
	ErrMisconfigured = errors.New("seal misconfigured")
	// ErrBlob means the stored blob is malformed, of an unknown version,
	// or was not made by this seal's key (another HSM key, another TPM,
	// changed PCRs, another transit key).
	ErrBlob = errors.New("wrapped root key does not open with this seal")
)
