package server

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/ciphertext"
)

// vaultVectorBlob is a Coffer ciphertext of key 00112233-4455-6677-8899-
// aabbccddeeff, version 3, nonce 0x01 * 12 and a 16-byte sealed part of
// 0x02 (docs/formats.md, "Vault transit ciphertext").
func vaultVectorBlob() []byte {
	b := []byte{'C', 'F', 1}
	b = append(b, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff)
	b = binary.BigEndian.AppendUint32(b, 3)
	b = append(b, bytes.Repeat([]byte{1}, 12)...)
	return append(b, bytes.Repeat([]byte{2}, 16)...)
}

// The format is pinned byte for byte: a stored transit ciphertext must
// read the same in every later version.
const vaultVector = "vault:v3:Q0YBABEiM0RVZneImaq7zN3u/wAAAAMBAQEBAQEBAQEBAQECAgICAgICAgICAgICAgIC"

func TestVaultCiphertextVector(t *testing.T) {
	blob := vaultVectorBlob()
	if got := formatVaultCiphertext(blob, 3); got != vaultVector {
		t.Fatalf("format: %s", got)
	}
	ct, v, err := parseVaultCiphertext(vaultVector)
	if err != nil || v != 3 || !bytes.Equal(ct, blob) {
		t.Fatalf("parse: %v %d %x", err, v, ct)
	}
	b64 := base64.StdEncoding.EncodeToString(blob)
	for _, bad := range []string{
		"vault:v2:" + b64,  // the prefix names another version than the header
		"vault:v03:" + b64, // leading zero
		"vault:v:" + b64,   // no version
		"vault:v3" + b64,   // no separator
		"vault:3:" + b64,   // no v
		"vault:v3:" + b64[:len(b64)-4] + "====",
		"vault:v3:" + b64 + "\n",
		"vault:v3:" + strings.ReplaceAll(b64, "/", "_"), // URL-safe
		"vault:v3:" + base64.StdEncoding.EncodeToString(blob[:20]),
		"vault:v4294967296:" + b64,
		b64,
	} {
		if _, _, err := parseVaultCiphertext(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// Whatever it is given, the parser does not panic, and what it accepts
// is exactly what format writes: the version is the header's, and the
// text is canonical (one text per ciphertext).
func FuzzParseVaultCiphertext(f *testing.F) {
	f.Add(vaultVector)
	f.Add("vault:v1:")
	f.Add("vault:v0:Q0YB")
	f.Add("vault:v99999999999:x")
	f.Fuzz(func(t *testing.T, s string) {
		ct, v, err := parseVaultCiphertext(s)
		if err != nil {
			return
		}
		p, perr := ciphertext.Parse(ct)
		if perr != nil || p.KeyVersion != v || v == 0 {
			t.Fatalf("accepted %q: version %d, header %v", s, v, perr)
		}
		if back := formatVaultCiphertext(ct, v); back != s {
			t.Fatalf("accepted %q, which formats as %q", s, back)
		}
	})
}
