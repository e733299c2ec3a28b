// Package credential generates and recognises Coffer's credentials.
//
// Every credential Coffer issues has the form
//
//	<prefix>_<body>
//
// where prefix names the kind and body carries random bytes followed by
// their big-endian CRC-32 (IEEE). The checksum lets scanners and log
// filters recognise a Coffer credential with no false positives from random
// text, without asking the server. The kinds:
//
//	cft_  bearer token        base64url(30 random bytes + CRC-32), 46 chars
//	cfsk_ access key secret   base64url(30 random bytes + CRC-32), 46 chars
//	cfak_ access key id       base32(11 random bytes + CRC-32), 24 chars A-Z2-7
//
// An access key id is not secret (it names the key in listings and audit
// records) but is still checksummed, so a scanner can tell a pasted pair
// apart from look-alikes. Use New or NewAccessKey to make credentials,
// Valid to check one of a known kind, and Kind to recognise any. The
// format is documented in docs/formats.md.
package credential

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"strings"
)

// Prefixes of the kinds of credential.
const (
	// TokenPrefix starts every bearer token.
	TokenPrefix = "cft"
	// AccessKeySecretPrefix starts every access key secret.
	AccessKeySecretPrefix = "cfsk"
	// AccessKeyIDPrefix starts every access key id.
	AccessKeyIDPrefix = "cfak"
)

// Kinds, as Kind returns them.
const (
	KindToken           = "token"
	KindAccessKeySecret = "access-key-secret"
	KindAccessKeyID     = "access-key-id"
)

const (
	randomBytes = 30
	bodyBytes   = randomBytes + 4

	idRandomBytes = 11
	idBytes       = idRandomBytes + 4
)

// BodyLen is the length of the encoded body of a token or access key
// secret.
var BodyLen = base64.RawURLEncoding.EncodedLen(bodyBytes)

// IDBodyLen is the length of the encoded body of an access key id.
var IDBodyLen = idEncoding.EncodedLen(idBytes)

// idEncoding is standard base32 (A-Z, 2-7); 15 bytes need no padding.
var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Format describes one kind of credential, for scanners.
type Format struct {
	Kind   string
	Prefix string // without the "_"
	// BodyLen is the length of the body after "<prefix>_".
	BodyLen int
	// BodyChars is the character class of the body, as a regular
	// expression class body.
	BodyChars string
	// Secret reports whether the credential grants access by itself.
	Secret      bool
	Description string
}

// Formats lists every kind of Coffer credential.
func Formats() []Format {
	return []Format{
		{KindToken, TokenPrefix, BodyLen, `A-Za-z0-9_-`, true, "Coffer bearer token"},
		{KindAccessKeySecret, AccessKeySecretPrefix, BodyLen, `A-Za-z0-9_-`, true, "Coffer access key secret"},
		{KindAccessKeyID, AccessKeyIDPrefix, IDBodyLen, `A-Z2-7`, false, "Coffer access key id"},
	}
}

// New returns a fresh credential with the given prefix, of the token shape
// (30 random bytes). Use NewAccessKey for access keys.
func New(prefix string) string {
	var b [bodyBytes]byte
	rand.Read(b[:randomBytes])
	binary.BigEndian.PutUint32(b[randomBytes:], crc32.ChecksumIEEE(b[:randomBytes]))
	return prefix + "_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// NewAccessKey returns a fresh access key: its id (cfak_...) and its
// secret (cfsk_...). The server shows the secret once and keeps only its
// hash.
func NewAccessKey() (id, secret string) {
	var b [idBytes]byte
	rand.Read(b[:idRandomBytes])
	binary.BigEndian.PutUint32(b[idRandomBytes:], crc32.ChecksumIEEE(b[:idRandomBytes]))
	return AccessKeyIDPrefix + "_" + idEncoding.EncodeToString(b[:]), New(AccessKeySecretPrefix)
}

// Valid reports whether s is a well-formed credential of the given prefix:
// right length, alphabet and checksum. It says nothing about whether the
// server knows the credential.
func Valid(prefix, s string) bool {
	body, ok := strings.CutPrefix(s, prefix+"_")
	if !ok {
		return false
	}
	if prefix == AccessKeyIDPrefix {
		return validID(body)
	}
	if len(body) != BodyLen {
		return false
	}
	var b [bodyBytes]byte
	n, err := base64.RawURLEncoding.Decode(b[:], []byte(body))
	if err != nil || n != bodyBytes {
		return false
	}
	return crc32.ChecksumIEEE(b[:randomBytes]) == binary.BigEndian.Uint32(b[randomBytes:])
}

func validID(body string) bool {
	if len(body) != IDBodyLen {
		return false
	}
	var b [idBytes]byte
	n, err := idEncoding.Decode(b[:], []byte(body))
	if err != nil || n != idBytes {
		return false
	}
	return crc32.ChecksumIEEE(b[:idRandomBytes]) == binary.BigEndian.Uint32(b[idRandomBytes:])
}

// Kind recognises any Coffer credential: it returns KindToken,
// KindAccessKeySecret or KindAccessKeyID, and ok, when s is exactly a
// well-formed credential of that kind.
func Kind(s string) (kind string, ok bool) {
	prefix, _, found := strings.Cut(s, "_")
	if !found {
		return "", false
	}
	switch prefix {
	case TokenPrefix:
		kind = KindToken
	case AccessKeySecretPrefix:
		kind = KindAccessKeySecret
	case AccessKeyIDPrefix:
		kind = KindAccessKeyID
	default:
		return "", false
	}
	if !Valid(prefix, s) {
		return "", false
	}
	return kind, true
}
