package barrier

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
)

// The root key is derived from a secret scalar of the ristretto255 group,
// and that scalar is split with Shamir's secret sharing as implemented by
// Cloudflare's CIRCL (constant time for ristretto255). A share is encoded as
//
//	base64(version 1 | share id (1 byte) | scalar (32 bytes) | CRC-32 of the previous bytes)
//
// The checksum catches a mistyped share at submission instead of at the end.

const shareVersion = 1

var shareGroup = group.Ristretto255

// MaxShares bounds the number of shares (share ids are one byte).
const MaxShares = 255

// errBadShare is wrapped by share decoding errors.
var errBadShare = errors.New("invalid unseal share")

// splitRootSecret makes a new secret and splits it into n shares of which t
// reconstruct it. It returns the root key derived from the secret, as a
// version 1 store (seal configuration without a version) uses it.
func splitRootSecret(n, t int) (rootKey []byte, shares []string, err error) {
	raw, shares, err := splitSecret(n, t)
	if err != nil {
		return nil, nil, err
	}
	defer clear(raw)
	rootKey, err = deriveKey(raw, infoLegacyRoot)
	return rootKey, shares, err
}

// combineShares reconstructs a version 1 store's root key from t shares.
func combineShares(t int, encoded [][]byte) ([]byte, error) {
	raw, err := combineSecret(t, encoded)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	return deriveKey(raw, infoLegacyRoot)
}

// HKDF info strings of the keys derived from a share secret. A version 1
// store's root key is the secret's key; since version 2 the unseal secret
// yields a key-encryption key that wraps a random root key (core/root), and
// a recovery secret yields only a verifier.
const (
	infoLegacyRoot = "coffer root key v1"
	infoShamirKEK  = "coffer shamir kek v2"
	infoRecovery   = "coffer recovery verifier v2"
)

// splitSecret makes a new secret scalar and splits it into n shares of
// which t reconstruct it. It returns the scalar's encoding, which the
// caller wipes.
func splitSecret(n, t int) (secret []byte, shares []string, err error) {
	if n < 1 || n > MaxShares {
		return nil, nil, fmt.Errorf("shares must be between 1 and %d, not %d", MaxShares, n)
	}
	if t < 1 || t > n {
		return nil, nil, fmt.Errorf("threshold must be between 1 and the number of shares (%d), not %d", n, t)
	}
	s := shareGroup.RandomScalar(rand.Reader)
	ss := secretsharing.New(rand.Reader, uint(t-1), s)
	for _, sh := range ss.Share(uint(n)) {
		enc, err := encodeShare(sh)
		if err != nil {
			return nil, nil, err
		}
		shares = append(shares, enc)
	}
	secret, err = s.MarshalBinary()
	return secret, shares, err
}

// combineSecret reconstructs the secret scalar's encoding from t shares.
func combineSecret(t int, encoded [][]byte) ([]byte, error) {
	shares := make([]secretsharing.Share, 0, len(encoded))
	for _, e := range encoded {
		s, err := decodeShare(e)
		if err != nil {
			return nil, err
		}
		shares = append(shares, s)
	}
	secret, err := secretsharing.Recover(uint(t-1), shares)
	if err != nil {
		return nil, fmt.Errorf("combining shares: %w", err)
	}
	return secret.MarshalBinary()
}

// deriveKey derives a 32-byte key for purpose info from a secret's
// encoding.
func deriveKey(secret []byte, info string) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, nil, info, 32)
}

func encodeShare(s secretsharing.Share) (string, error) {
	id, err := s.ID.MarshalBinary()
	if err != nil {
		return "", err
	}
	val, err := s.Value.MarshalBinary()
	if err != nil {
		return "", err
	}
	defer clear(val)
	// ristretto255 scalars are little-endian: the small id is in byte 0.
	for _, b := range id[1:] {
		if b != 0 {
			return "", errors.New("share id does not fit one byte")
		}
	}
	buf := make([]byte, 0, 2+len(val)+4)
	buf = append(buf, shareVersion, id[0])
	buf = append(buf, val...)
	buf = binary.BigEndian.AppendUint32(buf, crc32.ChecksumIEEE(buf))
	defer clear(buf)
	return base64.StdEncoding.EncodeToString(buf), nil
}

// shareID returns the id of an encoded share after checking it, so repeated
// submissions of one share can be recognised.
func shareID(enc []byte) (byte, error) {
	raw, err := checkShare(enc)
	if err != nil {
		return 0, err
	}
	defer clear(raw)
	return raw[1], nil
}

// checkShare decodes and checks enc; on an error it wipes what it decoded
// (a share with a typo is still almost all of a secret share).
func checkShare(enc []byte) (_ []byte, err error) {
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
	defer func() {
		if err != nil {
			clear(raw)
		}
	}()
	n, err := base64.StdEncoding.Decode(raw, enc)
	if err != nil {
		return nil, fmt.Errorf("%w: it is not base64; paste the share exactly as init printed it", errBadShare)
	}
	raw = raw[:n]
	if n != 2+32+4 {
		return nil, fmt.Errorf("%w: wrong length; paste the share exactly as init printed it", errBadShare)
	}
	if raw[0] != shareVersion {
		return nil, fmt.Errorf("%w: share format version %d is unknown", errBadShare, raw[0])
	}
	if crc32.ChecksumIEEE(raw[:n-4]) != binary.BigEndian.Uint32(raw[n-4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch (a typo?)", errBadShare)
	}
	if raw[1] == 0 {
		return nil, fmt.Errorf("%w: share id 0 is invalid", errBadShare)
	}
	return raw, nil
}

func decodeShare(enc []byte) (secretsharing.Share, error) {
	raw, err := checkShare(enc)
	if err != nil {
		return secretsharing.Share{}, err
	}
	defer clear(raw)
	id := shareGroup.NewScalar().SetUint64(uint64(raw[1]))
	val := shareGroup.NewScalar()
	if err := val.UnmarshalBinary(raw[2 : 2+32]); err != nil {
		return secretsharing.Share{}, fmt.Errorf("%w: the share value is not a valid scalar", errBadShare)
	}
	return secretsharing.Share{ID: id, Value: val}, nil
}
