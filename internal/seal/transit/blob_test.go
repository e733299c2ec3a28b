package transit

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/seal"
)

// vectorHex is a v1 blob: key reference alias/unseal, context
// {cluster: coffer-a, coffer-seal: root-key}, and a Coffer ciphertext of
// key 00112233-4455-6677-8899-aabbccddeeff version 2 (nonce 10..1b, sealed
// bytes a0..cf). docs/formats.md shows the same bytes.
const vectorHex = "01000c616c6961732f756e7365616c020007636c75737465720008636f666665" +
	"722d61000b636f666665722d7365616c0008726f6f742d6b6579005343460100" +
	"112233445566778899aabbccddeeff00000002101112131415161718191a1ba0" +
	"a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0" +
	"c1c2c3c4c5c6c7c8c9cacbcccdcecf"

func vector(t testing.TB) []byte {
	b, err := hex.DecodeString(vectorHex)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBlobVector(t *testing.T) {
	raw := vector(t)
	b, err := parseBlob(raw)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	wantCtx := map[string]string{"cluster": "coffer-a", "coffer-seal": "root-key"}
	if b.keyRef != "alias/unseal" || !maps.Equal(b.context, wantCtx) {
		t.Fatalf("parsed ref %q context %v", b.keyRef, b.context)
	}
	if b.keyID() != "00112233-4455-6677-8899-aabbccddeeff" || b.header.KeyVersion != 2 {
		t.Fatalf("parsed key %s version %d", b.keyID(), b.header.KeyVersion)
	}
	if len(b.ciphertext) != 83 || !bytes.Equal(b.ciphertext, raw[len(raw)-83:]) {
		t.Fatal("parsed ciphertext differs from the vector's")
	}
	// The encoding is pinned: the same fields give the same bytes.
	enc, err := encodeBlob(b.keyRef, b.context, b.ciphertext)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, raw) {
		t.Fatalf("encoding changed:\n got %x\nwant %x", enc, raw)
	}
}

// mutate rebuilds the vector with changes, per the documented layout.
type fields struct {
	version byte
	ref     string
	pairs   [][2]string // in this order
	ct      []byte
	trail   []byte
}

func vectorFields(t testing.TB) fields {
	raw := vector(t)
	return fields{version: 1, ref: "alias/unseal",
		pairs: [][2]string{{"cluster", "coffer-a"}, {"coffer-seal", "root-key"}},
		ct:    bytes.Clone(raw[len(raw)-83:])}
}

func (f fields) bytes() []byte {
	out := []byte{f.version}
	out = binary.BigEndian.AppendUint16(out, uint16(len(f.ref)))
	out = append(out, f.ref...)
	out = append(out, byte(len(f.pairs)))
	for _, p := range f.pairs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p[0])))
		out = append(out, p[0]...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(p[1])))
		out = append(out, p[1]...)
	}
	out = binary.BigEndian.AppendUint16(out, uint16(len(f.ct)))
	out = append(out, f.ct...)
	return append(out, f.trail...)
}

func TestParseBlobRejects(t *testing.T) {
	if _, err := parseBlob(vectorFields(t).bytes()); err != nil {
		t.Fatalf("the unchanged fields do not parse: %v", err)
	}
	big := strings.Repeat("v", 4096)
	cases := map[string]struct {
		change func(*fields)
		want   string
	}{
		"version 0":        {func(f *fields) { f.version = 0 }, "format version 0"},
		"version 2":        {func(f *fields) { f.version = 2 }, "format version 2"},
		"empty key ref":    {func(f *fields) { f.ref = "" }, "key reference is 0 bytes"},
		"key ref space":    {func(f *fields) { f.ref = "alias/un seal" }, "spaces"},
		"key ref too long": {func(f *fields) { f.ref = strings.Repeat("k", 257) }, "key reference is 257 bytes"},
		"no pairs":         {func(f *fields) { f.pairs = nil }, "0 context pairs"},
		"unsorted":         {func(f *fields) { f.pairs[0], f.pairs[1] = f.pairs[1], f.pairs[0] }, "strictly increasing"},
		"duplicate": {func(f *fields) {
			f.pairs = [][2]string{{"coffer-seal", "root-key"}, {"coffer-seal", "root-key"}}
		}, "strictly increasing"},
		"no purpose":       {func(f *fields) { f.pairs = f.pairs[:1] }, "lacks coffer-seal"},
		"other purpose":    {func(f *fields) { f.pairs[1][1] = "data-key" }, "lacks coffer-seal"},
		"probe":            {func(f *fields) { f.pairs = append(f.pairs, [2]string{"coffer-seal-probe", "health"}) }, "health probe"},
		"empty name":       {func(f *fields) { f.pairs = append([][2]string{{"", "x"}}, f.pairs...) }, "context name is 0 bytes"},
		"value too long":   {func(f *fields) { f.pairs[0][1] = big + "v" }, "context value is 4097 bytes"},
		"context too big":  {func(f *fields) { f.pairs = append([][2]string{{"a", big}, {"b", big}}, f.pairs...) }, "context is 8"},
		"trailing byte":    {func(f *fields) { f.trail = []byte{0} }, "1 bytes follow"},
		"short ciphertext": {func(f *fields) { f.ct = f.ct[:82] }, "ciphertext is 82 bytes"},
		"long ciphertext":  {func(f *fields) { f.ct = append(f.ct, 0) }, "ciphertext is 84 bytes"},
		"not coffer":       {func(f *fields) { f.ct[0] = 'X' }, "magic"},
		"ciphertext v2":    {func(f *fields) { f.ct[2] = 2 }, "format version 2 is not supported"},
		"key version 0":    {func(f *fields) { copy(f.ct[19:23], []byte{0, 0, 0, 0}) }, "key version 0"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := vectorFields(t)
			c.change(&f)
			_, err := parseBlob(f.bytes())
			if !errors.Is(err, seal.ErrBlob) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("parse = %v, want ErrBlob saying %q", err, c.want)
			}
		})
	}
	// Every truncation fails.
	raw := vector(t)
	for n := range len(raw) {
		if _, err := parseBlob(raw[:n]); !errors.Is(err, seal.ErrBlob) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
}

func TestEncodeBlobBounds(t *testing.T) {
	f := vectorFields(t)
	ctx := map[string]string{PurposeName: PurposeValue}
	for i := range 300 { // more pairs than a byte counts: refused, not wrapped around
		ctx[strings.Repeat("n", i+1)] = ""
	}
	if _, err := encodeBlob(f.ref, ctx, f.ct); !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("encode of 301 pairs = %v", err)
	}
	if _, err := encodeBlob(f.ref, map[string]string{PurposeName: PurposeValue, strings.Repeat("n", 70000): ""}, f.ct); !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("encode of a 70000-byte name = %v", err)
	}
	if _, err := encodeBlob(f.ref, map[string]string{"x": "y"}, f.ct); !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("encode without the purpose pair = %v", err)
	}
}

func FuzzParseBlob(f *testing.F) {
	raw := vector(f)
	f.Add(raw)
	f.Add(raw[:40])
	f.Add([]byte{1})
	f.Add([]byte{1, 0xff, 0xff})
	fl := vectorFields(f)
	fl.pairs = append(fl.pairs, [2]string{"z", ""})
	f.Add(fl.bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseBlob(data)
		if err != nil {
			if !errors.Is(err, seal.ErrBlob) {
				t.Fatalf("error does not wrap ErrBlob: %v", err)
			}
			return
		}
		// One encoding per value: what parses encodes back to itself.
		enc, err := encodeBlob(b.keyRef, b.context, b.ciphertext)
		if err != nil {
			t.Fatalf("a parsed blob does not encode: %v", err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", enc, data)
		}
		if b.context[PurposeName] != PurposeValue {
			t.Fatal("parsed a blob without the purpose pair")
		}
	})
}
