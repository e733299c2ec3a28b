package secrets

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/storage"
)

// waiters is the number of waits registered on s.
func waiters(s *Service) int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return len(s.hub.every)
}

// waitResult is the outcome of a Wait run in the background.
type waitResult struct {
	out []Change
	err error
}

// startWait runs s.Wait in the background (bounded by d) and returns once
// it is registered, so a change made after it must wake it.
func startWait(t *testing.T, s *Service, known map[string]uint32, d time.Duration, opts WaitOptions) <-chan waitResult {
	t.Helper()
	before := waiters(s)
	ch := make(chan waitResult, 1)
	wctx, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(cancel)
	go func() {
		out, err := s.Wait(wctx, known, opts)
		ch <- waitResult{out, err}
	}()
	for deadline := time.Now().Add(5 * time.Second); waiters(s) == before; {
		if time.Now().After(deadline) {
			t.Fatal("the wait never registered")
		}
		time.Sleep(time.Millisecond)
	}
	return ch
}

// blocked fails unless the wait is still blocked after a moment.
func blocked(t *testing.T, ch <-chan waitResult) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("the wait returned before any change: %+v %v", r.out, r.err)
	case <-time.After(50 * time.Millisecond):
	}
}

// woken returns the wait's result, failing if it takes longer than a
// second (the wait itself is bounded far longer, so a missed wake-up
// fails here rather than returning empty).
func woken(t *testing.T, ch <-chan waitResult) []Change {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.out
	case <-time.After(time.Second):
		t.Fatal("the wait was not woken by the change")
	}
	return nil
}

func TestWaitReturnsAtOnceWhenAVersionDiffers(t *testing.T) {
	e := newEnv(t)
	e.put(t, "app/db", map[string]string{"p": "1"})
	start := time.Now()
	out, err := e.svc.Wait(ctx, map[string]uint32{"app/db": 0, "app/none": 0}, WaitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Change{{Name: "app/db", CurrentVersion: 1}}; !reflect.DeepEqual(out, want) {
		t.Fatalf("changed %+v, want %+v", out, want)
	}
	// A missing secret the caller holds as 1 differs too (it is gone).
	out, err = e.svc.Wait(ctx, map[string]uint32{"app/db": 1, "app/none": 1}, WaitOptions{})
	if err != nil || !reflect.DeepEqual(out, []Change{{Name: "app/none"}}) {
		t.Fatalf("changed %+v %v", out, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("returned after %s", d)
	}
}

func TestWaitTimesOutEmpty(t *testing.T) {
	e := newEnv(t)
	e.put(t, "a", map[string]string{"p": "1"})
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	out, err := e.svc.Wait(wctx, map[string]uint32{"a": 1, "b": 0}, WaitOptions{})
	if err != nil || out == nil || len(out) != 0 {
		t.Fatalf("changed %+v %v, want an empty list", out, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("returned after %s, before its bound", d)
	}
	if n := waiters(e.svc); n != 0 {
		t.Fatalf("%d waiters left registered", n)
	}
}

func TestWaitWakesOnEveryChangeOfTheCurrentVersion(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"p": "1"})
	e.put(t, "other", map[string]string{"p": "1"})
	steps := []struct {
		name  string
		known uint32
		do    func() error
		want  Change
	}{
		{"put", 1, func() error {
			_, err := e.svc.Put(ctx, PutRequest{Name: "s", Fields: map[string]string{"p": "2"}})
			return err
		},
			Change{Name: "s", CurrentVersion: 2}},
		{"rotate", 2, func() error {
			if _, err := e.svc.SetRotation(ctx, "s", RotationConfig{Every: 24 * time.Hour, With: "random:field=p"}); err != nil {
				return err
			}
			_, err := e.svc.Rotate(ctx, "s")
			return err
		}, Change{Name: "s", CurrentVersion: 3}},
		{"delete", 3, func() error { _, err := e.svc.Delete(ctx, "s", 0); return err }, Change{Name: "s", Deleted: true}},
		{"undelete", 0, func() error { _, err := e.svc.Undelete(ctx, "s"); return err }, Change{Name: "s", CurrentVersion: 3}},
		{"destroy", 3, func() error { _, err := e.svc.Destroy(ctx, "s", []uint32{3}); return err }, Change{Name: "s"}},
	}
	for _, st := range steps {
		ch := startWait(t, e.svc, map[string]uint32{"s": st.known, "other": 1}, time.Minute, WaitOptions{})
		blocked(t, ch)
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if out := woken(t, ch); !reflect.DeepEqual(out, []Change{st.want}) {
			t.Fatalf("%s: changed %+v, want %+v", st.name, out, st.want)
		}
	}
}

func TestWaitIgnoresChangesThatKeepTheVersion(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"p": "1"})
	ch := startWait(t, e.svc, map[string]uint32{"s": 1}, 300*time.Millisecond, WaitOptions{})
	if _, err := e.svc.UpdateMetadata(ctx, "s", MetadataUpdate{Set: map[string]string{"team": "a"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.err != nil || len(r.out) != 0 {
			t.Fatalf("a metadata change ended the wait: %+v %v", r.out, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end at its bound")
	}
}

// TestWaitFollowsOtherReplicas: a write on another service over the same
// store wakes nobody here until the follow loop hands it over (Refresh),
// and a woken waiter reads again only the names that changed; a resync
// reads them all.
func TestWaitFollowsOtherReplicas(t *testing.T) {
	e := newEnv(t)
	e.put(t, "a", map[string]string{"p": "1"})
	e.put(t, "b", map[string]string{"p": "1"})
	other := e.replica(t)
	ch := startWait(t, e.svc, map[string]uint32{"a": 1, "b": 1}, time.Minute, WaitOptions{})
	if _, err := other.Put(ctx, PutRequest{Name: "b", Fields: map[string]string{"p": "2"}}); err != nil {
		t.Fatal(err)
	}
	blocked(t, ch)
	// A change of a: the waiter reads a again, not b.
	if err := e.svc.Refresh(ctx, storage.Change{Path: metaPrefix + "a"}); err != nil {
		t.Fatal(err)
	}
	blocked(t, ch)
	// Changes under other prefixes wake nobody.
	if err := e.svc.Refresh(ctx, storage.Change{Path: dataPrefix + "b@2"}); err != nil {
		t.Fatal(err)
	}
	blocked(t, ch)
	if err := e.svc.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if out := woken(t, ch); !reflect.DeepEqual(out, []Change{{Name: "b", CurrentVersion: 2}}) {
		t.Fatalf("after a resync: %+v", out)
	}
	// And the change of one name, handed over, wakes its waiter.
	ch = startWait(t, e.svc, map[string]uint32{"a": 1, "b": 2}, time.Minute, WaitOptions{})
	if _, err := other.Put(ctx, PutRequest{Name: "a", Fields: map[string]string{"p": "2"}}); err != nil {
		t.Fatal(err)
	}
	blocked(t, ch)
	if err := e.svc.Refresh(ctx, storage.Change{Path: metaPrefix + "a"}); err != nil {
		t.Fatal(err)
	}
	if out := woken(t, ch); !reflect.DeepEqual(out, []Change{{Name: "a", CurrentVersion: 2}}) {
		t.Fatalf("after a refresh: %+v", out)
	}
}

func TestWaitWakesOnlyTheWaitersOfTheName(t *testing.T) {
	var h hub
	wx := &waiter{wake: make(chan struct{}, 1), changed: map[string]struct{}{}}
	wy := &waiter{wake: make(chan struct{}, 1), changed: map[string]struct{}{}}
	h.add(wx, map[string]uint32{"x": 1})
	h.add(wy, map[string]uint32{"y": 1, "z": 1})
	h.notify("y")
	if len(wx.wake) != 0 {
		t.Fatal("a change of y woke the waiter of x")
	}
	if all, names := h.take(wy); len(wy.wake) != 1 || all || !reflect.DeepEqual(names, []string{"y"}) {
		t.Fatalf("the waiter of y: woken %d, all %v, names %v", len(wy.wake), all, names)
	}
	h.notifyAll()
	if all, _ := h.take(wx); !all || len(wx.wake) != 1 {
		t.Fatal("a resync did not wake every waiter to read all")
	}
	h.remove(wy, map[string]uint32{"y": 1, "z": 1})
	if len(h.byName) != 1 || len(h.every) != 1 {
		t.Fatalf("left after remove: %d names, %d waiters", len(h.byName), len(h.every))
	}
}

func TestWaitEndsWhenTheCheckFails(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"p": "1"})
	revoked := errors.New("token revoked")
	fail := make(chan struct{})
	check := func() error {
		select {
		case <-fail:
			return revoked
		default:
			return nil
		}
	}
	ch := startWait(t, e.svc, map[string]uint32{"s": 1}, time.Minute, WaitOptions{Check: check, CheckEvery: 20 * time.Millisecond})
	blocked(t, ch)
	close(fail)
	select {
	case r := <-ch:
		if !errors.Is(r.err, revoked) {
			t.Fatalf("ended with %+v %v, want the check's error", r.out, r.err)
		}
	case <-time.After(time.Second):
		t.Fatal("a failing check did not end the wait")
	}
}

func TestWaitEndsOnSeal(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"p": "1"})
	ch := startWait(t, e.svc, map[string]uint32{"s": 1}, time.Minute, WaitOptions{})
	e.bar.Seal()
	e.svc.Unload()
	select {
	case r := <-ch:
		if !errors.Is(r.err, barrier.ErrSealed) {
			t.Fatalf("ended with %+v %v, want sealed", r.out, r.err)
		}
	case <-time.After(time.Second):
		t.Fatal("a seal did not end the wait")
	}
}

func TestWaitBadInput(t *testing.T) {
	e := newEnv(t)
	many := map[string]uint32{}
	for i := range MaxWaitNames + 1 {
		many[fmt.Sprintf("s%d", i)] = 0
	}
	for _, known := range []map[string]uint32{nil, many, {"ok": 0, "../x": 0}, {"": 1}} {
		if _, err := e.svc.Wait(ctx, known, WaitOptions{}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("%d names: %v, want invalid argument", len(known), err)
		}
	}
	delete(many, "s0")
	wctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if out, err := e.svc.Wait(wctx, many, WaitOptions{}); err != nil || len(out) != 0 {
		t.Fatalf("%d names: %+v %v", len(many), out, err)
	}
}

// BenchmarkWaitNotify: 1000 waiters on distinct secrets; each round one
// change notifies its name and the one waiter of that name takes what
// changed. The cost of a notification does not grow with the waiters of
// other names. After the timed loop, one real write on a service with 1000
// blocked Waits wakes exactly the waiter of its secret.
func BenchmarkWaitNotify(b *testing.B) {
	const n = 1000
	var h hub
	ws := make([]*waiter, n)
	names := make([]string, n)
	for i := range ws {
		names[i] = fmt.Sprintf("app/s%d", i)
		ws[i] = &waiter{wake: make(chan struct{}, 1), changed: map[string]struct{}{}}
		h.add(ws[i], map[string]uint32{names[i]: 1})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := i % n
		h.notify(names[k])
		<-ws[k].wake
		if _, got := h.take(ws[k]); len(got) != 1 || got[0] != names[k] {
			b.Fatalf("waiter %d took %v", k, got)
		}
	}
	b.StopTimer()

	e := newEnv(b)
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make([]chan []Change, n)
	for i := range done {
		e.put(b, names[i], map[string]string{"p": "v"})
		done[i] = make(chan []Change, 1)
		go func() {
			out, _ := e.svc.Wait(bctx, map[string]uint32{names[i]: 1}, WaitOptions{})
			done[i] <- out
		}()
	}
	for waiters(e.svc) < n {
		time.Sleep(time.Millisecond)
	}
	e.put(b, names[7], map[string]string{"p": "w"})
	select {
	case out := <-done[7]:
		if len(out) != 1 || out[0].Name != names[7] {
			b.Fatalf("woken with %+v", out)
		}
	case <-time.After(5 * time.Second):
		b.Fatal("the write did not wake its waiter")
	}
	time.Sleep(10 * time.Millisecond)
	for i := range done {
		if i != 7 && len(done[i]) != 0 {
			b.Fatalf("waiter %d woke", i)
		}
	}
}
