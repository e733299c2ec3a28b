package etcd_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

// events reads a watch in the background.
type events struct {
	mu  sync.Mutex
	all []storage.Event
	at  []time.Time // arrival of each event
}

func watch(ctx context.Context, t *testing.T, b *etcd.Backend, prefix string, from int64) *events {
	t.Helper()
	e := &events{}
	ch := b.Watch(ctx, prefix, from)
	go func() {
		for ev := range ch {
			e.mu.Lock()
			e.all = append(e.all, ev)
			e.at = append(e.at, time.Now())
			e.mu.Unlock()
		}
	}()
	return e
}

func (e *events) snapshot() []storage.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]storage.Event(nil), e.all...)
}

// waitFor polls until cond holds on the events so far, for up to d.
func (e *events) waitFor(t *testing.T, what string, d time.Duration, cond func([]storage.Event) bool) []storage.Event {
	t.Helper()
	start := time.Now()
	for {
		s := e.snapshot()
		if cond(s) {
			t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
			return s
		}
		if time.Since(start) > d {
			t.Fatalf("no %s within %v; events: %v", what, d, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// has reports whether events hold a put of key.
func has(events []storage.Event, key string) bool {
	for _, e := range events {
		if e.Kind == storage.EventPut && e.Key == key {
			return true
		}
	}
	return false
}

// progressAtLeast reports whether a progress event reached rev.
func progressAtLeast(rev int64) func([]storage.Event) bool {
	return func(events []storage.Event) bool {
		for _, e := range events {
			if e.Kind == storage.EventProgress && e.Revision >= rev {
				return true
			}
		}
		return false
	}
}

// changesOnce checks that the puts and deletes are in revision order and
// that no key is delivered twice for one revision.
func changesOnce(t *testing.T, events []storage.Event) {
	t.Helper()
	seen := map[string]bool{}
	var last int64
	for _, e := range events {
		if e.Revision < last {
			t.Errorf("revision %d after %d: %v", e.Revision, last, events)
		}
		last = e.Revision
		if e.Kind != storage.EventPut && e.Kind != storage.EventDelete {
			continue
		}
		id := fmt.Sprintf("%s@%d", e.Key, e.Revision)
		if seen[id] {
			t.Errorf("%s delivered twice", id)
		}
		seen[id] = true
	}
}

func put(t *testing.T, b *etcd.Backend, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := b.Apply(ctx, storage.Put(key, []byte("v")))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e, err := b.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return e.Revision
}

// TestWatchCompacted: a watch from a compacted revision reports
// EventReset with the current revision and then follows later writes.
func TestWatchCompacted(t *testing.T) {
	c := etcdtest.Start(t, 1)
	b := open(t, etcd.Config{Endpoints: c.Endpoints()})
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r1 := put(t, b, "w/a")
	put(t, b, "w/b")
	r3 := put(t, b, "w/c")
	if _, err := b.Client().Compact(ctx, r3); err != nil {
		t.Fatal(err)
	}
	e := watch(ctx, t, b, "w/", r1-1)
	got := e.waitFor(t, "reset", 20*time.Second, func(ev []storage.Event) bool { return len(ev) > 0 })
	if got[0].Kind != storage.EventReset || got[0].Revision < r3 {
		t.Fatalf("first event %+v, want a reset at revision >= %d", got[0], r3)
	}
	r4 := put(t, b, "w/d")
	got = e.waitFor(t, "the write after the reset", 20*time.Second, func(ev []storage.Event) bool { return has(ev, "w/d") })
	for _, ev := range got[1:] {
		if ev.Kind == storage.EventPut && ev.Key != "w/d" || ev.Kind == storage.EventReset {
			t.Errorf("after the reset: %+v; history before it must not be replayed", ev)
		}
	}
	changesOnce(t, got)
	e.waitFor(t, "progress after the reset", 20*time.Second, progressAtLeast(r4))
}

// TestWatchLagCompacted: a watch that loses its member, while the others
// write and compact, resumes after the member is back with EventReset (the
// history it missed is gone) and then follows.
func TestWatchLagCompacted(t *testing.T) {
	c := etcdtest.Start(t, 3)
	watcher := open(t, etcd.Config{Endpoints: []string{c.Endpoint(0)}})
	defer watcher.Close()
	writer := open(t, etcd.Config{Endpoints: []string{c.Endpoint(1), c.Endpoint(2)}, Prefix: watcher.Prefix()})
	defer writer.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	from, err := watcher.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := watch(ctx, t, watcher, "", from)
	put(t, writer, "before")
	e.waitFor(t, "the first write", 20*time.Second, func(ev []storage.Event) bool { return has(ev, "before") })

	c.Stop(0)
	put(t, writer, "missed-1")
	missed := put(t, writer, "missed-2")
	if _, err := writer.Client().Compact(ctx, missed); err != nil {
		t.Fatal(err)
	}
	c.Restart(0)
	got := e.waitFor(t, "reset", 30*time.Second, func(ev []storage.Event) bool {
		for _, x := range ev {
			if x.Kind == storage.EventReset {
				return true
			}
		}
		return false
	})
	for _, x := range got {
		if x.Kind == storage.EventReset && x.Revision < missed {
			t.Errorf("reset at %d, want >= %d (the compaction)", x.Revision, missed)
		}
	}
	put(t, writer, "after")
	got = e.waitFor(t, "the write after the reset", 30*time.Second, func(ev []storage.Event) bool { return has(ev, "after") })
	changesOnce(t, got)
}

// TestWatchReconnect: the member a watch talks to stops; writes made
// elsewhere meanwhile are delivered, once and in order, when it is back, and
// progress events resume.
func TestWatchReconnect(t *testing.T) {
	c := etcdtest.Start(t, 3)
	watcher := open(t, etcd.Config{Endpoints: []string{c.Endpoint(0)}})
	defer watcher.Close()
	writer := open(t, etcd.Config{Endpoints: []string{c.Endpoint(1), c.Endpoint(2)}, Prefix: watcher.Prefix()})
	defer writer.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from, _ := watcher.Revision(ctx)
	e := watch(ctx, t, watcher, "k/", from)
	put(t, writer, "k/1")
	e.waitFor(t, "k/1", 20*time.Second, func(ev []storage.Event) bool { return has(ev, "k/1") })

	c.Stop(0)
	put(t, writer, "k/2")
	put(t, writer, "k/3")
	c.Restart(0)
	last := put(t, writer, "k/4")
	got := e.waitFor(t, "the writes made while the member was down", 30*time.Second, func(ev []storage.Event) bool { return has(ev, "k/4") })
	changesOnce(t, got)
	var keys []string
	for _, x := range got {
		if x.Kind == storage.EventPut {
			keys = append(keys, x.Key)
		}
	}
	if fmt.Sprint(keys) != "[k/1 k/2 k/3 k/4]" {
		t.Errorf("delivered %v, want k/1..k/4 once each in order", keys)
	}
	e.waitFor(t, "progress after the reconnect", 30*time.Second, progressAtLeast(last))
}

// TestWatchFailover: a client with every endpoint keeps its watch while each
// member in turn is stopped.
func TestWatchFailover(t *testing.T) {
	c := etcdtest.Start(t, 3)
	watcher := open(t, etcd.Config{Endpoints: c.Endpoints()})
	defer watcher.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from, _ := watcher.Revision(ctx)
	e := watch(ctx, t, watcher, "", from)
	for i := range 3 {
		c.Stop(i)
		var others []string
		for j := range 3 {
			if j != i {
				others = append(others, c.Endpoint(j))
			}
		}
		writer := open(t, etcd.Config{Endpoints: others, Prefix: watcher.Prefix()})
		key := fmt.Sprintf("while-%d-down", i)
		rev := put(t, writer, key)
		writer.Close()
		e.waitFor(t, key, 30*time.Second, func(ev []storage.Event) bool { return has(ev, key) })
		e.waitFor(t, "progress with member "+fmt.Sprint(i)+" down", 30*time.Second, progressAtLeast(rev))
		c.Restart(i)
	}
	got := e.snapshot()
	changesOnce(t, got)
	n := 0
	for _, x := range got {
		if x.Kind == storage.EventPut {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d puts delivered, want 3: %v", n, got)
	}
}

// TestWatchNoProgressWithoutQuorum: progress events prove freshness, so
// they stop when the cluster loses its quorum (although the member the watch
// talks to still runs) and resume when it is back.
func TestWatchNoProgressWithoutQuorum(t *testing.T) {
	c := etcdtest.Start(t, 3)
	watcher := open(t, etcd.Config{Endpoints: []string{c.Endpoint(0)}})
	defer watcher.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from, _ := watcher.Revision(ctx)
	e := watch(ctx, t, watcher, "", from)
	e.waitFor(t, "progress", 20*time.Second, progressAtLeast(from))

	c.Stop(1)
	stopped := time.Now() // the quorum goes with the next member
	c.Stop(2)
	time.Sleep(5 * time.Second)
	// A gate read already under way when the quorum went may still pass
	// one progress event (it proves freshness as of its read); after
	// that, none. etcd itself cancels the watch only once the member
	// notices it has lost its leader, seconds later.
	e.mu.Lock()
	var last time.Time
	for i, x := range e.all {
		if x.Kind == storage.EventProgress {
			last = e.at[i]
		}
	}
	e.mu.Unlock()
	after := last.Sub(stopped)
	t.Logf("last progress event %v after the quorum was lost", after.Round(time.Millisecond))
	if limit := 1250 * time.Millisecond; after > limit {
		t.Errorf("progress events went on %v after the quorum was lost, want at most %v (one gate read)", after, limit)
	}
	c.Restart(1)
	writer := open(t, etcd.Config{Endpoints: []string{c.Endpoint(0), c.Endpoint(1)}, Prefix: watcher.Prefix()})
	defer writer.Close()
	rev := put(t, writer, "back")
	e.waitFor(t, "progress after the quorum is back", 30*time.Second, progressAtLeast(rev))
	changesOnce(t, e.snapshot())
}

// TestWatchClose: closing the backend closes its watches' channels.
func TestWatchClose(t *testing.T) {
	c := etcdtest.Start(t, 1)
	b := open(t, etcd.Config{Endpoints: c.Endpoints()})
	ch := b.Watch(context.Background(), "", 0)
	b.Close()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel still open after Close")
		}
	}
}

// TestWatchProgressUnderSustainedWrites: while writers keep the watch
// busy, progress events keep coming. etcd answers a progress request only
// when the watch has nothing pending, which under steady writes is almost
// never; delivered events past the gate prove freshness as well (test/ha
// saw a replica go replica_stale for a whole run of 32 writers).
func TestWatchProgressUnderSustainedWrites(t *testing.T) {
	c := etcdtest.Start(t, 3)
	b := open(t, etcd.Config{Endpoints: c.Endpoints()})
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from, err := b.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := watch(ctx, t, b, "", from)
	e.waitFor(t, "first progress", 20*time.Second, progressAtLeast(from))

	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				_ = b.Apply(wctx, storage.Put(fmt.Sprintf("w%d/%d", w, i), []byte("v")))
			}
		})
	}
	const run = 5 * time.Second
	time.Sleep(run / 5) // let the writers get going
	began := time.Now()
	time.Sleep(run)
	stop()
	wg.Wait()

	// The longest stretch of the busy period without a progress event.
	e.mu.Lock()
	last, longest := began, time.Duration(0)
	progress := 0
	for i, x := range e.all {
		if x.Kind != storage.EventProgress || e.at[i].Before(began) || e.at[i].After(began.Add(run)) {
			continue
		}
		progress++
		longest = max(longest, e.at[i].Sub(last))
		last = e.at[i]
	}
	longest = max(longest, began.Add(run).Sub(last))
	e.mu.Unlock()
	t.Logf("%d progress events in %v of sustained writes; longest gap %v", progress, run, longest.Round(time.Millisecond))
	if longest > 1500*time.Millisecond {
		t.Errorf("no progress event for %v while writers were busy; a replica would turn stale", longest.Round(time.Millisecond))
	}
	changesOnce(t, e.snapshot())
}
