package envelope

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/envelope/internal/format"
)

// Default cache limits, used for a zero field of CacheLimits.
const (
	DefaultCacheMaxAge      = 5 * time.Minute
	DefaultCacheMaxMessages = 4096
	DefaultCacheMaxBytes    = 4 << 30
	DefaultCacheMaxEntries  = 256
)

// CacheLimits bound how long and how much a cached data key is used. Every
// limit applies; a zero field takes its default, a negative one is an
// error.
type CacheLimits struct {
	// MaxAge is how long after it was made a data key may still start a
	// file (or be reused to decrypt one).
	MaxAge time.Duration
	// MaxMessages is how many files one data key may encrypt (or decrypt).
	MaxMessages int64
	// MaxBytes is how many plaintext bytes one data key may encrypt. A
	// key is retired once the files it sealed reach MaxBytes; files still
	// being written when that happens may overshoot by their own size.
	MaxBytes int64
	// MaxEntries bounds the number of keys held (one per encryption
	// context, and one per distinct wrapped key for decryption); the
	// oldest is dropped first.
	MaxEntries int
	// Now is the clock; nil means time.Now. Tests pass a fake clock.
	Now func() time.Time
}

// CachingWrapper reuses data keys so that encrypting many small files
// does not call Coffer for each: it is a Generator whose data key (and
// its wrapped copies) is reused for files with the same encryption
// context within the limits, and an Unwrapper that remembers the keys it
// unwrapped. Retired keys are zeroed. It is safe for concurrent use.
//
// Reusing a data key is safe with this format: each file derives its own
// key from a random 256-bit salt, so nonces never repeat across files.
// The cost is exposure: a key that leaks from memory opens every file it
// sealed, which is what the limits bound.
//
// A cached key is used without asking the server. A decryption served
// from the cache is not authorized, not audited and not stopped by a
// revocation: until the entry ages out (MaxAge) or is used up
// (MaxMessages), this process keeps decrypting files whose data key it
// unwrapped once, even after its token was revoked, its policy narrowed
// or the key disabled or scheduled for deletion, and the server's audit
// log shows only the first unwrap (likewise, encryption under a cached
// key is recorded once, as the GenerateDataKey that made it). Use the cache
// only in a process that is trusted with the data for MaxAge anyway; keep
// MaxAge short where revocation must act at once, and call Purge when the
// process's access is withdrawn. Without the cache, every file's unwrap
// goes to the server and is authorized and audited on its own.
type CachingWrapper struct {
	w      Wrapper
	u      Unwrapper
	limits CacheLimits

	encMu                                             sync.Mutex
	enc                                               map[string]*cacheEntry
	decMu                                             sync.Mutex
	dec                                               map[string]*cacheEntry
	encHits, encMisses, decHits, decMisses, evictions atomic.Int64
}

type cacheEntry struct {
	key      []byte
	stanzas  []Stanza
	created  time.Time
	messages int64
	bytes    int64
}

// CacheStats count the cache's work.
type CacheStats struct {
	// Hits and Misses of data key requests for encryption.
	EncryptHits, EncryptMisses int64
	// Hits and Misses of unwraps.
	DecryptHits, DecryptMisses int64
	// Evictions counts keys retired and zeroed.
	Evictions int64
}

// NewCachingWrapper returns a cache in front of w (for encryption) and u
// (for decryption); either may be nil when the cache serves only the
// other direction. A Coffer wrapper serves as both.
func NewCachingWrapper(w Wrapper, u Unwrapper, limits CacheLimits) (*CachingWrapper, error) {
	if limits.MaxAge < 0 || limits.MaxMessages < 0 || limits.MaxBytes < 0 || limits.MaxEntries < 0 {
		return nil, errors.New("envelope: cache limits must not be negative")
	}
	if limits.MaxAge == 0 {
		limits.MaxAge = DefaultCacheMaxAge
	}
	if limits.MaxMessages == 0 {
		limits.MaxMessages = DefaultCacheMaxMessages
	}
	if limits.MaxBytes == 0 {
		limits.MaxBytes = DefaultCacheMaxBytes
	}
	if limits.MaxEntries == 0 {
		limits.MaxEntries = DefaultCacheMaxEntries
	}
	if limits.Now == nil {
		limits.Now = time.Now
	}
	return &CachingWrapper{
		w: w, u: u, limits: limits,
		enc: make(map[string]*cacheEntry),
		dec: make(map[string]*cacheEntry),
	}, nil
}

// Limits returns the limits in force, defaults filled in.
func (c *CachingWrapper) Limits() CacheLimits { return c.limits }

// Stats returns the counters so far.
func (c *CachingWrapper) Stats() CacheStats {
	return CacheStats{
		EncryptHits: c.encHits.Load(), EncryptMisses: c.encMisses.Load(),
		DecryptHits: c.decHits.Load(), DecryptMisses: c.decMisses.Load(),
		Evictions: c.evictions.Load(),
	}
}

// Purge retires and zeroes every cached key.
func (c *CachingWrapper) Purge() {
	c.encMu.Lock()
	for k, e := range c.enc {
		c.evict(c.enc, k, e)
	}
	c.encMu.Unlock()
	c.decMu.Lock()
	for k, e := range c.dec {
		c.evict(c.dec, k, e)
	}
	c.decMu.Unlock()
}

// evict removes and zeroes an entry; the caller holds the map's lock.
func (c *CachingWrapper) evict(m map[string]*cacheEntry, k string, e *cacheEntry) {
	clear(e.key)
	delete(m, k)
	c.evictions.Add(1)
}

// fresh reports whether e may serve one more message.
func (c *CachingWrapper) fresh(e *cacheEntry) bool {
	l := c.limits
	return c.limits.Now().Sub(e.created) < l.MaxAge && e.messages < l.MaxMessages && e.bytes < l.MaxBytes
}

// makeRoom drops the oldest entries until one more fits.
func (c *CachingWrapper) makeRoom(m map[string]*cacheEntry) {
	for len(m) >= c.limits.MaxEntries {
		var oldK string
		var old *cacheEntry
		for k, e := range m {
			if old == nil || e.created.Before(old.created) {
				oldK, old = k, e
			}
		}
		c.evict(m, oldK, old)
	}
}

// acquire returns a copy of a data key for a new file with context ec,
// its stanzas, and a function to call with the file's size when it is
// written.
func (c *CachingWrapper) acquire(ctx context.Context, ec map[string]string) ([]byte, []Stanza, func(int64), error) {
	if c.w == nil {
		return nil, nil, nil, errors.New("envelope: this CachingWrapper has no wrapper for encryption")
	}
	ck, err := format.AppendContext(nil, ec)
	if err != nil {
		return nil, nil, nil, err
	}
	k := string(ck)
	c.encMu.Lock()
	defer c.encMu.Unlock()
	e := c.enc[k]
	if e != nil && !c.fresh(e) {
		c.evict(c.enc, k, e)
		e = nil
	}
	if e == nil {
		c.encMisses.Add(1)
		// Generate under the lock: concurrent first uses of a context make
		// one key, not one each.
		key, st, err := generate(ctx, c.w, ec)
		if err != nil {
			return nil, nil, nil, err
		}
		c.makeRoom(c.enc)
		e = &cacheEntry{key: key, stanzas: st, created: c.limits.Now()}
		c.enc[k] = e
	} else {
		c.encHits.Add(1)
	}
	e.messages++
	out := bytes.Clone(e.key)
	st := slices.Clone(e.stanzas)
	if !c.fresh(e) {
		c.evict(c.enc, k, e)
	}
	release := func(n int64) {
		c.encMu.Lock()
		defer c.encMu.Unlock()
		e.bytes += n
		if c.enc[k] == e && !c.fresh(e) {
			c.evict(c.enc, k, e)
		}
	}
	return out, st, release, nil
}

// GenerateDataKey implements Generator: a cached data key for ec. Files
// encrypted through it are counted against MaxMessages but not MaxBytes;
// Encrypt counts both.
func (c *CachingWrapper) GenerateDataKey(ctx context.Context, ec map[string]string) ([]byte, []Stanza, error) {
	key, st, _, err := c.acquire(ctx, ec)
	return key, st, err
}

// Wrap implements Wrapper by calling the underlying wrapper: a caller's
// own data key is not cached.
func (c *CachingWrapper) Wrap(ctx context.Context, dataKey []byte, ec map[string]string) ([]Stanza, error) {
	if c.w == nil {
		return nil, errors.New("envelope: this CachingWrapper has no wrapper for encryption")
	}
	return c.w.Wrap(ctx, dataKey, ec)
}

// decKey is the cache key of an unwrap: a hash of the stanzas and the
// context.
func decKey(stanzas []Stanza, ec map[string]string) (string, error) {
	b, err := format.AppendContext(nil, ec)
	if err != nil {
		return "", err
	}
	for _, s := range stanzas {
		for _, f := range [][]byte{[]byte(s.Type), []byte(s.KeyID), s.Body} {
			b = binary.AppendUvarint(b, uint64(len(f)))
			b = append(b, f...)
		}
		b = binary.BigEndian.AppendUint32(b, s.KeyVersion)
	}
	sum := sha256.Sum256(b)
	return string(sum[:]), nil
}

// Unwrap implements Unwrapper: a data key unwrapped before, from the same
// wrapped keys and context, is returned from the cache within the limits.
func (c *CachingWrapper) Unwrap(ctx context.Context, stanzas []Stanza, ec map[string]string) ([]byte, error) {
	if c.u == nil {
		return nil, errors.New("envelope: this CachingWrapper has no unwrapper")
	}
	k, err := decKey(stanzas, ec)
	if err != nil {
		return nil, err
	}
	c.decMu.Lock()
	if e := c.dec[k]; e != nil {
		if c.fresh(e) {
			e.messages++
			c.decHits.Add(1)
			out := bytes.Clone(e.key)
			if !c.fresh(e) {
				c.evict(c.dec, k, e)
			}
			c.decMu.Unlock()
			return out, nil
		}
		c.evict(c.dec, k, e)
	}
	c.decMisses.Add(1)
	c.decMu.Unlock()

	key, err := c.u.Unwrap(ctx, stanzas, ec)
	if err != nil {
		return nil, err
	}
	c.decMu.Lock()
	defer c.decMu.Unlock()
	if old := c.dec[k]; old != nil {
		c.evict(c.dec, k, old)
	}
	c.makeRoom(c.dec)
	c.dec[k] = &cacheEntry{key: bytes.Clone(key), created: c.limits.Now(), messages: 1}
	return key, nil
}
