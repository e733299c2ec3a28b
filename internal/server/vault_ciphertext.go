package server

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/cofferkms/coffer/internal/ciphertext"
	"github.com/cofferkms/coffer/internal/keys"
)

// vaultPrefix starts every transit ciphertext (docs/formats.md, "Vault
// transit ciphertext"): vault:v<N>:<base64 of Coffer's ciphertext>, where
// N is the key version the Coffer ciphertext's header names.
const vaultPrefix = "vault:v"

// formatVaultCiphertext wraps a Coffer ciphertext in Vault's text form.
func formatVaultCiphertext(ct []byte, version uint32) string {
	return vaultPrefix + strconv.FormatUint(uint64(version), 10) + ":" + base64.StdEncoding.EncodeToString(ct)
}

// parseVaultCiphertext returns the Coffer ciphertext a transit ciphertext
// holds and its key version. The version of the prefix must be the one
// of the Coffer header inside: a text whose prefix was edited is refused
// before anything is decrypted.
func parseVaultCiphertext(s string) ([]byte, uint32, error) {
	rest, ok := strings.CutPrefix(s, vaultPrefix)
	if !ok {
		return nil, 0, fmt.Errorf("%w: a transit ciphertext starts with %q", keys.ErrInvalidCiphertext, vaultPrefix+"N:")
	}
	num, b64, ok := strings.Cut(rest, ":")
	if !ok || num == "" || len(num) > 10 || num[0] == '0' {
		return nil, 0, fmt.Errorf("%w: want vault:v<version>:<base64>, the version a whole number from 1", keys.ErrInvalidCiphertext)
	}
	v, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: the version %q is not a whole number from 1 to 4294967295", keys.ErrInvalidCiphertext, num)
	}
	// The decoder skips line breaks; a text with them is not the one
	// format writes.
	ct, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || strings.ContainsAny(b64, "\r\n") {
		return nil, 0, fmt.Errorf("%w: the part after the version is not standard base64", keys.ErrInvalidCiphertext)
	}
	p, err := ciphertext.Parse(ct)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", keys.ErrInvalidCiphertext, err)
	}
	if p.KeyVersion != uint32(v) {
		return nil, 0, fmt.Errorf("%w: the prefix names key version %d but the ciphertext was made with version %d", keys.ErrInvalidCiphertext, v, p.KeyVersion)
	}
	return ct, uint32(v), nil
}
