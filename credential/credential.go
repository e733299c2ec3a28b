// Package credential generates and recognises Coffer's secret credentials.
//
// Every credential Coffer issues has the form
//
//	<prefix>_<body>
//
// where prefix names the kind ("cft" for tokens) and body is the unpadded
// base64url encoding of 30 random bytes followed by the big-endian CRC-32
// (IEEE) of those bytes. The checksum lets scanners and log filters
// recognise a Coffer credential with no false positives from random text,
// without asking the server. The format is documented in docs/formats.md.
package credential

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"strings"
)

// Kinds of credential, as their prefixes.
const (
	// TokenPrefix starts every bearer token.
	TokenPrefix = "cft"
)

const (
	randomBytes = 30
	bodyBytes   = randomBytes + 4
)

// BodyLen is the length of the encoded body.
var BodyLen = base64.RawURLEncoding.EncodedLen(bodyBytes)

// New returns a fresh credential with the given prefix.
func New(prefix string) string {
	var b [bodyBytes]byte
	rand.Read(b[:randomBytes])
	binary.BigEndian.PutUint32(b[randomBytes:], crc32.ChecksumIEEE(b[:randomBytes]))
	return prefix + "_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// Valid reports whether s is a well-formed credential of the given prefix:
// right length, alphabet and checksum. It says nothing about whether the
// server knows the credential.
func Valid(prefix, s string) bool {
	body, ok := strings.CutPrefix(s, prefix+"_")
	if !ok || len(body) != BodyLen {
		return false
	}
	var b [bodyBytes]byte
	n, err := base64.RawURLEncoding.Decode(b[:], []byte(body))
	if err != nil || n != bodyBytes {
		return false
	}
	return crc32.ChecksumIEEE(b[:randomBytes]) == binary.BigEndian.Uint32(b[randomBytes:])
}
