// Package ciphertext is the wire format of the ciphertexts Coffer's KMS
// operations return (Encrypt, GenerateDataKey, ReEncrypt).
//
// A ciphertext is self-describing: it names the format version, the key and
// the key version that sealed it, so Decrypt needs nothing but the bytes and
// the encryption context. The layout (version 1) is
//
//	offset  size  field
//	0       2     magic "CF"
//	2       1     format version (1)
//	3       16    key id (a UUID, raw bytes)
//	19      4     key version (big-endian uint32, >= 1)
//	23      12    AES-256-GCM nonce (random)
//	35      n+16  sealed data: ciphertext and 16-byte tag
//
// The AEAD's additional data is the 23-byte header followed by the canonical
// encoding of the encryption context (see Context), so neither the key id,
// the version nor the context can be changed without Open failing.
// docs/formats.md documents the format and testdata/ holds vectors.
package ciphertext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Format constants.
const (
	Version    = 1
	HeaderSize = 23
	NonceSize  = 12
	TagSize    = 16
	// Overhead is the number of bytes a ciphertext adds to its plaintext.
	Overhead = HeaderSize + NonceSize + TagSize

	// MaxContextPairs and MaxContextBytes bound an encryption context.
	MaxContextPairs = 64
	MaxContextBytes = 8192
)

var magic = [2]byte{'C', 'F'}

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed ciphertext")

// Header is the public part of a ciphertext.
type Header struct {
	KeyID      [16]byte
	KeyVersion uint32
}

// Parsed is a ciphertext split into its parts. The slices alias the input.
type Parsed struct {
	Header
	// AADPrefix is the serialized header, the first part of the AAD.
	AADPrefix []byte
	Nonce     []byte
	Sealed    []byte
}

// Parse splits b into its parts without decrypting anything. It never
// allocates more than a constant amount, whatever b claims.
func Parse(b []byte) (Parsed, error) {
	var p Parsed
	if len(b) < 3 {
		return p, fmt.Errorf("%w: %d bytes is too short to be a Coffer ciphertext", ErrMalformed, len(b))
	}
	if b[0] != magic[0] || b[1] != magic[1] {
		return p, fmt.Errorf("%w: it does not start with the Coffer magic bytes (was it produced by Coffer, and base64-decoded once?)", ErrMalformed)
	}
	if b[2] != Version {
		return p, fmt.Errorf("%w: format version %d is not supported (this server reads version %d)", ErrMalformed, b[2], Version)
	}
	if len(b) < Overhead {
		return p, fmt.Errorf("%w: %d bytes is shorter than the %d-byte minimum; it was truncated", ErrMalformed, len(b), Overhead)
	}
	copy(p.KeyID[:], b[3:19])
	p.KeyVersion = binary.BigEndian.Uint32(b[19:23])
	if p.KeyVersion == 0 {
		return p, fmt.Errorf("%w: key version 0 is invalid", ErrMalformed)
	}
	p.AADPrefix = b[:HeaderSize]
	p.Nonce = b[HeaderSize : HeaderSize+NonceSize]
	p.Sealed = b[HeaderSize+NonceSize:]
	return p, nil
}

// AppendHeader appends the serialized header of h to dst.
func AppendHeader(dst []byte, h Header) []byte {
	dst = append(dst, magic[0], magic[1], Version)
	dst = append(dst, h.KeyID[:]...)
	return binary.BigEndian.AppendUint32(dst, h.KeyVersion)
}

// AppendContext appends the canonical encoding of an encryption context to
// dst: the number of pairs, then each pair sorted by key, every field as a
// uvarint length followed by its bytes. A nil and an empty context encode the
// same. It fails when the context exceeds MaxContextPairs or MaxContextBytes.
func AppendContext(dst []byte, ctx map[string]string) ([]byte, error) {
	if len(ctx) > MaxContextPairs {
		return dst, fmt.Errorf("encryption context has %d pairs; at most %d are allowed", len(ctx), MaxContextPairs)
	}
	total := 0
	for k, v := range ctx {
		if k == "" {
			return dst, errors.New("encryption context has an empty key; every key needs a name")
		}
		total += len(k) + len(v)
	}
	if total > MaxContextBytes {
		return dst, fmt.Errorf("encryption context is %d bytes; at most %d are allowed", total, MaxContextBytes)
	}
	dst = binary.AppendUvarint(dst, uint64(len(ctx)))
	if len(ctx) == 0 {
		return dst, nil
	}
	var small [8]string
	keys := small[:0]
	for k := range ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := ctx[k]
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	return dst, nil
}
