package audit

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"strings"
	"testing"
)

// spyHash is SHA-256 that remembers what was written to it since its last
// Reset: the bytes a real hash may still hold in its block buffer.
type spyHash struct {
	hash.Hash
	pending []byte
}

func (s *spyHash) Write(b []byte) (int, error) {
	s.pending = append(s.pending, b...)
	return s.Hash.Write(b)
}

func (s *spyHash) Reset() { s.pending = s.pending[:0]; s.Hash.Reset() }

// TestPooledHMACKeepsNoInput: a pooled HMAC state that goes back to the
// pool holds no copy of the token or context value it hashed, neither in
// its input buffer nor in the hash's unprocessed block.
func TestPooledHMACKeepsNoInput(t *testing.T) {
	var spies []*spyHash
	newHash := func() hash.Hash { s := &spyHash{Hash: sha256.New()}; spies = append(spies, s); return s }
	k := testKeys(t)
	s := newHMACState(newHash, k.hmacKey)
	for _, v := range []string{"cft_Secret_token_0123456789", strings.Repeat("v", 100), "tenant-acme"} {
		if got, want := s.sum(v), k.HMAC(v); got != want {
			t.Fatalf("HMAC(%q) = %s, want %s", v, got, want)
		}
		if bytes.Contains(s.in[:cap(s.in)], []byte(v)) {
			t.Fatalf("the pooled input buffer still holds %q", v)
		}
		for i, sp := range spies {
			if bytes.Contains(sp.pending, []byte(v)) {
				t.Fatalf("hash %d of the pooled state still holds %q unprocessed", i, v)
			}
		}
	}
}
