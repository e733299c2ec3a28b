// Package authlimit throttles authentication failures per source network,
// so a prober pays in time, not the server.
//
// Each source (an IPv4 address, or an IPv6 /64, since one host owns a
// whole /64) has a token bucket of failures: Burst failures are free, then
// one more every Refill. A source whose bucket is empty is throttled: its
// failures are answered 429 with Retry-After instead of 401. Requests with
// a bearer token or an access key are never refused because of the bucket:
// only failing ones are answered 429.
//
// Logins (Kubernetes and certificate) are checked before any work, since
// verifying one may call an apiserver. They are budgeted per source and per
// (source, principal), the principal being what the login claims (role and
// service account, or role and certificate):
//
//   - a pair whose own bucket (PairBurst, one more per PairRefill) is
//     empty is refused: that stops guessing at one principal;
//   - a source whose bucket is empty has its logins refused, except for
//     pairs that logged in successfully within GoodFor: that stops a
//     spray across principals from one source, while a workload that
//     logged in from there before still logs in (and renews its token)
//     when an attacker beside it keeps failing.
//
// Both maps are bounded (MaxSources, MaxPairs); when one is full, entries
// that carry no information (full buckets, no recent success) go first.
package authlimit

import (
	"crypto/sha256"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults.
const (
	DefaultBurst      = 20
	DefaultRefill     = time.Second
	DefaultMaxSources = 100_000
	DefaultPairBurst  = 5
	DefaultPairRefill = 10 * time.Second
	DefaultMaxPairs   = 100_000
	DefaultGoodFor    = 24 * time.Hour
)

// Config configures a Limiter; zero fields take the defaults.
type Config struct {
	Burst      int
	Refill     time.Duration // one more failure allowed per Refill
	MaxSources int           // bound on tracked sources
	// PairBurst and PairRefill budget the login failures of one
	// (source, principal) pair.
	PairBurst  int
	PairRefill time.Duration
	MaxPairs   int // bound on tracked pairs
	// GoodFor is how long a successful login lets its pair log in from a
	// source that is over its budget.
	GoodFor time.Duration
	Now     func() time.Time
}

// Limiter counts authentication failures per source and per (source,
// principal). It is safe for concurrent use.
type Limiter struct {
	cfg   Config
	mu    sync.Mutex
	m     map[netip.Prefix]*rate.Limiter
	pairs map[pairKey]*pair
}

// pairKey names a (source, principal) pair; the principal is hashed, so an
// entry's size does not depend on what a caller claims.
type pairKey struct {
	src       netip.Prefix
	principal [16]byte
}

// pair is the failure bucket of a pair (tokens as of last) and its last
// successful login (unix nanoseconds; 0: none).
type pair struct {
	tokens float64
	last   int64
	good   int64
}

// New returns a Limiter.
func New(cfg Config) *Limiter {
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Refill <= 0 {
		cfg.Refill = DefaultRefill
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultMaxSources
	}
	if cfg.PairBurst <= 0 {
		cfg.PairBurst = DefaultPairBurst
	}
	if cfg.PairRefill <= 0 {
		cfg.PairRefill = DefaultPairRefill
	}
	if cfg.MaxPairs <= 0 {
		cfg.MaxPairs = DefaultMaxPairs
	}
	if cfg.GoodFor <= 0 {
		cfg.GoodFor = DefaultGoodFor
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{cfg: cfg, m: map[netip.Prefix]*rate.Limiter{}, pairs: map[pairKey]*pair{}}
}

// Source is the network a failure is counted against: the address for
// IPv4, its /64 for IPv6.
func Source(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// Failure counts one failed authentication from src. It returns whether
// src is now throttled and, if so, when it may fail again.
func (l *Limiter) Failure(src netip.Addr) (throttled bool, retryAfter time.Duration) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failureLocked(Source(src), now)
}

func (l *Limiter) failureLocked(key netip.Prefix, now time.Time) (bool, time.Duration) {
	lim := l.m[key]
	if lim == nil {
		if len(l.m) >= l.cfg.MaxSources {
			l.evict(now)
		}
		lim = rate.NewLimiter(rate.Every(l.cfg.Refill), l.cfg.Burst)
		l.m[key] = lim
	}
	if lim.AllowN(now, 1) {
		return false, 0
	}
	return true, l.wait(lim, now)
}

// Throttled reports whether src has no failures left, without counting
// one. Logins use LoginThrottled, which also knows the principal.
func (l *Limiter) Throttled(src netip.Addr) (bool, time.Duration) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[Source(src)]
	if lim == nil || lim.TokensAt(now) >= 1 {
		return false, 0
	}
	return true, l.wait(lim, now)
}

func (l *Limiter) wait(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	d := time.Duration(missing * float64(l.cfg.Refill))
	return max(d.Round(time.Second), time.Second)
}

// evict drops sources whose buckets are full again (they carry no
// information), or, if none are, an arbitrary half: memory stays bounded
// even under a flood of spoofed-looking sources.
func (l *Limiter) evict(now time.Time) {
	for k, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.cfg.Burst) {
			delete(l.m, k)
		}
	}
	if len(l.m) < l.cfg.MaxSources {
		return
	}
	n := len(l.m) / 2
	for k := range l.m {
		if n == 0 {
			break
		}
		delete(l.m, k)
		n--
	}
}

// Len is the number of tracked sources.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

func pairOf(src netip.Addr, principal string) pairKey {
	sum := sha256.Sum256([]byte(principal))
	return pairKey{src: Source(src), principal: [16]byte(sum[:16])}
}

// tokensAt is the pair's bucket at now.
func (p *pair) tokensAt(now int64, cfg *Config) float64 {
	t := p.tokens + float64(now-p.last)/float64(cfg.PairRefill)
	return min(t, float64(cfg.PairBurst))
}

// LoginThrottled reports whether a login claiming principal from src must
// be refused before any verification: the pair has no failures left, or
// the source has none and the pair has not logged in successfully within
// GoodFor. It counts nothing.
func (l *Limiter) LoginThrottled(src netip.Addr, principal string) (bool, time.Duration) {
	now := l.cfg.Now()
	n := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pairs[pairOf(src, principal)]
	if p != nil {
		if t := p.tokensAt(n, &l.cfg); t < 1 {
			d := time.Duration((1 - t) * float64(l.cfg.PairRefill))
			return true, max(d.Round(time.Second), time.Second)
		}
		if p.good != 0 && n-p.good < int64(l.cfg.GoodFor) {
			return false, 0
		}
	}
	lim := l.m[Source(src)]
	if lim == nil || lim.TokensAt(now) >= 1 {
		return false, 0
	}
	return true, l.wait(lim, now)
}

// LoginFailure counts a failed login claiming principal from src against
// both the pair and the source. It returns whether either is now
// throttled.
func (l *Limiter) LoginFailure(src netip.Addr, principal string) (bool, time.Duration) {
	now := l.cfg.Now()
	n := now.UnixNano()
	key := pairOf(src, principal)
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pairLocked(key, n)
	t := p.tokensAt(n, &l.cfg)
	pairOut := t < 1
	if !pairOut {
		t--
	}
	p.tokens, p.last = t, n
	th, retry := l.failureLocked(key.src, now)
	if pairOut {
		d := max(time.Duration((1-t)*float64(l.cfg.PairRefill)).Round(time.Second), time.Second)
		return true, max(retry, d)
	}
	return th, retry
}

// LoginSuccess records that a login claiming principal from src
// succeeded: the pair may log in while its source is over budget, for
// GoodFor.
func (l *Limiter) LoginSuccess(src netip.Addr, principal string) {
	n := l.cfg.Now().UnixNano()
	key := pairOf(src, principal)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pairLocked(key, n).good = n
}

// pairLocked returns the pair of key, making room for it when the map is
// full.
func (l *Limiter) pairLocked(key pairKey, now int64) *pair {
	if p := l.pairs[key]; p != nil {
		return p
	}
	if len(l.pairs) >= l.cfg.MaxPairs {
		l.evictPairs(now)
	}
	p := &pair{tokens: float64(l.cfg.PairBurst), last: now}
	l.pairs[key] = p
	return p
}

// evictPairs frees room in the pair map: first pairs that carry no
// information (full bucket, no recent success), then pairs with no recent
// success, then arbitrary ones, until at most half the bound is used. A
// flood of failing pairs can therefore evict a workload's success mark only
// after it has evicted every failing pair, and each failing pair costs its
// source a failure.
func (l *Limiter) evictPairs(now int64) {
	good := func(p *pair) bool { return p.good != 0 && now-p.good < int64(l.cfg.GoodFor) }
	for k, p := range l.pairs {
		if !good(p) && p.tokensAt(now, &l.cfg) >= float64(l.cfg.PairBurst) {
			delete(l.pairs, k)
		}
	}
	target := l.cfg.MaxPairs / 2
	for k, p := range l.pairs {
		if len(l.pairs) <= target {
			return
		}
		if !good(p) {
			delete(l.pairs, k)
		}
	}
	for k := range l.pairs {
		if len(l.pairs) <= target {
			return
		}
		delete(l.pairs, k)
	}
}

// Pairs is the number of tracked (source, principal) pairs.
func (l *Limiter) Pairs() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pairs)
}
