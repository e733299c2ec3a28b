package secrets

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// writeDuringRead runs during once, inside the first read of path after
// armed is set, and then returns what it had read before: the write lands
// between a wait's read and its block.
type writeDuringRead struct {
	Store
	path   string
	armed  atomic.Bool
	during func()
}

func (s *writeDuringRead) Get(ctx context.Context, path string) (storage.Entry, error) {
	e, err := s.Store.Get(ctx, path)
	if path == s.path && s.armed.CompareAndSwap(true, false) {
		s.during()
	}
	return e, err
}

// TestWaitSeesAWriteBetweenItsReadAndItsBlock: a wait registers before it
// reads, so a version written after its read (which saw the old one) and
// before it blocks still wakes it. Registered after the read, the wait
// would sleep through the change until its bound.
func TestWaitSeesAWriteBetweenItsReadAndItsBlock(t *testing.T) {
	e := newEnv(t)
	e.put(t, "app/db", map[string]string{"p": "1"})
	st := &writeDuringRead{Store: e.bar, path: metaPrefix + "app/db"}
	svc := New(st, e.keys, WithClock(e.clk.now))
	st.during = func() {
		if _, err := svc.Put(ctx, PutRequest{Name: "app/db", Fields: map[string]string{"p": "2"}}); err != nil {
			t.Error(err)
		}
	}
	st.armed.Store(true)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	out, err := svc.Wait(wctx, map[string]uint32{"app/db": 1}, WaitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Change{{Name: "app/db", CurrentVersion: 2}}; !reflect.DeepEqual(out, want) {
		t.Fatalf("after %s: changed %+v, want %+v (the write during the read was missed)", time.Since(start), out, want)
	}
	if st.armed.Load() {
		t.Fatal("the write never ran during the wait's read")
	}
}

// ambiguousApply commits every batch and then, while armed, reports a
// failure that is not a conflict (a timeout after the commit).
type ambiguousApply struct {
	Store
	armed atomic.Bool
}

func (s *ambiguousApply) Apply(ctx context.Context, ops ...storage.Op) error {
	if err := s.Store.Apply(ctx, ops...); err != nil {
		return err
	}
	if s.armed.Load() {
		return errors.New("the store did not confirm the write in time")
	}
	return nil
}

// TestWaitWakesOnAWriteThatFailedAmbiguously: a batch that failed without
// a conflict may have committed, so it still wakes the waiters of the
// names it writes (they only read again); woken only on success, a wait
// would sleep through a version that was stored.
func TestWaitWakesOnAWriteThatFailedAmbiguously(t *testing.T) {
	e := newEnv(t)
	e.put(t, "app/db", map[string]string{"p": "1"})
	st := &ambiguousApply{Store: e.bar}
	svc := New(st, e.keys, WithClock(e.clk.now))
	ch := startWait(t, svc, map[string]uint32{"app/db": 1}, 5*time.Second, WaitOptions{})
	blocked(t, ch)
	st.armed.Store(true)
	if _, err := svc.Put(ctx, PutRequest{Name: "app/db", Fields: map[string]string{"p": "2"}}); err == nil {
		t.Fatal("the put did not fail")
	}
	if out := woken(t, ch); !reflect.DeepEqual(out, []Change{{Name: "app/db", CurrentVersion: 2}}) {
		t.Fatalf("changed %+v", out)
	}
}

// TestWaitChecksTheCallerBeforeAnsweringAWake: a woken wait checks its
// caller first, so a credential revoked since the last periodic check
// gets the check's error, not the new version.
func TestWaitChecksTheCallerBeforeAnsweringAWake(t *testing.T) {
	e := newEnv(t)
	e.put(t, "app/db", map[string]string{"p": "1"})
	var revoked atomic.Bool
	errRevoked := errors.New("revoked")
	check := func() error {
		if revoked.Load() {
			return errRevoked
		}
		return nil
	}
	// The periodic check never comes within the test: only the wake's.
	ch := startWait(t, e.svc, map[string]uint32{"app/db": 1}, 5*time.Second, WaitOptions{Check: check, CheckEvery: time.Hour})
	blocked(t, ch)
	revoked.Store(true)
	e.put(t, "app/db", map[string]string{"p": "2"})
	select {
	case r := <-ch:
		if !errors.Is(r.err, errRevoked) {
			t.Fatalf("answered %+v %v to a revoked caller", r.out, r.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the wait did not end")
	}
}
