package format

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func sample() *Header {
	h := &Header{
		Algorithm:   AlgAES256GCMHKDFStream,
		SegmentSize: 65536,
		Context:     map[string]string{"b": "2", "a": "1"},
		Stanzas: []Stanza{
			{Type: "coffer", KeyID: "0f6b1c1e-0000-4000-8000-000000000001", KeyVersion: 3, Body: []byte("wrapped")},
			{Type: "local", KeyID: "dr", KeyVersion: 1, Body: []byte{1}},
		},
	}
	for i := range h.Salt {
		h.Salt[i] = byte(i)
	}
	return h
}

func serialize(t testing.TB, h *Header) []byte {
	b, err := AppendBody(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, h.Commitment[:]...)
	return append(b, h.MAC[:]...)
}

func TestRoundTrip(t *testing.T) {
	h := sample()
	h.Commitment[0], h.MAC[31] = 7, 9
	raw := serialize(t, h)
	got, body, err := Read(bytes.NewReader(append(raw, "segments"...)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, raw[:len(raw)-64]) {
		t.Error("body differs")
	}
	if got.SegmentSize != h.SegmentSize || got.Salt != h.Salt || got.Commitment != h.Commitment || got.MAC != h.MAC ||
		len(got.Stanzas) != 2 || got.Stanzas[0].KeyID != h.Stanzas[0].KeyID || got.Stanzas[0].KeyVersion != 3 ||
		got.Context["a"] != "1" || len(got.Context) != 2 {
		t.Errorf("got %+v", got)
	}
}

func TestAppendBodyLimits(t *testing.T) {
	for name, edit := range map[string]func(*Header){
		"no stanzas":    func(h *Header) { h.Stanzas = nil },
		"17 stanzas":    func(h *Header) { h.Stanzas = make([]Stanza, 17) },
		"empty type":    func(h *Header) { h.Stanzas[0].Type = "" },
		"space in type": func(h *Header) { h.Stanzas[0].Type = "a b" },
		"long key id":   func(h *Header) { h.Stanzas[0].KeyID = strings.Repeat("k", 256) },
		"empty body":    func(h *Header) { h.Stanzas[0].Body = nil },
		"big body":      func(h *Header) { h.Stanzas[0].Body = make([]byte, MaxBodyLen+1) },
		"segment":       func(h *Header) { h.SegmentSize = 1 },
		"context key":   func(h *Header) { h.Context = map[string]string{"": "x"} },
		"context size":  func(h *Header) { h.Context = map[string]string{"k": strings.Repeat("v", MaxContextBytes)} },
	} {
		h := sample()
		edit(h)
		if _, err := AppendBody(nil, h); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestReadErrors(t *testing.T) {
	raw := serialize(t, sample())
	ctxAt := fixedSize + 2
	for _, tc := range []struct {
		name string
		in   []byte
		is   error
	}{
		{"empty", nil, ErrTruncated},
		{"magic", []byte("CFEX\x01\x01"), ErrNotEnvelope},
		{"every truncation", nil, ErrTruncated},
		{"non-canonical context", func() []byte {
			b := bytes.Clone(raw)
			b[ctxAt+2], b[ctxAt+5] = 'b', 'a' // swap the key names: unsorted
			return b
		}(), ErrMalformed},
		{"body too long", func() []byte {
			b, _ := AppendBody(nil, sample())
			i := bytes.Index(b, []byte("wrapped")) - 2
			b[i], b[i+1] = 0xff, 0xff
			return b
		}(), ErrMalformed},
	} {
		if tc.name == "every truncation" {
			for n := range len(raw) {
				if _, _, err := Read(bytes.NewReader(raw[:n])); !errors.Is(err, ErrTruncated) {
					t.Fatalf("cut at %d: %v", n, err)
				}
			}
			continue
		}
		if _, _, err := Read(bytes.NewReader(tc.in)); !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
	}
}

func TestContextCanonical(t *testing.T) {
	for _, m := range []map[string]string{nil, {"a": ""}, {"z": "1", "a": "2", "é": "ü"}} {
		b, err := AppendContext(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseContext(b)
		if err != nil || len(got) != len(m) {
			t.Fatalf("%v: %v %v", m, got, err)
		}
		for k, v := range m {
			if got[k] != v {
				t.Errorf("%q: %q", k, got[k])
			}
		}
	}
	for _, bad := range [][]byte{{}, {0x80, 0x00}, {1, 0, 0}, {0, 0}, {2, 1, 'b', 0, 1, 'a', 0}, {1, 5, 'a'}} {
		if _, err := ParseContext(bad); err == nil {
			t.Errorf("%x: accepted", bad)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add(serialize(f, sample()))
	f.Add([]byte("CFEN\x01\x01\x00\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, body, err := Read(bytes.NewReader(in))
		if err != nil {
			return
		}
		// What parses re-serializes to the same bytes.
		again, err := AppendBody(nil, h)
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("re-serialization differs: %v", err)
		}
	})
}
