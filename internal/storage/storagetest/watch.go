package storagetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// watchDeadline bounds how long a watch test waits for an event. It is a
// generous bound for a loaded machine, not a latency requirement.
const watchDeadline = 20 * time.Second

// RunWatch runs the conformance suite of storage.Watcher against the
// backends returned by open, which must implement it. open has the same
// duties as for Run: a new, empty backend per call, safe for concurrent use.
//
// The suite checks that every change under the watched prefix is delivered
// exactly once and in revision order, from any revision still in history
// (replay), with deletes, atomic batches and concurrent writers; that
// progress events arrive and cover the last write; that a put carries the
// value stored at its revision (and a delete none); and that cancelling the
// context closes the channel.
func RunWatch(t *testing.T, open func(t *testing.T) storage.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Backend, w storage.Watcher)
	}{
		{"Order", testWatchOrder},
		{"Replay", testWatchReplay},
		{"PrefixOnly", testWatchPrefixOnly},
		{"Progress", testWatchProgress},
		{"ProgressIdle", testWatchProgressIdle},
		{"ConcurrentWriters", testWatchConcurrent},
		{"CancelCloses", testWatchCancel},
		{"RevisionCoversWrites", testWatchRevision},
		{"Values", testWatchValues},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			t.Cleanup(func() { b.Close() })
			w, ok := b.(storage.Watcher)
			if !ok {
				t.Fatalf("%T does not implement storage.Watcher", b)
			}
			tc.fn(t, b, w)
		})
	}
}

// change is what a test expects of one event: kind, key and (when known)
// revision.
type change struct {
	kind storage.EventKind
	key  string
	rev  int64 // anyRev, sameBatch, or the revision itself
}

// Revisions of a change whose exact revision the test does not know.
const (
	anyRev    = 0  // greater than the previous change's
	sameBatch = -1 // the previous change's: one batch
)

func (c change) String() string {
	kind := map[storage.EventKind]string{storage.EventPut: "put", storage.EventDelete: "delete",
		storage.EventProgress: "progress", storage.EventReset: "reset"}[c.kind]
	return fmt.Sprintf("%s %q@%d", kind, c.key, c.rev)
}

// collector reads a watch channel in the background.
type collector struct {
	mu     sync.Mutex
	events []storage.Event
	closed bool
	cond   chan struct{} // closed and replaced on every arrival
}

func collect(ch <-chan storage.Event) *collector {
	c := &collector{cond: make(chan struct{})}
	go func() {
		for e := range ch {
			c.mu.Lock()
			c.events = append(c.events, e)
			close(c.cond)
			c.cond = make(chan struct{})
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.closed = true
		close(c.cond)
		c.cond = make(chan struct{})
		c.mu.Unlock()
	}()
	return c
}

// waitFor waits until done (called under the lock with every event so far)
// returns true, failing the test after watchDeadline.
func (c *collector) waitFor(t *testing.T, what string, done func(events []storage.Event, closed bool) bool) []storage.Event {
	t.Helper()
	deadline := time.After(watchDeadline)
	for {
		c.mu.Lock()
		events, closed, cond := slices.Clone(c.events), c.closed, c.cond
		c.mu.Unlock()
		if done(events, closed) {
			return events
		}
		if closed {
			t.Fatalf("watch channel closed while waiting for %s; got %v", what, changes(events))
		}
		select {
		case <-cond:
		case <-deadline:
			t.Fatalf("no %s within %s; got %v", what, watchDeadline, changes(events))
		}
	}
}

// changes drops progress events.
func changes(events []storage.Event) []storage.Event {
	var out []storage.Event
	for _, e := range events {
		if e.Kind != storage.EventProgress {
			out = append(out, e)
		}
	}
	return out
}

// waitChanges waits for n non-progress events and returns them.
func (c *collector) waitChanges(t *testing.T, n int) []storage.Event {
	t.Helper()
	events := c.waitFor(t, fmt.Sprintf("%d changes", n), func(events []storage.Event, _ bool) bool {
		return len(changes(events)) >= n
	})
	return changes(events)
}

// checkOrder checks the invariants of every watch: revisions never go
// down, progress never claims a revision below a delivered change, and
// every change is a put or a delete (a reset is never expected here).
func checkOrder(t *testing.T, events []storage.Event) {
	t.Helper()
	var last int64
	for i, e := range events {
		switch e.Kind {
		case storage.EventPut, storage.EventDelete, storage.EventProgress:
		default:
			t.Errorf("event %d: unexpected kind %d (%+v)", i, e.Kind, e)
		}
		if e.Revision < last {
			t.Errorf("event %d (%+v): revision %d after %d", i, e, e.Revision, last)
		}
		if e.Revision <= 0 {
			t.Errorf("event %d (%+v): revision %d, want > 0", i, e, e.Revision)
		}
		last = e.Revision
	}
}

// wantChanges compares delivered changes with want: same kinds and keys in
// the same order, each with the revision want gives (see anyRev and
// sameBatch).
func wantChanges(t *testing.T, got []storage.Event, want []change) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d changes %v, want %d %v", len(got), got, len(want), want)
	}
	for i, w := range want {
		g := got[i]
		var prev int64
		if i > 0 {
			prev = got[i-1].Revision
		}
		ok := g.Kind == w.kind && g.Key == w.key
		switch w.rev {
		case anyRev:
			ok = ok && g.Revision > prev
		case sameBatch:
			ok = ok && g.Revision == prev
		default:
			ok = ok && g.Revision == w.rev
		}
		if !ok {
			t.Errorf("change %d = %v, want %v (previous revision %d)", i, change{g.Kind, g.Key, g.Revision}, w, prev)
		}
	}
}

func currentRevision(t *testing.T, w storage.Watcher) int64 {
	t.Helper()
	rev, err := w.Revision(context.Background())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

// testWatchOrder: puts, an overwrite, a batch and deletes arrive once each,
// in order, with the revisions Get reports; deleting a missing key reports
// nothing.
func testWatchOrder(t *testing.T, b storage.Backend, w storage.Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(w.Watch(ctx, "w/", currentRevision(t, w)))

	r1 := mustPut(t, b, "w/a", "1")
	r2 := mustPut(t, b, "w/b", "1")
	r3 := mustPut(t, b, "w/a", "2")
	mustApply(t, b, storage.Put("w/c", []byte("1")), storage.Delete("w/b"), storage.Put("w/d", nil))
	rBatch := mustGet(t, b, "w/c").Revision
	mustApply(t, b, storage.Delete("w/never-written"))
	mustApply(t, b, storage.Op{Kind: storage.OpDelete, Key: "w/a", IfRevision: r3})
	r5 := mustPut(t, b, "w/last", "x")

	got := c.waitChanges(t, 8)
	checkOrder(t, c.waitFor(t, "all", func([]storage.Event, bool) bool { return true }))
	wantChanges(t, got, []change{
		{storage.EventPut, "w/a", r1},
		{storage.EventPut, "w/b", r2},
		{storage.EventPut, "w/a", r3},
		{storage.EventPut, "w/c", rBatch},
		{storage.EventDelete, "w/b", sameBatch},
		{storage.EventPut, "w/d", sameBatch},
		{storage.EventDelete, "w/a", anyRev},
		{storage.EventPut, "w/last", r5},
	})
	if got[6].Revision <= rBatch || got[6].Revision >= r5 {
		t.Errorf("delete of w/a at revision %d, want between %d and %d", got[6].Revision, rBatch, r5)
	}
	// Nothing more arrives: no duplicate, nothing for the missing key.
	mustPut(t, b, "w/sentinel", "x")
	got = c.waitChanges(t, 9)
	if len(got) != 9 || got[8].Key != "w/sentinel" {
		t.Errorf("after the sentinel write, changes = %v", got[8:])
	}
}

// testWatchReplay: a watch from an earlier revision first delivers what
// happened after it, then what comes next.
func testWatchReplay(t *testing.T, b storage.Backend, w storage.Watcher) {
	r1 := mustPut(t, b, "r/1", "x")
	r2 := mustPut(t, b, "r/2", "x")
	mustApply(t, b, storage.Delete("r/1"))
	r4 := mustPut(t, b, "r/3", "x")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all := collect(w.Watch(ctx, "r/", r1-1))
	after := collect(w.Watch(ctx, "r/", r2))
	r5 := mustPut(t, b, "r/4", "x")

	wantChanges(t, all.waitChanges(t, 5), []change{
		{storage.EventPut, "r/1", r1},
		{storage.EventPut, "r/2", r2},
		{storage.EventDelete, "r/1", anyRev},
		{storage.EventPut, "r/3", r4},
		{storage.EventPut, "r/4", r5},
	})
	got := after.waitChanges(t, 3)
	wantChanges(t, got, []change{
		{storage.EventDelete, "r/1", anyRev},
		{storage.EventPut, "r/3", r4},
		{storage.EventPut, "r/4", r5},
	})
	if got[0].Revision <= r2 || got[0].Revision >= r4 {
		t.Errorf("replayed delete at revision %d, want between %d and %d", got[0].Revision, r2, r4)
	}
	checkOrder(t, all.waitFor(t, "all", func([]storage.Event, bool) bool { return true }))
}

// testWatchPrefixOnly: a watch sees its prefix and nothing else, and two
// watches on one backend are independent.
func testWatchPrefixOnly(t *testing.T, b storage.Backend, w storage.Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from := currentRevision(t, w)
	keys := collect(w.Watch(ctx, "keys/", from))
	everything := collect(w.Watch(ctx, "", from))

	mustPut(t, b, "keys", "not under keys/")
	mustPut(t, b, "aliases/x", "v")
	mustPut(t, b, "keys/1", "v")
	mustPut(t, b, "keysx/1", "v")
	mustPut(t, b, "keys/2", "v")

	wantChanges(t, keys.waitChanges(t, 2), []change{{storage.EventPut, "keys/1", anyRev}, {storage.EventPut, "keys/2", anyRev}})
	got := everything.waitChanges(t, 5)
	var names []string
	for _, e := range got {
		names = append(names, e.Key)
	}
	if want := []string{"keys", "aliases/x", "keys/1", "keysx/1", "keys/2"}; !slices.Equal(names, want) {
		t.Errorf("watch of every key saw %q, want %q", names, want)
	}
	mustPut(t, b, "keys/3", "v")
	if got := keys.waitChanges(t, 3); len(got) != 3 || got[2].Key != "keys/3" {
		t.Errorf("after keys/3, changes under keys/ = %v", got)
	}
}

// testWatchProgress: progress events keep arriving while nothing changes,
// and one arrives that covers the last write, so a consumer can prove it is
// up to date.
func testWatchProgress(t *testing.T, b storage.Backend, w storage.Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(w.Watch(ctx, "p/", currentRevision(t, w)))
	last := mustPut(t, b, "p/x", "1")
	// Writes elsewhere advance the store, not this watch's changes.
	mustPut(t, b, "elsewhere", "1")
	covered := func(events []storage.Event) int {
		n := 0
		for _, e := range events {
			if e.Kind == storage.EventProgress && e.Revision >= last {
				n++
			}
		}
		return n
	}
	start := time.Now()
	events := c.waitFor(t, "a progress event at or after the last write", func(events []storage.Event, _ bool) bool {
		return covered(events) >= 1
	})
	t.Logf("first covering progress event after %v", time.Since(start).Round(time.Millisecond))
	checkOrder(t, events)
	// A progress event comes after the change it covers.
	putAt, progressAt := -1, -1
	for i, e := range events {
		if e.Kind == storage.EventPut && e.Key == "p/x" && putAt < 0 {
			putAt = i
		}
		if e.Kind == storage.EventProgress && e.Revision >= last && progressAt < 0 {
			progressAt = i
		}
	}
	if putAt < 0 || putAt > progressAt {
		t.Errorf("progress at or after revision %d arrived before the change at %d: %v", last, last, events)
	}
	// They keep coming while nothing under the prefix changes.
	c.waitFor(t, "three progress events", func(events []storage.Event, _ bool) bool { return covered(events) >= 3 })
}

// testWatchProgressIdle: a watch from the current revision of a store
// nobody writes to still gets progress events (etcd, for one, sends none to
// a watch whose start revision is in the future).
func testWatchProgressIdle(t *testing.T, b storage.Backend, w storage.Watcher) {
	mustPut(t, b, "before", "x")
	from := currentRevision(t, w)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(w.Watch(ctx, "", from))
	events := c.waitFor(t, "two progress events on an idle store", func(events []storage.Event, _ bool) bool {
		n := 0
		for _, e := range events {
			if e.Kind == storage.EventProgress && e.Revision >= from {
				n++
			}
		}
		return n >= 2
	})
	if got := changes(events); len(got) != 0 {
		t.Errorf("a watch from the current revision delivered old changes %v", got)
	}
}

// testWatchConcurrent: concurrent writers; every write is delivered once,
// in revision order, and the last change of each key is its final value's
// revision.
func testWatchConcurrent(t *testing.T, b storage.Backend, w storage.Watcher) {
	const writers, writes = 4, 25
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(w.Watch(ctx, "c/", currentRevision(t, w)))
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range writes {
				key := fmt.Sprintf("c/%d/%d", i, j%5)
				if err := b.Apply(context.Background(), storage.Put(key, []byte(fmt.Sprint(j)))); err != nil {
					t.Errorf("Apply: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := c.waitChanges(t, writers*writes)
	if len(got) != writers*writes {
		t.Fatalf("%d changes, want %d", len(got), writers*writes)
	}
	checkOrder(t, got)
	seen := map[int64]bool{}
	lastOf := map[string]storage.Event{}
	for _, e := range got {
		if seen[e.Revision] {
			t.Errorf("revision %d delivered twice (single-key writes each get their own)", e.Revision)
		}
		seen[e.Revision] = true
		lastOf[e.Key] = e
	}
	for key, ev := range lastOf {
		if e := mustGet(t, b, key); e.Revision != ev.Revision || string(e.Value) != string(ev.Value) {
			t.Errorf("%s: last delivered revision %d value %q, stored %d %q", key, ev.Revision, ev.Value, e.Revision, e.Value)
		}
	}
	if len(lastOf) != writers*5 {
		t.Errorf("changes for %d keys, want %d", len(lastOf), writers*5)
	}
}

// testWatchCancel: cancelling the context closes the channel, with or
// without pending changes.
func testWatchCancel(t *testing.T, b storage.Backend, w storage.Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := w.Watch(ctx, "x/", currentRevision(t, w))
	mustPut(t, b, "x/1", "v")
	cancel()
	deadline := time.After(watchDeadline)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("channel still open %s after cancel", watchDeadline)
		}
	}
}

// testWatchRevision: Revision covers every acknowledged write.
func testWatchRevision(t *testing.T, b storage.Backend, w storage.Watcher) {
	r := mustPut(t, b, "k", "v")
	if got := currentRevision(t, w); got < r {
		t.Errorf("Revision() = %d after a write at %d", got, r)
	}
	mustApply(t, b, storage.Delete("k"))
	after := currentRevision(t, w)
	if after <= r {
		t.Errorf("Revision() = %d after deleting a key written at %d, want more", after, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A watch from Revision() sees nothing of the past.
	c := collect(w.Watch(ctx, "", after))
	mustPut(t, b, "k2", "v")
	if got := c.waitChanges(t, 1); got[0].Key != "k2" {
		t.Errorf("watch from Revision() delivered %v first", got[0])
	}
}

// testWatchValues: every put carries the value stored at its revision, live
// and replayed from history, in a batch too; a delete carries none. A
// consumer applies events without reading the store again, so a missing or
// wrong value would leave its cache wrong.
func testWatchValues(t *testing.T, b storage.Backend, w storage.Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from := currentRevision(t, w)
	live := collect(w.Watch(ctx, "v/", from))

	mustPut(t, b, "v/a", "first")
	mustPut(t, b, "v/a", "second")
	mustApply(t, b, storage.Put("v/b", []byte("in a batch")), storage.Put("v/c", []byte{0, 1, 2, 0xff}))
	mustApply(t, b, storage.Delete("v/a"))
	mustPut(t, b, "v/a", "again")

	want := []struct {
		kind  storage.EventKind
		key   string
		value string
	}{
		{storage.EventPut, "v/a", "first"},
		{storage.EventPut, "v/a", "second"},
		{storage.EventPut, "v/b", "in a batch"},
		{storage.EventPut, "v/c", "\x00\x01\x02\xff"},
		{storage.EventDelete, "v/a", ""},
		{storage.EventPut, "v/a", "again"},
	}
	check := func(name string, got []storage.Event) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: got %d changes %v, want %d", name, len(got), got, len(want))
		}
		for i, w := range want {
			g := got[i]
			if g.Kind != w.kind || g.Key != w.key {
				t.Errorf("%s: change %d = %v %s, want %v %s", name, i, g.Kind, g.Key, w.kind, w.key)
				continue
			}
			if w.kind == storage.EventDelete {
				if g.Value != nil {
					t.Errorf("%s: delete of %s carries value %q, want nil", name, g.Key, g.Value)
				}
				continue
			}
			if g.Value == nil || string(g.Value) != w.value {
				t.Errorf("%s: put of %s at %d carries value %q, want %q", name, g.Key, g.Revision, g.Value, w.value)
			}
		}
	}
	got := live.waitChanges(t, len(want))
	check("live", got)
	// The value belongs to the consumer: changing it changes neither the
	// store nor another watch's events.
	clear(got[5].Value)
	if e := mustGet(t, b, "v/a"); string(e.Value) != "again" {
		t.Errorf("after a consumer changed an event's value, stored v/a = %q", e.Value)
	}
	replay := collect(w.Watch(ctx, "v/", from))
	check("replayed", replay.waitChanges(t, len(want)))
}
