package pkcs11

import (
	"encoding/binary"
	"fmt"

	"github.com/cofferkms/coffer/internal/seal"
)

// The blob Wrap returns (docs/formats.md, "PKCS#11 seal blob"):
//
//	version      1 byte   = 1
//	mechanism    1 byte   1 aes-gcm, 2 aes-key-wrap-pad, 3 rsa-oaep,
//	                      4 rsa-oaep-sha1
//	label length 1 byte   1..255
//	key label    L bytes  CKA_LABEL of the key
//	id length    1 byte   0..255
//	key id       D bytes  CKA_ID of the key (may be empty)
//	iv length    1 byte   12 for aes-gcm, 0 otherwise
//	iv           N bytes
//	ct length    2 bytes  big endian; 48 aes-gcm, 40 aes-key-wrap-pad,
//	                      256..1024 rsa-oaep* (the modulus size)
//	ciphertext   C bytes  for aes-gcm the GCM ciphertext with its 16-byte tag
//
// Nothing may follow the ciphertext. For aes-gcm the additional
// authenticated data is aadContext followed by the header (version through
// key id), so a changed version, mechanism, label or id fails the tag.
const blobVersion = 1

// aadContext starts the additional data of aes-gcm: it names what the
// ciphertext is, so that a GCM ciphertext made for another purpose with the
// same HSM key never opens as a root key.
const aadContext = "coffer-root-key/pkcs11/v1\x00"

// mechanism is the blob's code of a wrapping mechanism.
type mechanism byte

const (
	mechAESGCM  mechanism = 1
	mechAESKWP  mechanism = 2
	mechRSAOAEP mechanism = 3
	// mechRSAOAEPSHA1 is rsa-oaep with SHA-1 and MGF1-SHA-1.
	mechRSAOAEPSHA1 mechanism = 4
)

// isRSA reports an RSA-OAEP mechanism.
func (m mechanism) isRSA() bool { return m == mechRSAOAEP || m == mechRSAOAEPSHA1 }

// String names the mechanism as in Config.Mechanism.
func (m mechanism) String() string {
	switch m {
	case mechAESGCM:
		return MechanismAESGCM
	case mechAESKWP:
		return MechanismAESKeyWrapPad
	case mechRSAOAEP:
		return MechanismRSAOAEP
	case mechRSAOAEPSHA1:
		return MechanismRSAOAEPSHA1
	}
	return fmt.Sprintf("mechanism(%d)", byte(m))
}

// Sizes fixed by the format.
const (
	rootKeySize = 32
	gcmIVSize   = 12
	gcmTagSize  = 16
	gcmCTSize   = rootKeySize + gcmTagSize
	kwpCTSize   = rootKeySize + 8 // RFC 5649: 8-byte integrity block, 32 is already a multiple of 8
	minRSABytes = 256             // 2048-bit modulus
	maxRSABytes = 1024            // 8192-bit modulus
	maxKeyID    = 255
)

// blob is a parsed wrapped root key.
type blob struct {
	mech       mechanism
	keyLabel   string
	keyID      []byte
	iv         []byte
	ciphertext []byte
}

// header encodes the fields from the version through the key id: what the
// aes-gcm additional data binds.
func (b *blob) header() []byte {
	h := make([]byte, 0, 4+len(b.keyLabel)+len(b.keyID))
	h = append(h, blobVersion, byte(b.mech), byte(len(b.keyLabel)))
	h = append(h, b.keyLabel...)
	h = append(h, byte(len(b.keyID)))
	return append(h, b.keyID...)
}

// aad is the additional authenticated data of an aes-gcm blob.
func (b *blob) aad() []byte {
	return append([]byte(aadContext), b.header()...)
}

// marshal encodes the blob. The caller has checked the lengths (check).
func (b *blob) marshal() []byte {
	out := b.header()
	out = append(out, byte(len(b.iv)))
	out = append(out, b.iv...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.ciphertext)))
	return append(out, b.ciphertext...)
}

// check verifies the field lengths the format allows; marshal and
// parseBlob both rely on it.
func (b *blob) check() error {
	if len(b.keyLabel) == 0 || len(b.keyLabel) > maxKeyLabel {
		return fmt.Errorf("key label of %d bytes (1..%d)", len(b.keyLabel), maxKeyLabel)
	}
	if len(b.keyID) > maxKeyID {
		return fmt.Errorf("key id of %d bytes (at most %d)", len(b.keyID), maxKeyID)
	}
	switch b.mech {
	case mechAESGCM:
		if len(b.iv) != gcmIVSize {
			return fmt.Errorf("aes-gcm IV of %d bytes (want %d)", len(b.iv), gcmIVSize)
		}
		if len(b.ciphertext) != gcmCTSize {
			return fmt.Errorf("aes-gcm ciphertext of %d bytes (want %d)", len(b.ciphertext), gcmCTSize)
		}
	case mechAESKWP:
		if len(b.iv) != 0 {
			return fmt.Errorf("aes-key-wrap-pad with an IV of %d bytes (want none)", len(b.iv))
		}
		if len(b.ciphertext) != kwpCTSize {
			return fmt.Errorf("aes-key-wrap-pad ciphertext of %d bytes (want %d)", len(b.ciphertext), kwpCTSize)
		}
	case mechRSAOAEP, mechRSAOAEPSHA1:
		if len(b.iv) != 0 {
			return fmt.Errorf("rsa-oaep with an IV of %d bytes (want none)", len(b.iv))
		}
		if len(b.ciphertext) < minRSABytes || len(b.ciphertext) > maxRSABytes {
			return fmt.Errorf("rsa-oaep ciphertext of %d bytes (want %d..%d)", len(b.ciphertext), minRSABytes, maxRSABytes)
		}
	default:
		return fmt.Errorf("unknown mechanism code %d", byte(b.mech))
	}
	return nil
}

// parseBlob decodes a blob; every error wraps seal.ErrBlob. The returned
// slices are copies, not views of data.
func parseBlob(data []byte) (*blob, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("pkcs11 seal: wrapped root key: %s: %w", fmt.Sprintf(format, a...), seal.ErrBlob)
	}
	r := reader{data: data}
	v, ok := r.byte()
	if !ok {
		return nil, bad("empty")
	}
	if v != blobVersion {
		return nil, bad("unknown version %d (this build reads version %d)", v, blobVersion)
	}
	m, _ := r.byte()
	label, ok1 := r.bytes8()
	id, ok2 := r.bytes8()
	iv, ok3 := r.bytes8()
	ct, ok4 := r.bytes16()
	if !(ok1 && ok2 && ok3 && ok4) {
		return nil, bad("truncated")
	}
	if r.rest() != 0 {
		return nil, bad("%d bytes after the ciphertext", r.rest())
	}
	b := &blob{
		mech:       mechanism(m),
		keyLabel:   string(label),
		keyID:      append([]byte{}, id...),
		iv:         append([]byte{}, iv...),
		ciphertext: append([]byte{}, ct...),
	}
	if err := b.check(); err != nil {
		return nil, bad("%v", err)
	}
	return b, nil
}

// reader reads length-prefixed fields; a short read reports !ok.
type reader struct {
	data []byte
	off  int
}

func (r *reader) rest() int { return len(r.data) - r.off }

func (r *reader) byte() (byte, bool) {
	if r.rest() < 1 {
		return 0, false
	}
	r.off++
	return r.data[r.off-1], true
}

func (r *reader) take(n int) ([]byte, bool) {
	if n < 0 || r.rest() < n {
		return nil, false
	}
	r.off += n
	return r.data[r.off-n : r.off], true
}

func (r *reader) bytes8() ([]byte, bool) {
	n, ok := r.byte()
	if !ok {
		return nil, false
	}
	return r.take(int(n))
}

func (r *reader) bytes16() ([]byte, bool) {
	l, ok := r.take(2)
	if !ok {
		return nil, false
	}
	return r.take(int(binary.BigEndian.Uint16(l)))
}
