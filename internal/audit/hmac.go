package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
)

// hmacPool computes Keys.HMAC with keyed HMAC-SHA256 states taken from a
// pool: Reset restores the keyed state without hashing the key again, and
// only the result is allocated.
type hmacPool struct {
	pool sync.Pool
}

// hmacState is one pooled HMAC. Between uses it holds nothing of the last
// value hashed (a bearer token, a context value): sum wipes its copy of
// the input and resets the keyed hash, whose block buffer would otherwise
// keep the tail of the input until the next use.
type hmacState struct {
	h   hash.Hash
	in  []byte
	mac []byte
}

func newHMACState(newHash func() hash.Hash, key []byte) *hmacState {
	return &hmacState{h: hmac.New(newHash, key), in: make([]byte, 0, 128), mac: make([]byte, 0, sha256.Size)}
}

func newHMACPool(k *Keys) *hmacPool {
	p := &hmacPool{}
	p.pool.New = func() any { return newHMACState(sha256.New, k.hmacKey) }
	return p
}

// sum returns hex(HMAC-SHA256(audit key, value)), the same as Keys.HMAC.
func (p *hmacPool) sum(value string) string {
	s := p.pool.Get().(*hmacState)
	out := s.sum(value)
	p.pool.Put(s)
	return out
}

// sum hashes value and leaves s holding no trace of it.
func (s *hmacState) sum(value string) string {
	s.h.Reset()
	s.in = append(s.in[:0], value...)
	s.h.Write(s.in)
	s.mac = s.h.Sum(s.mac[:0])
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], s.mac)
	// Wipe the raw input: the copy here and the block buffer of the hash.
	clear(s.in[:cap(s.in)])
	s.h.Reset()
	if cap(s.in) > 4<<10 {
		s.in = nil
	}
	return string(out[:])
}
