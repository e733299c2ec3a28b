package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cofferkms/coffer/envelope/internal/format"
)

// The key schedule. With H = SHA-256(header up to the commitment) and
// PRK = HKDF-Extract(SHA-256, salt, dataKey):
//
//	payload key = HKDF-Expand(PRK, "coffer envelope v1 payload key"  || H, 32)
//	commitment  = HKDF-Expand(PRK, "coffer envelope v1 key commitment" || H, 32)
//	MAC key     = HKDF-Expand(PRK, "coffer envelope v1 header mac"   || H, 32)
//	MAC         = HMAC-SHA256(MAC key, header up to the MAC)
const (
	labelPayload    = "coffer envelope v1 payload key"
	labelCommitment = "coffer envelope v1 key commitment"
	labelMAC        = "coffer envelope v1 header mac"

	tagSize   = 16
	nonceSize = 12
	// maxSegments is the number of segments a 32-bit counter can number.
	maxSegments = math.MaxUint32 + 1
)

// fileKeys are the keys of one file.
type fileKeys struct {
	aead        cipher.AEAD
	noncePrefix [format.NoncePrefixSize]byte
	commitment  [32]byte
	macKey      [32]byte
}

// deriveKeys runs the key schedule over the header body (the header
// serialized up to the commitment).
func deriveKeys(dataKey []byte, h *format.Header, headerBody []byte) (*fileKeys, error) {
	if len(dataKey) != DataKeySize {
		return nil, fmt.Errorf("data key is %d bytes, want %d", len(dataKey), DataKeySize)
	}
	sum := sha256.Sum256(headerBody)
	prk, err := hkdf.Extract(sha256.New, dataKey, h.Salt[:])
	if err != nil {
		return nil, err
	}
	defer clear(prk)
	expand := func(label string) ([]byte, error) {
		return hkdf.Expand(sha256.New, prk, label+string(sum[:]), 32)
	}
	fk := &fileKeys{noncePrefix: h.NoncePrefix}
	pk, err := expand(labelPayload)
	if err != nil {
		return nil, err
	}
	defer clear(pk)
	cm, err := expand(labelCommitment)
	if err != nil {
		return nil, err
	}
	mk, err := expand(labelMAC)
	if err != nil {
		return nil, err
	}
	copy(fk.commitment[:], cm)
	copy(fk.macKey[:], mk)
	clear(mk)
	block, err := aes.NewCipher(pk)
	if err != nil {
		return nil, err
	}
	if fk.aead, err = cipher.NewGCM(block); err != nil {
		return nil, err
	}
	return fk, nil
}

// headerMAC returns the MAC of the header bytes before it.
func (fk *fileKeys) headerMAC(headerBody []byte) []byte {
	m := hmac.New(sha256.New, fk.macKey[:])
	m.Write(headerBody)
	m.Write(fk.commitment[:])
	return m.Sum(nil)
}

// verifyHeader checks the key commitment and then the MAC, in constant
// time.
func (fk *fileKeys) verifyHeader(h *format.Header, headerBody []byte) error {
	if subtle.ConstantTimeCompare(fk.commitment[:], h.Commitment[:]) != 1 {
		return fmt.Errorf("%w: the key commitment does not match: the unwrapped data key is not the file's key, or the header was altered", ErrAuthentication)
	}
	if !hmac.Equal(fk.headerMAC(headerBody), h.MAC[:]) {
		return fmt.Errorf("%w: the header MAC does not verify: the header was altered", ErrAuthentication)
	}
	return nil
}

// nonce returns the STREAM nonce of segment i: prefix || i || last.
func (fk *fileKeys) nonce(dst *[nonceSize]byte, i uint64, last bool) {
	copy(dst[:], fk.noncePrefix[:])
	binary.BigEndian.PutUint32(dst[format.NoncePrefixSize:], uint32(i))
	dst[nonceSize-1] = 0
	if last {
		dst[nonceSize-1] = 1
	}
}

// seal seals the plaintext in buf in place and returns buf extended by the
// tag. cap(buf) must leave room for the tag.
func (fk *fileKeys) seal(buf []byte, i uint64, last bool) []byte {
	var n [nonceSize]byte
	fk.nonce(&n, i, last)
	return fk.aead.Seal(buf[:0], n[:], buf, nil)
}

// open opens segment i in place. When a final segment fails, it tries the
// segment as a middle one on a copy, to tell truncation from alteration.
func (fk *fileKeys) open(buf []byte, i uint64, last bool) ([]byte, error) {
	var n [nonceSize]byte
	fk.nonce(&n, i, last)
	var saved []byte
	if last {
		saved = bytes.Clone(buf) // Open clears its output on failure
	}
	pt, err := fk.aead.Open(buf[:0], n[:], buf, nil)
	if err == nil {
		return pt, nil
	}
	if last {
		fk.nonce(&n, i, false)
		if _, err := fk.aead.Open(saved[:0], n[:], saved, nil); err == nil {
			return nil, fmt.Errorf("%w: the file is truncated: it ends after segment %d, which is not the final segment", ErrAuthentication, i)
		}
	}
	return nil, segmentError(i, last)
}

// segmentError is the error of a segment that failed to authenticate.
func segmentError(i uint64, last bool) error {
	if last {
		return fmt.Errorf("%w: segment %d (the final one) does not authenticate: the file was altered, truncated or appended to", ErrAuthentication, i)
	}
	return fmt.Errorf("%w: segment %d does not authenticate: the file was altered, reordered, or has data appended after its final segment", ErrAuthentication, i)
}

// ErrAuthentication is wrapped by every error about data that does not
// authenticate: an altered header or segment, a truncated or extended file.
var ErrAuthentication = errors.New("authentication failed")
