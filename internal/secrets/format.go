package secrets

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// The stored form of one secret version (docs/formats.md, "Secret
// version record"):
//
//	magic "CSEC" | format 0x01 | version uint32 BE | wrapped key length uint16 BE |
//	wrapped data key (a KMS ciphertext) | nonce (12) | AES-256-GCM(fields) with tag
//
// The AAD of the fields is the record up to the nonce followed by the
// secret's name, and the wrapped data key carries the encryption context
// {"coffer-secret": name, "version": N}: a record copied to another name or
// version does not open.
const (
	recordMagic   = "CSEC"
	recordFormat  = 1
	nonceSize     = 12
	tagSize       = 16
	headerFixed   = 4 + 1 + 4 + 2
	maxWrappedKey = 1024
)

// errFormat marks a stored record that does not parse.
var errFormat = errors.New("malformed secret version record")

// record is a parsed version record.
type record struct {
	Version uint32
	Wrapped []byte // the data key, encrypted by the key service
	Nonce   []byte
	Sealed  []byte // ciphertext and tag of the fields
	AADHead []byte // the record up to the nonce
}

// appendHeader writes the record header up to the nonce.
func appendHeader(b []byte, version uint32, wrapped []byte) []byte {
	b = append(b, recordMagic...)
	b = append(b, recordFormat)
	b = binary.BigEndian.AppendUint32(b, version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(wrapped)))
	return append(b, wrapped...)
}

// parseRecord splits a stored version record. It copies nothing: the
// slices point into b.
func parseRecord(b []byte) (record, error) {
	if len(b) < headerFixed {
		return record{}, fmt.Errorf("%w: %d bytes is shorter than the header", errFormat, len(b))
	}
	if string(b[:4]) != recordMagic {
		return record{}, fmt.Errorf("%w: bad magic", errFormat)
	}
	if b[4] != recordFormat {
		return record{}, fmt.Errorf("%w: unknown format %d", errFormat, b[4])
	}
	v := binary.BigEndian.Uint32(b[5:9])
	if v == 0 {
		return record{}, fmt.Errorf("%w: version 0", errFormat)
	}
	n := int(binary.BigEndian.Uint16(b[9:11]))
	if n == 0 || n > maxWrappedKey {
		return record{}, fmt.Errorf("%w: wrapped key of %d bytes", errFormat, n)
	}
	rest := b[headerFixed:]
	if len(rest) < n+nonceSize+tagSize {
		return record{}, fmt.Errorf("%w: truncated", errFormat)
	}
	return record{Version: v, Wrapped: rest[:n], Nonce: rest[n : n+nonceSize], Sealed: rest[n+nonceSize:],
		AADHead: b[:headerFixed+n]}, nil
}

// encodeFields is the plaintext of a version: uint16 count, then per field
// in ascending name order uint8 name length, name, uint32 value length,
// value. The caller wipes the result.
func encodeFields(f map[string]string) []byte {
	names := make([]string, 0, len(f))
	size := 2
	for k, v := range f {
		names = append(names, k)
		size += 1 + len(k) + 4 + len(v)
	}
	slices.Sort(names)
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint16(b, uint16(len(names)))
	for _, k := range names {
		b = append(b, byte(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(f[k])))
		b = append(b, f[k]...)
	}
	return b
}

// decodeFields parses the plaintext of a version, checking what
// encodeFields guarantees: valid names in strictly ascending order, sizes
// within the limits, nothing left over.
func decodeFields(b []byte) (map[string]string, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: no field count", errFormat)
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 || n > MaxFields {
		return nil, fmt.Errorf("%w: %d fields", errFormat, n)
	}
	b = b[2:]
	out := make(map[string]string, n)
	prev := ""
	total := 0
	for i := range n {
		if len(b) < 1 {
			return nil, fmt.Errorf("%w: truncated at field %d", errFormat, i)
		}
		kl := int(b[0])
		if len(b) < 1+kl+4 {
			return nil, fmt.Errorf("%w: truncated at field %d", errFormat, i)
		}
		k := string(b[1 : 1+kl])
		if checkFieldName(k) != nil || (i > 0 && k <= prev) {
			return nil, fmt.Errorf("%w: field %d has a bad or unordered name", errFormat, i)
		}
		vl := binary.BigEndian.Uint32(b[1+kl:])
		b = b[1+kl+4:]
		total += kl + int(min(vl, MaxVersionBytes+1))
		if total > MaxVersionBytes || int(vl) > len(b) {
			return nil, fmt.Errorf("%w: field %d is too long", errFormat, i)
		}
		out[k] = string(b[:vl])
		b = b[vl:]
		prev = k
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last field", errFormat, len(b))
	}
	return out, nil
}

// equalRecord reports whether two parsed records are the same bytes (for
// tests of the parser).
func equalRecord(a, b record) bool {
	return a.Version == b.Version && bytes.Equal(a.Wrapped, b.Wrapped) && bytes.Equal(a.Nonce, b.Nonce) &&
		bytes.Equal(a.Sealed, b.Sealed) && bytes.Equal(a.AADHead, b.AADHead)
}
