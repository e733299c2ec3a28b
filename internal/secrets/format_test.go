package secrets

import (
	"bytes"
	"encoding/hex"
	"maps"
	"testing"
)

// The vector of docs/formats.md, "Secret version record": data key 32
// bytes 0x01, nonce 12 bytes 0x02, wrapped key "WRAPPED-KEY" (a stand-in
// for a KMS ciphertext), secret "app/db" version 1, fields
// {"password": "hunter2", "user": "app"}.
const (
	vectorFields = "0002" + "08" + "70617373776f7264" + "00000007" + "68756e74657232" + "04" + "75736572" + "00000003" + "617070"
	vectorHead   = "43534543" + "01" + "00000001" + "000b" + "575241505045442d4b4559"
	vectorNonce  = "020202020202020202020202"
)

func vectorInputs() (dk, nonce, wrapped []byte, f map[string]string) {
	return bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 12), []byte("WRAPPED-KEY"), map[string]string{"password": "hunter2", "user": "app"}
}

func TestFormatVector(t *testing.T) {
	dk, nonce, wrapped, f := vectorInputs()
	plain := encodeFields(f)
	if got := hex.EncodeToString(plain); got != vectorFields {
		t.Fatalf("fields encoding\n got %s\nwant %s", got, vectorFields)
	}
	rec, err := sealWithNonce(dk, 1, wrapped, "app/db", plain, nonce)
	if err != nil {
		t.Fatal(err)
	}
	h := hex.EncodeToString(rec)
	if h[:len(vectorHead)+len(vectorNonce)] != vectorHead+vectorNonce {
		t.Fatalf("header\n got %s\nwant %s", h[:len(vectorHead)+len(vectorNonce)], vectorHead+vectorNonce)
	}
	if h != vectorRecord {
		t.Fatalf("record\n got %s\nwant %s", h, vectorRecord)
	}
	p, err := parseRecord(rec)
	if err != nil || p.Version != 1 || string(p.Wrapped) != "WRAPPED-KEY" {
		t.Fatalf("parse: %+v %v", p, err)
	}
	aead, _ := newGCM(dk)
	out, err := aead.Open(nil, p.Nonce, p.Sealed, append(append([]byte(nil), p.AADHead...), "app/db"...))
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeFields(out)
	if err != nil || !maps.Equal(back, f) {
		t.Fatalf("fields back: %v %v", back, err)
	}
	// Another name is other AAD.
	if _, err := aead.Open(nil, p.Nonce, p.Sealed, append(append([]byte(nil), p.AADHead...), "app/dc"...)); err == nil {
		t.Fatal("opened under another name")
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := hex.DecodeString(vectorRecord)
	bad := map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("CSEX"), good[4:]...),
		"format":    append(append([]byte("CSEC"), 2), good[5:]...),
		"version 0": append(append([]byte("CSEC\x01"), 0, 0, 0, 0), good[9:]...),
		"truncated": good[:len(good)-len(good)/2],
		"no tag":    good[:headerFixed+11+nonceSize+tagSize-1],
	}
	for name, b := range bad {
		if _, err := parseRecord(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	fb, _ := hex.DecodeString(vectorFields)
	badFields := map[string][]byte{
		"count 0":   {0, 0},
		"unordered": encodeRaw([][2]string{{"user", "app"}, {"password", "x"}}),
		"duplicate": encodeRaw([][2]string{{"a", "1"}, {"a", "2"}}),
		"bad name":  encodeRaw([][2]string{{"a/b", "1"}}),
		"trailing":  append(append([]byte(nil), fb...), 0),
		"truncated": fb[:len(fb)-1],
	}
	for name, b := range badFields {
		if _, err := decodeFields(b); err == nil {
			t.Errorf("fields %s: parsed", name)
		}
	}
}

// encodeRaw encodes fields in the order given (encodeFields sorts).
func encodeRaw(kv [][2]string) []byte {
	b := []byte{0, byte(len(kv))}
	for _, p := range kv {
		b = append(b, byte(len(p[0])))
		b = append(b, p[0]...)
		b = append(b, 0, 0, 0, byte(len(p[1])))
		b = append(b, p[1]...)
	}
	return b
}

// FuzzParse: the record and field parsers never panic, and what they
// accept re-encodes to the same bytes.
func FuzzParse(f *testing.F) {
	good, _ := hex.DecodeString(vectorRecord)
	fb, _ := hex.DecodeString(vectorFields)
	f.Add(good)
	f.Add(fb)
	f.Add([]byte("CSEC\x01\x00\x00\x00\x01\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := parseRecord(b); err == nil {
			again := appendHeader(nil, r.Version, r.Wrapped)
			again = append(append(again, r.Nonce...), r.Sealed...)
			if !bytes.Equal(again, b) {
				t.Fatalf("record does not round-trip")
			}
			r2, err := parseRecord(again)
			if err != nil || !equalRecord(r, r2) {
				t.Fatalf("re-parse: %v", err)
			}
		}
		if m, err := decodeFields(b); err == nil {
			if !bytes.Equal(encodeFields(m), b) {
				t.Fatalf("fields do not round-trip")
			}
			if checkFields(m) != nil {
				t.Fatalf("parsed fields the writer refuses: %v", checkFields(m))
			}
		}
	})
}

const vectorRecord = vectorHead + vectorNonce + "07d4c1392b24b28abcbed8c85ca7c5dad7dba58a99838904aee292fb78fb771e070f72aa4d50693303f7f5e7878b0c879b31"
