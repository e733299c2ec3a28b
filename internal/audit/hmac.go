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

type hmacState struct {
	h   hash.Hash
	in  []byte
	mac []byte
}

func newHMACPool(k *Keys) *hmacPool {
	p := &hmacPool{}
	p.pool.New = func() any {
		return &hmacState{h: hmac.New(sha256.New, k.hmacKey), in: make([]byte, 0, 128), mac: make([]byte, 0, sha256.Size)}
	}
	return p
}

// sum returns hex(HMAC-SHA256(audit key, value)), the same as Keys.HMAC.
func (p *hmacPool) sum(value string) string {
	s := p.pool.Get().(*hmacState)
	s.h.Reset()
	s.in = append(s.in[:0], value...)
	s.h.Write(s.in)
	s.mac = s.h.Sum(s.mac[:0])
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], s.mac)
	if cap(s.in) > 4<<10 {
		s.in = nil
	}
	p.pool.Put(s)
	return string(out[:])
}
