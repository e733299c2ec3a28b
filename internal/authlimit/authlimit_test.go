package authlimit

import (
	"net/netip"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBurstThenThrottleThenRefill(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := New(Config{Burst: 3, Refill: 10 * time.Second, Now: c.now})
	src := netip.MustParseAddr("10.0.0.1")
	for i := range 3 {
		if th, _ := l.Failure(src); th {
			t.Fatalf("failure %d throttled within the burst", i+1)
		}
	}
	th, retry := l.Failure(src)
	if !th || retry != 10*time.Second {
		t.Fatalf("4th failure: throttled=%v retry=%s, want true 10s", th, retry)
	}
	if th, _ := l.Throttled(src); !th {
		t.Fatal("Throttled = false for an empty bucket")
	}
	// Another source is not affected.
	if th, _ := l.Throttled(netip.MustParseAddr("10.0.0.2")); th {
		t.Fatal("an unrelated source is throttled")
	}
	c.t = c.t.Add(10 * time.Second)
	if th, _ := l.Throttled(src); th {
		t.Fatal("still throttled after one refill period")
	}
	if th, _ := l.Failure(src); th {
		t.Fatal("the refilled failure was throttled")
	}
	if th, _ := l.Failure(src); !th {
		t.Fatal("the bucket refilled more than one failure in one period")
	}
}

func TestIPv6SharesA64(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := New(Config{Burst: 1, Refill: time.Minute, Now: c.now})
	l.Failure(netip.MustParseAddr("2001:db8::1"))
	if th, _ := l.Failure(netip.MustParseAddr("2001:db8::2")); !th {
		t.Fatal("two addresses of one /64 have separate buckets")
	}
	if th, _ := l.Failure(netip.MustParseAddr("2001:db8:0:1::1")); th {
		t.Fatal("another /64 shares the bucket")
	}
	if got := Source(netip.MustParseAddr("::ffff:10.1.2.3")); got != netip.MustParsePrefix("10.1.2.3/32") {
		t.Fatalf("Source of a v4-mapped address = %s", got)
	}
}

func TestBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := New(Config{Burst: 2, Refill: time.Second, MaxSources: 100, Now: c.now})
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		l.Failure(a)
		l.Failure(a)
		l.Failure(a)
	}
	if n := l.Len(); n > 100 {
		t.Fatalf("tracks %d sources, cap 100", n)
	}
}

func BenchmarkFailure(b *testing.B) {
	l := New(Config{})
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			l.Failure(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
		}
	})
}

// TestLoginPairs: a workload that logged in before keeps logging in from a
// source an attacker has run over budget; the attacker's spray across
// principals and its guessing at one principal (even the workload's) stay
// refused.
func TestLoginPairs(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := New(Config{Burst: 5, Refill: time.Second, PairBurst: 3, PairRefill: time.Minute, Now: c.now})
	node := netip.MustParseAddr("10.0.0.7")
	pod := "kubernetes:payments/team-a/api"
	if th, _ := l.LoginThrottled(node, pod); th {
		t.Fatal("a fresh pair is throttled")
	}
	l.LoginSuccess(node, pod)

	// Spray: one failure per claimed principal; the source runs out.
	sprayed := 0
	for i := range 100 {
		victim := "kubernetes:payments/team-a/sa-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if th, _ := l.LoginThrottled(node, victim); th {
			continue
		}
		sprayed++
		l.LoginFailure(node, victim)
		c.t = c.t.Add(200 * time.Millisecond) // 5 tries a second
	}
	if sprayed > 5+25 { // the burst, then one per second refilled over 20 s
		t.Fatalf("the spray got %d tries from one source", sprayed)
	}
	if th, _ := l.LoginThrottled(node, "kubernetes:payments/team-a/never-seen"); !th {
		t.Fatal("a new principal logs in from a source over budget")
	}
	if th, _ := l.LoginThrottled(node, pod); th {
		t.Fatal("the workload that logged in before is refused because of the attacker's failures")
	}

	// Guessing at the workload's own principal stops at the pair's budget.
	for range 3 {
		l.LoginFailure(node, pod)
	}
	if th, retry := l.LoginThrottled(node, pod); !th || retry <= 0 {
		t.Fatal("guessing at one principal is not stopped by the pair's budget")
	}
	// Another source is untouched.
	if th, _ := l.LoginThrottled(netip.MustParseAddr("10.0.0.8"), pod); th {
		t.Fatal("another source is throttled")
	}
}

// TestLoginPairsBounded: the pair map stays under MaxPairs under a flood of
// failing pairs from many sources, and keeps the success marks as long as
// failing pairs can be evicted instead.
func TestLoginPairsBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := New(Config{MaxPairs: 1000, Now: c.now})
	good := netip.MustParseAddr("10.9.9.9")
	l.LoginSuccess(good, "pod")
	for i := range 20_000 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.LoginFailure(src, "x")
		if n := l.Pairs(); n > 1000 {
			t.Fatalf("%d pairs tracked, bound 1000", n)
		}
	}
	// Run the good pair's source over budget: its mark must still be there.
	for range DefaultBurst + 1 {
		l.Failure(good)
	}
	if th, _ := l.LoginThrottled(good, "pod"); th {
		t.Fatal("the flood evicted the success mark of a workload")
	}
}
