package etcd_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
)

// runCatchUp writes n keys, one revision each, then watches them from
// before the first while progress is asked for every few milliseconds: every
// change must be delivered. etcd before 3.4.26 and 3.5.8 (Debian ships
// 3.4.23) may answer a progress request of a watch still catching up with
// the current revision, ahead of the events it has yet to send; a watcher
// that let a progress notification move its "already delivered" mark
// dropped those events for good.
func runCatchUp(t *testing.T, endpoints []string, n int) {
	b := open(t, etcd.Config{Endpoints: endpoints, ProgressInterval: 2 * time.Millisecond})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	from, err := b.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := b.Apply(ctx, storage.Put(fmt.Sprintf("catchup/%05d", i), []byte{byte(i)})); err != nil {
			t.Fatal(err)
		}
	}
	last, err := b.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A watch that dropped changes never delivers them: wait a while
	// after the end for those still coming (catching up takes a few
	// rounds of 1,000 revisions).
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	seen := map[string]bool{}
	for ev := range b.Watch(wctx, "catchup/", from) {
		if ev.Kind == storage.EventPut && ev.Revision <= last {
			seen[ev.Key] = true
		}
		if len(seen) == n {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("the watch delivered %d of %d changes; the rest were dropped (a progress notification ahead of the catch-up?)", len(seen), n)
	}
}
