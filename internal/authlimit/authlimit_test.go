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
