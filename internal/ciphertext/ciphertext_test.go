package ciphertext

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// vector is one committed test vector. Good vectors decrypt to Plaintext with
// Key; bad ones must fail to parse (ParseError) or to open.
type vector struct {
	Name       string            `json:"name"`
	Key        string            `json:"key_hex"`
	Context    map[string]string `json:"context,omitempty"`
	Plaintext  string            `json:"plaintext_hex,omitempty"`
	Ciphertext string            `json:"ciphertext_hex"`
	// Expect is "ok", "parse-error" or "open-error".
	Expect string `json:"expect"`
}

func seal(t testing.TB, keyHex string, h Header, nonce []byte, plain []byte, ec map[string]string) []byte {
	t.Helper()
	key, _ := hex.DecodeString(keyHex)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, _ := cipher.NewGCM(block)
	out := AppendHeader(nil, h)
	aad, err := AppendContext(append([]byte{}, out...), ec)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, aad)
}

func open(v vector) ([]byte, error) {
	ct, _ := hex.DecodeString(v.Ciphertext)
	p, err := Parse(ct)
	if err != nil {
		return nil, err
	}
	key, _ := hex.DecodeString(v.Key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	aad, err := AppendContext(append([]byte{}, p.AADPrefix...), v.Context)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, p.Nonce, p.Sealed, aad)
}

func makeVectors(t *testing.T) []vector {
	key := strings.Repeat("42", 32)
	h := Header{KeyID: [16]byte{0x78, 0x9b, 0x70, 0xf3, 0x36, 0x9c, 0x49, 0xf7, 0xbe, 0xb2, 0x83, 0x94, 0xf1, 0xf1, 0xef, 0x89}, KeyVersion: 3}
	nonce := bytes.Repeat([]byte{7}, NonceSize)
	ctx := map[string]string{"namespace": "prod", "app": "billing"}
	good := seal(t, key, h, nonce, []byte("hello, coffer"), ctx)
	empty := seal(t, key, h, nonce, nil, nil)
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	hx := hex.EncodeToString
	return []vector{
		{Name: "hello with context", Key: key, Context: ctx, Plaintext: hx([]byte("hello, coffer")), Ciphertext: hx(good), Expect: "ok"},
		{Name: "empty plaintext, no context", Key: key, Plaintext: "", Ciphertext: hx(empty), Expect: "ok"},
		{Name: "wrong context", Key: key, Context: map[string]string{"namespace": "dev", "app": "billing"}, Ciphertext: hx(good), Expect: "open-error"},
		{Name: "missing context", Key: key, Ciphertext: hx(good), Expect: "open-error"},
		{Name: "key version changed", Key: key, Context: ctx, Ciphertext: hx(flip(good, 22)), Expect: "open-error"},
		{Name: "key id changed", Key: key, Context: ctx, Ciphertext: hx(flip(good, 5)), Expect: "open-error"},
		{Name: "tag flipped", Key: key, Context: ctx, Ciphertext: hx(flip(good, len(good)-1)), Expect: "open-error"},
		{Name: "nonce flipped", Key: key, Context: ctx, Ciphertext: hx(flip(good, HeaderSize)), Expect: "open-error"},
		{Name: "truncated", Key: key, Context: ctx, Ciphertext: hx(good[:Overhead-1]), Expect: "parse-error"},
		{Name: "bad magic", Key: key, Context: ctx, Ciphertext: hx(flip(good, 0)), Expect: "parse-error"},
		{Name: "future version", Key: key, Context: ctx, Ciphertext: hx(append([]byte{'C', 'F', 2}, good[3:]...)), Expect: "parse-error"},
		{Name: "version zero", Key: key, Ciphertext: hx(seal(t, key, Header{KeyID: h.KeyID}, nonce, nil, nil)), Expect: "parse-error"},
		{Name: "empty", Key: key, Ciphertext: "", Expect: "parse-error"},
	}
}

func TestVectors(t *testing.T) {
	path := "testdata/vectors.json"
	if *update {
		b, _ := json.MarshalIndent(makeVectors(t), "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 10 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			got, err := open(v)
			switch v.Expect {
			case "ok":
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if hex.EncodeToString(got) != v.Plaintext {
					t.Fatalf("plaintext %x, want %s", got, v.Plaintext)
				}
			case "parse-error":
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("want a parse error, got %v", err)
				}
			case "open-error":
				if err == nil || errors.Is(err, ErrMalformed) {
					t.Fatalf("want an authentication failure, got %v", err)
				}
			default:
				t.Fatalf("bad expect %q", v.Expect)
			}
		})
	}
}

// TestVectorsReproducible checks that sealing the committed inputs again
// gives the committed bytes, so the writer and the reader agree.
func TestVectorsReproducible(t *testing.T) {
	fresh := makeVectors(t)
	b, _ := os.ReadFile("testdata/vectors.json")
	var committed []vector
	json.Unmarshal(b, &committed)
	if len(committed) != len(fresh) {
		t.Fatalf("%d committed vectors, %d generated", len(committed), len(fresh))
	}
	for i := range fresh {
		if fresh[i].Ciphertext != committed[i].Ciphertext {
			t.Errorf("vector %q: writer output changed", fresh[i].Name)
		}
	}
}

func TestContextCanonical(t *testing.T) {
	a, _ := AppendContext(nil, map[string]string{"b": "2", "a": "1"})
	b, _ := AppendContext(nil, map[string]string{"a": "1", "b": "2"})
	if !bytes.Equal(a, b) {
		t.Fatal("encoding depends on map order")
	}
	want := []byte{2, 1, 'a', 1, '1', 1, 'b', 1, '2'}
	if !bytes.Equal(a, want) {
		t.Fatalf("got %v want %v", a, want)
	}
	// Length prefixes keep ("ab","c") and ("a","bc") apart.
	x, _ := AppendContext(nil, map[string]string{"ab": "c"})
	y, _ := AppendContext(nil, map[string]string{"a": "bc"})
	if bytes.Equal(x, y) {
		t.Fatal("ambiguous encoding")
	}
	nilCtx, _ := AppendContext(nil, nil)
	emptyCtx, _ := AppendContext(nil, map[string]string{})
	if !bytes.Equal(nilCtx, emptyCtx) {
		t.Fatal("nil and empty contexts differ")
	}
	big := map[string]string{}
	for i := 0; i <= MaxContextPairs; i++ {
		big[strings.Repeat("k", i+1)] = "v"
	}
	if _, err := AppendContext(nil, big); err == nil {
		t.Fatal("too many pairs accepted")
	}
	if _, err := AppendContext(nil, map[string]string{"": "v"}); err == nil {
		t.Fatal("empty key accepted")
	}
	if _, err := AppendContext(nil, map[string]string{"k": strings.Repeat("v", MaxContextBytes)}); err == nil {
		t.Fatal("oversized context accepted")
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile("testdata/vectors.json")
	var vs []vector
	json.Unmarshal(b, &vs)
	for _, v := range vs {
		ct, _ := hex.DecodeString(v.Ciphertext)
		f.Add(ct)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// A parsed ciphertext re-serializes to the same header.
		if got := AppendHeader(nil, p.Header); !bytes.Equal(got, in[:HeaderSize]) {
			t.Fatalf("header round trip: %x vs %x", got, in[:HeaderSize])
		}
		if len(p.Nonce) != NonceSize || len(p.Sealed) < TagSize {
			t.Fatalf("bad split: nonce %d sealed %d", len(p.Nonce), len(p.Sealed))
		}
	})
}

func BenchmarkAppendContext(b *testing.B) {
	ctx := map[string]string{"namespace": "prod", "app": "billing", "env": "eu"}
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf, _ = AppendContext(buf[:0], ctx)
	}
}
