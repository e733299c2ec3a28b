package secrets

import (
	"context"
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
