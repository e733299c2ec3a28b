package sealedfile

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Sealed values: ENC[coffer:v1,<standard base64 with padding>]. The
// decoded bytes are nonce (12) || ciphertext || tag (16).
const (
	valuePrefix   = "ENC[coffer:"
	valuePrefixV1 = "ENC[coffer:v1,"
	valueSuffix   = "]"
	nonceSize     = 12
	tagSize       = 16
	// maxValueSize bounds a value's plaintext (1 MiB), so that a sealed
	// value is at most about 1.4 MiB of text.
	maxValueSize = 1 << 20
)

// ErrMalformedValue is wrapped by the errors of ParseValue.
var ErrMalformedValue = errors.New("malformed sealed value")

// IsSealedValue reports whether s looks like a Coffer sealed value (it
// starts with "ENC[coffer:"); ParseValue says whether it is a valid one.
// Other ENC[...] values (SOPS's, say) are not Coffer's and stay plaintext.
func IsSealedValue(s string) bool {
	return strings.HasPrefix(s, valuePrefix)
}

// ParseValue decodes a sealed value into its nonce and sealed bytes
// (ciphertext || tag). It never panics and allocates at most the size of s.
func ParseValue(s string) (nonce, sealed []byte, err error) {
	if !IsSealedValue(s) {
		return nil, nil, fmt.Errorf("%w: it does not start with %q", ErrMalformedValue, valuePrefix)
	}
	if !strings.HasPrefix(s, valuePrefixV1) {
		ver, _, _ := strings.Cut(s[len(valuePrefix):], ",")
		if len(ver) > 16 {
			ver = ver[:16] + "..."
		}
		return nil, nil, fmt.Errorf("%w: version %q is not supported (this Coffer reads v1; a newer Coffer may have sealed it)", ErrMalformedValue, ver)
	}
	if !strings.HasSuffix(s, valueSuffix) {
		return nil, nil, fmt.Errorf("%w: it does not end with %q (truncated?)", ErrMalformedValue, valueSuffix)
	}
	body := s[len(valuePrefixV1) : len(s)-len(valueSuffix)]
	if len(body) > base64.StdEncoding.EncodedLen(maxValueSize+1+nonceSize+tagSize) {
		return nil, nil, fmt.Errorf("%w: %d bytes is over the size limit", ErrMalformedValue, len(body))
	}
	if i := strings.IndexAny(body, "\r\n"); i >= 0 {
		// Go's base64 decoder skips line breaks even in strict mode; a
		// sealed value is one line, so there is exactly one encoding.
		return nil, nil, fmt.Errorf("%w: a line break inside the value at byte %d; sealed values are one line", ErrMalformedValue, i)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(body)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: bad base64: %v", ErrMalformedValue, err)
	}
	if len(raw) < nonceSize+tagSize+1 {
		return nil, nil, fmt.Errorf("%w: %d bytes is too short (want at least %d)", ErrMalformedValue, len(raw), nonceSize+tagSize+1)
	}
	return raw[:nonceSize], raw[nonceSize:], nil
}

// formatValue encodes nonce || sealed as a sealed value.
func formatValue(nonceAndSealed []byte) string {
	return valuePrefixV1 + base64.StdEncoding.EncodeToString(nonceAndSealed) + valueSuffix
}
