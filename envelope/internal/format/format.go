// Package format is the wire format of a Coffer envelope file header
// (version 1): how it is laid out, serialized and parsed with explicit
// limits. It knows nothing about keys or ciphers; package envelope derives
// keys from a header and checks its commitment and MAC.
//
// The layout, all integers big-endian:
//
//	offset  size   field
//	0       4      magic "CFEN"
//	4       1      format version (1)
//	5       1      algorithm id (1 = AES-256-GCM, HKDF-SHA256, STREAM)
//	6       4      segment size in bytes (plaintext per segment)
//	10      32     salt (random per file)
//	42      7      nonce prefix (random per file)
//	49      2      length C of the encryption context encoding
//	51      C      encryption context, canonical encoding
//	51+C    1      number of wrapped keys N (1..MaxStanzas)
//	...     N ×    wrapped key: u8 type length, type, u8 key id length,
//	               key id, u32 key version, u16 body length, body
//	...     32     key commitment
//	...     32     header MAC (HMAC-SHA256 of every byte before it)
//
// docs/formats.md is the reference; testdata/ in package envelope holds
// vectors.
package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"
)

// Format constants.
const (
	Magic   = "CFEN"
	Version = 1
	// AlgAES256GCMHKDFStream is STREAM over AES-256-GCM with an
	// HKDF-SHA256 per-file key: tink's AES-GCM-HKDF streaming layout.
	AlgAES256GCMHKDFStream = 1

	SaltSize        = 32
	NoncePrefixSize = 7
	CommitmentSize  = 32
	MACSize         = 32
	// fixedSize is the size of the fields before the encryption context.
	fixedSize = 4 + 1 + 1 + 4 + SaltSize + NoncePrefixSize

	// MinSegmentSize and MaxSegmentSize bound the plaintext bytes of a segment.
	MinSegmentSize = 64
	MaxSegmentSize = 16 << 20

	// Limits of the variable parts, so that a parser never allocates more
	// than about 100 KiB whatever a header claims.
	MaxContextPairs    = 64
	MaxContextBytes    = 8192 // keys and values together
	MaxContextEncoding = 16384
	MaxStanzas         = 16
	MaxTypeLen         = 32
	MaxKeyIDLen        = 255
	MaxBodyLen         = 4096
)

// Errors a parser wraps, so callers can tell the cases apart with errors.Is.
var (
	// ErrNotEnvelope: the input does not start with the magic bytes.
	ErrNotEnvelope = errors.New("not a Coffer envelope file")
	// ErrVersion: the format version is not one this code reads.
	ErrVersion = errors.New("unsupported envelope format version")
	// ErrMalformed: the header breaks the format's rules or limits.
	ErrMalformed = errors.New("malformed envelope header")
	// ErrTruncated: the input ends inside the header.
	ErrTruncated = errors.New("truncated envelope header")
)

// Stanza is one wrapped copy of the file's data key.
type Stanza struct {
	// Type names the wrapper that made it, such as "coffer" or "local".
	Type string
	// KeyID and KeyVersion name the key encryption key.
	KeyID      string
	KeyVersion uint32
	// Body is the wrapped data key.
	Body []byte
}

// Header is a parsed header.
type Header struct {
	Algorithm   byte
	SegmentSize uint32
	Salt        [SaltSize]byte
	NoncePrefix [NoncePrefixSize]byte
	Context     map[string]string
	Stanzas     []Stanza
	Commitment  [CommitmentSize]byte
	MAC         [MACSize]byte
}

// AppendBody appends the header without its commitment and MAC: the bytes
// hashed into the key derivation. It fails if a field breaks a limit.
func AppendBody(dst []byte, h *Header) ([]byte, error) {
	if h.SegmentSize < MinSegmentSize || h.SegmentSize > MaxSegmentSize {
		return dst, fmt.Errorf("segment size %d is outside %d..%d", h.SegmentSize, MinSegmentSize, MaxSegmentSize)
	}
	if n := len(h.Stanzas); n < 1 || n > MaxStanzas {
		return dst, fmt.Errorf("%d wrapped keys: want 1..%d", n, MaxStanzas)
	}
	ctx, err := AppendContext(nil, h.Context)
	if err != nil {
		return dst, err
	}
	dst = append(dst, Magic...)
	dst = append(dst, Version, h.Algorithm)
	dst = binary.BigEndian.AppendUint32(dst, h.SegmentSize)
	dst = append(dst, h.Salt[:]...)
	dst = append(dst, h.NoncePrefix[:]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(ctx)))
	dst = append(dst, ctx...)
	dst = append(dst, byte(len(h.Stanzas)))
	for i, s := range h.Stanzas {
		if err := checkStanza(s); err != nil {
			return dst, fmt.Errorf("wrapped key %d: %w", i+1, err)
		}
		dst = append(dst, byte(len(s.Type)))
		dst = append(dst, s.Type...)
		dst = append(dst, byte(len(s.KeyID)))
		dst = append(dst, s.KeyID...)
		dst = binary.BigEndian.AppendUint32(dst, s.KeyVersion)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(s.Body)))
		dst = append(dst, s.Body...)
	}
	return dst, nil
}

func checkStanza(s Stanza) error {
	switch {
	case len(s.Type) < 1 || len(s.Type) > MaxTypeLen:
		return fmt.Errorf("type %q: want 1..%d bytes", s.Type, MaxTypeLen)
	case !printable(s.Type):
		return fmt.Errorf("type %q: want printable ASCII", s.Type)
	case len(s.KeyID) > MaxKeyIDLen:
		return fmt.Errorf("key id is %d bytes: at most %d are allowed", len(s.KeyID), MaxKeyIDLen)
	case !utf8.ValidString(s.KeyID):
		return errors.New("key id is not UTF-8")
	case len(s.Body) < 1 || len(s.Body) > MaxBodyLen:
		return fmt.Errorf("wrapped key body is %d bytes: want 1..%d", len(s.Body), MaxBodyLen)
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Read parses a header from r, reading exactly its bytes. It returns the
// header and its serialization up to (not including) the commitment: the
// bytes the key derivation hashes. Errors wrap ErrNotEnvelope, ErrVersion,
// ErrMalformed or ErrTruncated. Allocation is bounded by the limits above.
func Read(r io.Reader) (*Header, []byte, error) {
	raw := make([]byte, fixedSize, fixedSize+256)
	if err := readFull(r, raw[:6], "magic and version"); err != nil {
		return nil, nil, err
	}
	if string(raw[:4]) != Magic {
		return nil, nil, fmt.Errorf("%w: it does not start with %q (is it a file made by 'coffer encrypt'?)", ErrNotEnvelope, Magic)
	}
	switch v := raw[4]; {
	case v > Version:
		return nil, nil, fmt.Errorf("%w: the file was sealed by a newer format version %d; this Coffer reads version %d (upgrade Coffer)", ErrVersion, v, Version)
	case v != Version:
		return nil, nil, fmt.Errorf("%w: unknown format version %d (this Coffer reads version %d)", ErrVersion, v, Version)
	}
	h := &Header{Algorithm: raw[5]}
	if h.Algorithm != AlgAES256GCMHKDFStream {
		return nil, nil, fmt.Errorf("%w: unknown algorithm id %d", ErrMalformed, h.Algorithm)
	}
	if err := readFull(r, raw[6:fixedSize], "fixed fields"); err != nil {
		return nil, nil, err
	}
	h.SegmentSize = binary.BigEndian.Uint32(raw[6:10])
	if h.SegmentSize < MinSegmentSize || h.SegmentSize > MaxSegmentSize {
		return nil, nil, fmt.Errorf("%w: segment size %d is outside the allowed %d..%d", ErrMalformed, h.SegmentSize, MinSegmentSize, MaxSegmentSize)
	}
	copy(h.Salt[:], raw[10:42])
	copy(h.NoncePrefix[:], raw[42:49])

	var err error
	next := func(n int, what string) []byte {
		if err != nil {
			return nil
		}
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		if err = readFull(r, raw[start:], what); err != nil {
			return nil
		}
		return raw[start:]
	}
	ctxLen := int(binary.BigEndian.Uint16(two(next(2, "context length"))))
	if err != nil {
		return nil, nil, err
	}
	if ctxLen > MaxContextEncoding {
		return nil, nil, fmt.Errorf("%w: encryption context claims %d bytes; at most %d are allowed", ErrMalformed, ctxLen, MaxContextEncoding)
	}
	ctxRaw := next(ctxLen, "encryption context")
	if err != nil {
		return nil, nil, err
	}
	if h.Context, err = ParseContext(ctxRaw); err != nil {
		return nil, nil, fmt.Errorf("%w: encryption context: %v", ErrMalformed, err)
	}
	n := int(one(next(1, "wrapped key count")))
	if err != nil {
		return nil, nil, err
	}
	if n < 1 || n > MaxStanzas {
		return nil, nil, fmt.Errorf("%w: %d wrapped keys: want 1..%d", ErrMalformed, n, MaxStanzas)
	}
	for i := range n {
		var s Stanza
		what := fmt.Sprintf("wrapped key %d", i+1)
		tl := int(one(next(1, what)))
		s.Type = string(next(tl, what))
		kl := int(one(next(1, what)))
		s.KeyID = string(next(kl, what))
		s.KeyVersion = binary.BigEndian.Uint32(four(next(4, what)))
		bl := int(binary.BigEndian.Uint16(two(next(2, what))))
		if err == nil && bl > MaxBodyLen {
			return nil, nil, fmt.Errorf("%w: %s claims a %d-byte body; at most %d are allowed", ErrMalformed, what, bl, MaxBodyLen)
		}
		s.Body = bytes.Clone(next(bl, what))
		if err != nil {
			return nil, nil, err
		}
		if cerr := checkStanza(s); cerr != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, cerr)
		}
		h.Stanzas = append(h.Stanzas, s)
	}
	body := raw
	var tail [CommitmentSize + MACSize]byte
	if err := readFull(r, tail[:], "key commitment and MAC"); err != nil {
		return nil, nil, err
	}
	copy(h.Commitment[:], tail[:CommitmentSize])
	copy(h.MAC[:], tail[CommitmentSize:])
	return h, body, nil
}

func one(b []byte) byte {
	if len(b) < 1 {
		return 0
	}
	return b[0]
}

func two(b []byte) []byte {
	if len(b) < 2 {
		return make([]byte, 2)
	}
	return b
}

func four(b []byte) []byte {
	if len(b) < 4 {
		return make([]byte, 4)
	}
	return b
}

func readFull(r io.Reader, b []byte, what string) error {
	_, err := io.ReadFull(r, b)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: the file ends inside the %s", ErrTruncated, what)
	}
	return fmt.Errorf("reading envelope header: %w", err)
}

// AppendContext appends the canonical encoding of an encryption context:
// uvarint(pairs), then per pair sorted by key uvarint(len(k)) k
// uvarint(len(v)) v. It is the encoding Coffer's KMS ciphertexts use.
func AppendContext(dst []byte, ctx map[string]string) ([]byte, error) {
	if len(ctx) > MaxContextPairs {
		return dst, fmt.Errorf("encryption context has %d pairs; at most %d are allowed", len(ctx), MaxContextPairs)
	}
	total := 0
	keys := make([]string, 0, len(ctx))
	for k, v := range ctx {
		if k == "" {
			return dst, errors.New("encryption context has an empty key")
		}
		total += len(k) + len(v)
		keys = append(keys, k)
	}
	if total > MaxContextBytes {
		return dst, fmt.Errorf("encryption context is %d bytes; at most %d are allowed", total, MaxContextBytes)
	}
	sort.Strings(keys)
	dst = binary.AppendUvarint(dst, uint64(len(ctx)))
	for _, k := range keys {
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = binary.AppendUvarint(dst, uint64(len(ctx[k])))
		dst = append(dst, ctx[k]...)
	}
	return dst, nil
}

// ParseContext decodes a canonical context encoding, rejecting anything
// AppendContext would not produce (unsorted or duplicate keys, trailing
// bytes, limits).
func ParseContext(orig []byte) (map[string]string, error) {
	b := orig
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, errors.New("bad pair count")
	}
	if n > MaxContextPairs {
		return nil, fmt.Errorf("%d pairs; at most %d are allowed", n, MaxContextPairs)
	}
	b = b[k:]
	str := func() (string, error) {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return "", errors.New("bad string length")
		}
		s := string(b[k : k+int(l)])
		b = b[k+int(l):]
		return s, nil
	}
	var m map[string]string
	if n > 0 {
		m = make(map[string]string, n)
	}
	prev := ""
	for i := range int(n) {
		key, err := str()
		if err != nil {
			return nil, err
		}
		val, err := str()
		if err != nil {
			return nil, err
		}
		if key == "" || (i > 0 && key <= prev) {
			return nil, errors.New("keys are empty, unsorted or repeated")
		}
		prev = key
		m[key] = val
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(b))
	}
	enc, err := AppendContext(nil, m)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(enc, orig) {
		return nil, errors.New("not in canonical form")
	}
	return m, nil
}
