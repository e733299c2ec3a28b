package replica

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

const testTTL = 2 * time.Second

func newClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

type testReplica struct {
	*Etcd
	cli    *clientv3.Client
	sealed atomic.Bool
	errs   chan error
}

func startReplica(t *testing.T, c *etcdtest.Cluster, i int, id string) *testReplica {
	t.Helper()
	r := &testReplica{cli: newClient(t, c.Endpoint(i%len(c.Endpoints()))), errs: make(chan error, 100)}
	e, err := NewEtcd(r.cli, "/coffer-test", Config{ID: id, Address: "https://" + id + ":8200", Version: "v-test", TTL: testTTL,
		Sealed: r.sealed.Load, OnError: func(err error) {
			select {
			case r.errs <- err:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.Etcd = e
	t.Cleanup(func() { e.Close() })
	return r
}

// waitFor polls cond every 10ms until it holds or d passes, and returns
// how long it took.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func leaders(rs []*testReplica) []*testReplica {
	var out []*testReplica
	for _, r := range rs {
		if r.IsLeader() {
			out = append(out, r)
		}
	}
	return out
}

func members(t *testing.T, r Replica) []Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := r.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func describe(ms []Member) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s(leader=%v sealed=%v) ", m.ID, m.Leader, m.Sealed)
	}
	return b.String()
}

// TestMembersAndOneLeader: three replicas on a 3-member etcd cluster, each
// talking to a different member, list each other, exactly one of them
// leads, and the record carries what the replica published (address,
// version, seal state as it changes).
func TestMembersAndOneLeader(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var rs []*testReplica
	for i := range 3 {
		rs = append(rs, startReplica(t, c, i, fmt.Sprintf("r%d", i)))
	}
	rs[1].sealed.Store(true)
	waitFor(t, 10*time.Second, "one leader", func() bool { return len(leaders(rs)) == 1 })
	var ms []Member
	waitFor(t, 10*time.Second, "three members, one leader", func() bool {
		ms = members(t, rs[0])
		n := 0
		for _, m := range ms {
			if m.Leader {
				n++
			}
		}
		return len(ms) == 3 && n == 1
	})
	lead := leaders(rs)[0]
	for i, m := range ms {
		if m.ID != fmt.Sprintf("r%d", i) || m.Address != "https://"+m.ID+":8200" || m.Version != "v-test" || m.Started.IsZero() || m.Heartbeat.IsZero() {
			t.Fatalf("member %d: %+v", i, m)
		}
		if m.Leader != (m.ID == lead.ID()) {
			t.Fatalf("members say %s; the replica leading is %s", describe(ms), lead.ID())
		}
		if m.Sealed != (i == 1) {
			t.Fatalf("member %s: sealed=%v", m.ID, m.Sealed)
		}
	}
	// Nothing lands in the store's data range, which the barrier lists,
	// watches, rewraps and snapshots.
	if resp, err := rs[0].cli.Get(context.Background(), "/coffer-test/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("keys under the data prefix: %v %v", resp, err)
	}
	// The seal state follows the replica (polled every second).
	rs[1].sealed.Store(false)
	rs[2].sealed.Store(true)
	d := waitFor(t, 5*time.Second, "seal states published", func() bool {
		ms = members(t, rs[0])
		return len(ms) == 3 && !ms[1].Sealed && ms[2].Sealed
	})
	t.Logf("seal state change published in %s", d)
	// Heartbeats move on.
	hb := ms[0].Heartbeat
	waitFor(t, 3*testTTL, "a later heartbeat", func() bool { return members(t, rs[0])[0].Heartbeat.After(hb) })
}

// TestFailoverWithinTTL: the leader's etcd client is closed (no lease
// revocation: its lease runs out as if the process had died) and another
// replica takes over within the lease TTL, plus etcd's expiry granularity.
// The dead replica's record vanishes by itself.
func TestFailoverWithinTTL(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var rs []*testReplica
	for i := range 3 {
		rs = append(rs, startReplica(t, c, i, fmt.Sprintf("r%d", i)))
	}
	waitFor(t, 10*time.Second, "one leader", func() bool { return len(leaders(rs)) == 1 })
	waitFor(t, 10*time.Second, "three members", func() bool { return len(members(t, rs[0])) == 3 })
	old := leaders(rs)[0]
	var rest []*testReplica
	for _, r := range rs {
		if r != old {
			rest = append(rest, r)
		}
	}
	old.cli.Close()
	d := waitFor(t, 5*testTTL, "a new leader", func() bool { return len(leaders(rest)) == 1 })
	t.Logf("failover: a new leader %s after %s (lease TTL %s)", leaders(rest)[0].ID(), d, testTTL)
	fmt.Printf("replica failover (leader's client closed): %s with lease TTL %s\n", d.Round(time.Millisecond), testTTL)
	// The bound: the lease runs out at most TTL after the last renewal,
	// and etcd checks expiry every 500ms; the waiting campaigner is
	// told by a watch.
	if d > testTTL+2*time.Second {
		t.Fatalf("takeover took %s; the bound is the lease TTL %s (+2s of expiry checks and load)", d, testTTL)
	}
	waitFor(t, time.Second, "the old leader notices", func() bool { return !old.IsLeader() })
	waitFor(t, 5*testTTL, "the dead record vanishes", func() bool {
		ms := members(t, rest[0])
		for _, m := range ms {
			if m.ID == old.ID() {
				return false
			}
		}
		return len(ms) == 2 && (ms[0].Leader || ms[1].Leader)
	})
}

// TestCloseHandsOverAtOnce: a replica that shuts down revokes its lease,
// so the next leader does not wait for the TTL.
func TestCloseHandsOverAtOnce(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := startReplica(t, c, 0, "a")
	waitFor(t, 10*time.Second, "a leads", a.IsLeader)
	// A long TTL, so that a handover faster than it proves revocation.
	b := &testReplica{cli: newClient(t, c.Endpoint(0))}
	e, err := NewEtcd(b.cli, "/coffer-test", Config{ID: "b", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	waitFor(t, 10*time.Second, "b registered", func() bool { return len(members(t, e)) == 2 })
	a.Close()
	d := waitFor(t, 10*time.Second, "b leads", e.IsLeader)
	t.Logf("handover after a graceful close: %s", d)
	if ms := members(t, e); len(ms) != 1 || ms[0].ID != "b" || !ms[0].Leader {
		t.Fatalf("members after a's close: %s", describe(ms))
	}
}

// TestPausedLeaderFindsLeadershipGone: a leader whose lease expired while
// it was paused (simulated: its lease is revoked behind its back, before
// its session can notice) must not run another job: Check asks etcd and
// refuses, and ends the leadership context. The replica then campaigns
// again in a new session.
func TestPausedLeaderFindsLeadershipGone(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := startReplica(t, c, 0, "a")
	waitFor(t, 10*time.Second, "a leads", a.IsLeader)
	ctx := context.Background()
	lctx, err := a.Lead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Check(ctx); err != nil {
		t.Fatalf("check while leading: %v", err)
	}
	a.mu.Lock()
	lease := a.lease
	a.mu.Unlock()
	other := newClient(t, c.Endpoint(0))
	// Hold the session's keepalive off: revoke, then check at once.
	if _, err := other.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	err = a.Check(ctx)
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("check after the lease is gone: %v", err)
	}
	t.Logf("check: %v", err)
	select {
	case <-lctx.Done():
	case <-time.After(time.Second):
		t.Fatal("the leadership context did not end")
	}
	// A new session, a new term.
	waitFor(t, 10*time.Second, "a leads again", a.IsLeader)
	if err := a.Check(ctx); err != nil {
		t.Fatalf("check in the new term: %v", err)
	}
	if ms := members(t, a); len(ms) != 1 || !ms[0].Leader {
		t.Fatalf("members: %s", describe(ms))
	}
}

// TestDuplicateIDRefused: a second replica with the same id does not take
// over the first one's record; it says why.
func TestDuplicateIDRefused(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := startReplica(t, c, 0, "same")
	waitFor(t, 10*time.Second, "a leads", a.IsLeader)
	b := startReplica(t, c, 0, "same")
	select {
	case err := <-b.errs:
		if !strings.Contains(err.Error(), "ha.replica_id") {
			t.Fatalf("error: %v", err)
		}
		t.Logf("duplicate: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no error for a duplicate id")
	}
	if b.IsLeader() || !a.IsLeader() {
		t.Fatal("the duplicate took the leadership")
	}
	if ms := members(t, a); len(ms) != 1 || !ms[0].Leader {
		t.Fatalf("members: %s", describe(ms))
	}
}

// TestRunJobOnlyOnLeader: two replicas run the same job; over several
// ticks only the leader runs it, and after the leader closes the other
// one does.
func TestRunJobOnlyOnLeader(t *testing.T) {
	c := etcdtest.Start(t, 1)
	rs := []*testReplica{startReplica(t, c, 0, "a"), startReplica(t, c, 0, "b")}
	waitFor(t, 10*time.Second, "one leader", func() bool { return len(leaders(rs)) == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runs [2]atomic.Int64
	for i, r := range rs {
		wg.Go(func() {
			RunJob(ctx, r, 20*time.Millisecond, func(lctx context.Context) error {
				runs[i].Add(1)
				return lctx.Err()
			}, nil)
		})
	}
	defer func() { cancel(); wg.Wait() }()
	lead := 0
	if rs[1].IsLeader() {
		lead = 1
	}
	waitFor(t, 5*time.Second, "ten runs", func() bool { return runs[lead].Load() >= 10 })
	if n := runs[1-lead].Load(); n != 0 {
		t.Fatalf("the follower ran the job %d times", n)
	}
	rs[lead].Close()
	before := runs[lead].Load()
	waitFor(t, 10*time.Second, "the other replica runs it", func() bool { return runs[1-lead].Load() >= 5 })
	if runs[lead].Load() != before {
		t.Fatal("the closed replica kept running the job")
	}
}
