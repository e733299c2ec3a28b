// Package authlimit throttles authentication failures per source network,
// so a prober pays in time, not the server.
//
// Each source (an IPv4 address, or an IPv6 /64, since one host owns a
// whole /64) has a token bucket of failures: Burst failures are free, then
// one more every Refill. A source whose bucket is empty is throttled: its
// failures are answered 429 with Retry-After instead of 401, and expensive
// logins (Kubernetes token verification, which may call the apiserver) are
// refused before any work. Valid credentials are never refused because of
// the bucket: the limit is per source and only counts failures, so an
// attacker elsewhere cannot lock a legitimate principal out, and one on the
// same network delays only failing requests. Buckets refill, so nothing is
// locked forever.
package authlimit

import (
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
)

// Config configures a Limiter; zero fields take the defaults.
type Config struct {
	Burst      int
	Refill     time.Duration // one more failure allowed per Refill
	MaxSources int           // bound on tracked sources
	Now        func() time.Time
}

// Limiter counts authentication failures per source. It is safe for
// concurrent use.
type Limiter struct {
	cfg Config
	mu  sync.Mutex
	m   map[netip.Prefix]*rate.Limiter
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{cfg: cfg, m: map[netip.Prefix]*rate.Limiter{}}
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
	key := Source(src)
	l.mu.Lock()
	defer l.mu.Unlock()
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
// one; used before expensive verification.
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
