package transit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/cofferkms/coffer/internal/ciphertext"
	"github.com/cofferkms/coffer/internal/seal"
)

// The wrapped root key (blob), version 1. All integers are big-endian.
//
//	offset  size  field
//	0       1     format version (1)
//	1       2     k: length of the key reference (1..256)
//	3       k     key reference as configured at Wrap (UTF-8): an id or alias/NAME
//	3+k     1     n: number of context pairs (1..64)
//	        n x   pair, in strictly increasing byte order of name:
//	          2   name length (1..4096), name
//	          2   value length (0..4096), value
//	        2     m: ciphertext length (83)
//	        m     the unsealing Coffer's ciphertext (internal/ciphertext v1,
//	              naming key id and version) of the 32-byte root key
//
// Nothing may follow. The context is the whole encryption context of the
// Encrypt call (the configured pairs plus coffer-seal: root-key) and is
// given back to Decrypt as is. The format has one encoding per value, so a
// parsed blob encodes back to the same bytes.
const (
	blobVersion = 1
	// RootKeySize is the size of the root key the seal wraps.
	RootKeySize = 32
	// blobCiphertextSize is a v1 Coffer ciphertext of a root key.
	blobCiphertextSize = ciphertext.Overhead + RootKeySize
	maxPairField       = 4096
)

// blob is a parsed wrapped root key.
type blob struct {
	keyRef     string
	context    map[string]string
	ciphertext []byte
	header     ciphertext.Header // from the ciphertext
}

// keyID is the id of the key the ciphertext names.
func (b *blob) keyID() string { return uuid.UUID(b.header.KeyID).String() }

// encodeBlob serializes a blob. It checks what parseBlob checks, so it never
// writes a blob that would not parse.
func encodeBlob(keyRef string, ctx map[string]string, ct []byte) ([]byte, error) {
	// Lengths must fit their fields before they are written; the rest is
	// checked once, by the parser.
	if len(keyRef) > maxKeyRef || len(ctx) > ciphertext.MaxContextPairs || len(ct) > 0xffff {
		return nil, fmt.Errorf("%w: transit blob: key reference, context or ciphertext too large", seal.ErrBlob)
	}
	for k, v := range ctx {
		if len(k) > maxPairField || len(v) > maxPairField {
			return nil, fmt.Errorf("%w: transit blob: a context pair is larger than %d bytes", seal.ErrBlob, maxPairField)
		}
	}
	names := make([]string, 0, len(ctx))
	for k := range ctx {
		names = append(names, k)
	}
	slices.Sort(names)
	out := []byte{blobVersion}
	out = binary.BigEndian.AppendUint16(out, uint16(len(keyRef)))
	out = append(out, keyRef...)
	out = append(out, byte(len(names)))
	for _, k := range names {
		out = binary.BigEndian.AppendUint16(out, uint16(len(k)))
		out = append(out, k...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(ctx[k])))
		out = append(out, ctx[k]...)
	}
	out = binary.BigEndian.AppendUint16(out, uint16(len(ct)))
	out = append(out, ct...)
	if _, err := parseBlob(out); err != nil {
		return nil, err
	}
	return out, nil
}

// parseBlob parses a blob; every error wraps seal.ErrBlob. It allocates
// no more than the input's size, whatever the input claims.
func parseBlob(data []byte) (*blob, error) {
	b, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: transit blob: %v", seal.ErrBlob, err)
	}
	return b, nil
}

var errShort = errors.New("truncated")

// reader consumes a byte slice.
type reader struct{ b []byte }

func (r *reader) next(n int) ([]byte, error) {
	if n > len(r.b) {
		return nil, errShort
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out, nil
}

func (r *reader) u8() (int, error) {
	b, err := r.next(1)
	if err != nil {
		return 0, err
	}
	return int(b[0]), nil
}

func (r *reader) u16() (int, error) {
	b, err := r.next(2)
	if err != nil {
		return 0, err
	}
	return int(binary.BigEndian.Uint16(b)), nil
}

// field reads a 2-byte length in [lo, hi] and that many bytes.
func (r *reader) field(what string, lo, hi int) ([]byte, error) {
	n, err := r.u16()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if n < lo || n > hi {
		return nil, fmt.Errorf("%s is %d bytes; it must be %d..%d", what, n, lo, hi)
	}
	b, err := r.next(n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

func parse(data []byte) (*blob, error) {
	r := &reader{b: data}
	v, err := r.u8()
	if err != nil {
		return nil, errors.New("empty")
	}
	if v != blobVersion {
		return nil, fmt.Errorf("format version %d is not supported (this build reads version %d)", v, blobVersion)
	}
	ref, err := r.field("key reference", 1, maxKeyRef)
	if err != nil {
		return nil, err
	}
	if err := checkKeyRef(string(ref)); err != nil {
		return nil, err
	}
	n, err := r.u8()
	if err != nil {
		return nil, fmt.Errorf("context size: %w", err)
	}
	if n < 1 || n > ciphertext.MaxContextPairs {
		return nil, fmt.Errorf("%d context pairs; it must be 1..%d", n, ciphertext.MaxContextPairs)
	}
	ctx := make(map[string]string, n)
	prev, total := "", 0
	for i := range n {
		k, err := r.field("context name", 1, maxPairField)
		if err != nil {
			return nil, err
		}
		val, err := r.field("context value", 0, maxPairField)
		if err != nil {
			return nil, err
		}
		name := string(k)
		if i > 0 && strings.Compare(name, prev) <= 0 {
			return nil, errors.New("context names are not in strictly increasing order")
		}
		if name == probeName {
			return nil, errors.New("the context is a health probe's, not a root key's")
		}
		prev, total = name, total+len(k)+len(val)
		ctx[name] = string(val)
	}
	if total > ciphertext.MaxContextBytes {
		return nil, fmt.Errorf("context is %d bytes; at most %d", total, ciphertext.MaxContextBytes)
	}
	if ctx[PurposeName] != PurposeValue {
		return nil, fmt.Errorf("context lacks %s: %s; it was not made by a transit seal", PurposeName, PurposeValue)
	}
	ct, err := r.field("ciphertext", blobCiphertextSize, blobCiphertextSize)
	if err != nil {
		return nil, err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d bytes follow the ciphertext", len(r.b))
	}
	p, err := ciphertext.Parse(ct)
	if err != nil {
		return nil, err
	}
	return &blob{keyRef: string(ref), context: ctx, ciphertext: ct, header: p.Header}, nil
}
