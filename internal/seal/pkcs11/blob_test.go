package pkcs11

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/cofferkms/coffer/internal/seal"
)

func decodeHex(s string) ([]byte, error) { return hex.DecodeString(s) }

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seq returns n bytes counting up from start.
func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// The encodings of docs/formats.md, pinned: a change of the format breaks
// stored root keys and must be a new version.
const (
	vectorGCM = "010104726f6f74020a0b0c000102030405060708090a0b0030" +
		"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
	vectorGCMAAD = "636f666665722d726f6f742d6b65792f706b637331312f763100" + "010104726f6f74020a0b"
	vectorKWP    = "010204726f6f7400000028" + "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627"
)

func TestBlobVector(t *testing.T) {
	gcm := &blob{mech: mechAESGCM, keyLabel: "root", keyID: []byte{0x0a, 0x0b}, iv: seq(0, 12), ciphertext: seq(0xa0, 48)}
	if got := hex.EncodeToString(gcm.marshal()); got != vectorGCM {
		t.Fatalf("aes-gcm blob encodes to\n%s\nwant\n%s", got, vectorGCM)
	}
	if got := hex.EncodeToString(gcm.aad()); got != vectorGCMAAD {
		t.Fatalf("aes-gcm additional data is\n%s\nwant\n%s", got, vectorGCMAAD)
	}
	p, err := parseBlob(mustHex(t, vectorGCM))
	if err != nil {
		t.Fatal(err)
	}
	if p.mech != mechAESGCM || p.keyLabel != "root" || !bytes.Equal(p.keyID, []byte{0x0a, 0x0b}) ||
		!bytes.Equal(p.iv, seq(0, 12)) || !bytes.Equal(p.ciphertext, seq(0xa0, 48)) {
		t.Fatalf("parsed %+v", p)
	}

	kwp := &blob{mech: mechAESKWP, keyLabel: "root", ciphertext: seq(0, 40)}
	if got := hex.EncodeToString(kwp.marshal()); got != vectorKWP {
		t.Fatalf("aes-key-wrap-pad blob encodes to\n%s\nwant\n%s", got, vectorKWP)
	}
	p, err = parseBlob(mustHex(t, vectorKWP))
	if err != nil {
		t.Fatal(err)
	}
	if p.mech != mechAESKWP || p.keyLabel != "root" || len(p.keyID) != 0 || len(p.iv) != 0 || !bytes.Equal(p.ciphertext, seq(0, 40)) {
		t.Fatalf("parsed %+v", p)
	}
}

// TestParseBlobRejects checks each bound of the parser.
func TestParseBlobRejects(t *testing.T) {
	good := mustHex(t, vectorGCM)
	rsa := (&blob{mech: mechRSAOAEP, keyLabel: "r", ciphertext: make([]byte, 384)}).marshal()
	if _, err := parseBlob(rsa); err != nil {
		t.Fatalf("a 3072-bit rsa-oaep blob: %v", err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	cases := map[string][]byte{
		"empty":           {},
		"version 0":       mod(func(b []byte) []byte { b[0] = 0; return b }),
		"version 2":       mod(func(b []byte) []byte { b[0] = 2; return b }),
		"mechanism 0":     mod(func(b []byte) []byte { b[1] = 0; return b }),
		"mechanism 4":     mod(func(b []byte) []byte { b[1] = 4; return b }),
		"gcm as kwp":      mod(func(b []byte) []byte { b[1] = byte(mechAESKWP); return b }),
		"truncated":       good[:len(good)-1],
		"trailing byte":   append(append([]byte{}, good...), 0),
		"header only":     good[:10],
		"empty label":     (&blob{mech: mechAESKWP, ciphertext: make([]byte, 40)}).marshal(),
		"gcm iv 16":       (&blob{mech: mechAESGCM, keyLabel: "k", iv: make([]byte, 16), ciphertext: make([]byte, 48)}).marshal(),
		"gcm ct 47":       (&blob{mech: mechAESGCM, keyLabel: "k", iv: make([]byte, 12), ciphertext: make([]byte, 47)}).marshal(),
		"kwp with iv":     (&blob{mech: mechAESKWP, keyLabel: "k", iv: make([]byte, 12), ciphertext: make([]byte, 40)}).marshal(),
		"kwp ct 48":       (&blob{mech: mechAESKWP, keyLabel: "k", ciphertext: make([]byte, 48)}).marshal(),
		"rsa 1024 bits":   (&blob{mech: mechRSAOAEP, keyLabel: "k", ciphertext: make([]byte, 128)}).marshal(),
		"rsa 16384 bits":  (&blob{mech: mechRSAOAEP, keyLabel: "k", ciphertext: make([]byte, 2048)}).marshal(),
		"rsa with iv":     (&blob{mech: mechRSAOAEP, keyLabel: "k", iv: make([]byte, 12), ciphertext: make([]byte, 256)}).marshal(),
		"ct length short": mod(func(b []byte) []byte { b[len(b)-49] = 0x2f; return b }),
	}
	for name, data := range cases {
		if _, err := parseBlob(data); err == nil {
			t.Errorf("%s: parsed", name)
		} else {
			wantErr(t, err, seal.ErrBlob)
		}
	}
}

// FuzzParseBlob: the parser never panics, and what it accepts encodes back
// to the same bytes (one encoding per blob).
func FuzzParseBlob(f *testing.F) {
	f.Add(mustHex(f, vectorGCM))
	f.Add(mustHex(f, vectorKWP))
	f.Add((&blob{mech: mechRSAOAEP, keyLabel: "r", keyID: []byte{1}, ciphertext: make([]byte, 256)}).marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseBlob(data)
		if err != nil {
			if b != nil {
				t.Fatal("a blob and an error")
			}
			return
		}
		if err := b.check(); err != nil {
			t.Fatalf("accepted a blob its check refuses: %v", err)
		}
		if got := b.marshal(); !bytes.Equal(got, data) {
			t.Fatalf("re-encodes to %x, was %x", got, data)
		}
	})
}
