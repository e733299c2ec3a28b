package etcd

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

func openSnap(t *testing.T, c *etcdtest.Cluster, prefix string) *Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{Endpoints: c.Endpoints(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestSnapshot covers the etcd view: pinned to one revision across pages
// while a writer changes pairs of keys, complete, counted, in order, and
// failing with a clear error when a compaction passes its revision.
func TestSnapshot(t *testing.T) {
	c := etcdtest.Start(t, 1)
	defer func(p int64) { snapshotPage = p }(snapshotPage)
	snapshotPage = 7 // many pages

	t.Run("consistent across pages", func(t *testing.T) {
		b := openSnap(t, c, "/snap-consistent")
		// A neighbour prefix that must not show.
		other := openSnap(t, c, "/snap-consistent2")
		if err := other.Apply(context.Background(), storage.Put("a/00", []byte("other"))); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				v := []byte(fmt.Sprint(i))
				k := i % 40
				if err := b.Apply(ctx, storage.Put(fmt.Sprintf("a/%02d", k), v), storage.Put(fmt.Sprintf("b/%02d", k), v)); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
		defer func() { cancel(); wg.Wait() }()
		time.Sleep(100 * time.Millisecond)
		for range 30 {
			err := b.Snapshot(context.Background(), func(v storage.View) error {
				if v.Backend != "etcd" {
					return fmt.Errorf("backend %q", v.Backend)
				}
				vals := map[string][]byte{}
				var n int64
				var last string
				for e, err := range v.Entries {
					if err != nil {
						return err
					}
					if n > 0 && e.Key <= last {
						return fmt.Errorf("key %q after %q", e.Key, last)
					}
					if e.Revision > v.Revision {
						return fmt.Errorf("key %q at revision %d, the view is at %d", e.Key, e.Revision, v.Revision)
					}
					if bytes.Equal(e.Value, []byte("other")) {
						return fmt.Errorf("the view holds a key of another prefix")
					}
					last = e.Key
					n++
					vals[e.Key] = e.Value
				}
				if n != v.Count {
					return fmt.Errorf("the view counted %d entries and yielded %d", v.Count, n)
				}
				for k, a := range vals {
					if strings.HasPrefix(k, "a/") && !bytes.Equal(a, vals["b/"+k[2:]]) {
						return fmt.Errorf("%s=%s but b/%s=%s: the view mixes two revisions", k, a, k[2:], vals["b/"+k[2:]])
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("compaction past the view", func(t *testing.T) {
		b := openSnap(t, c, "/snap-compact")
		ctx := context.Background()
		for i := range 30 {
			if err := b.Apply(ctx, storage.Put(fmt.Sprintf("k/%02d", i), []byte("v"))); err != nil {
				t.Fatal(err)
			}
		}
		err := b.Snapshot(ctx, func(v storage.View) error {
			n := 0
			for _, err := range v.Entries {
				if err != nil {
					return err
				}
				if n++; n == 1 {
					// After the first page: write, then compact past
					// the view's revision.
					if err := b.Apply(ctx, storage.Put("k/00", []byte("new"))); err != nil {
						return err
					}
					rev, _ := b.Revision(ctx)
					if _, err := b.Client().Compact(ctx, rev); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "run the snapshot or migration again") {
			t.Fatalf("a view read past a compaction: %v", err)
		}
	})

	t.Run("leased keys", func(t *testing.T) {
		b := openSnap(t, c, "/snap-lease")
		ctx := context.Background()
		if err := b.Apply(ctx, storage.Put("keys/a", []byte("v"))); err != nil {
			t.Fatal(err)
		}
		if got, err := b.LeasedKeys(ctx); err != nil || len(got) != 0 {
			t.Fatalf("no replica: %v, %v", got, err)
		}
		lease, err := b.Client().Grant(ctx, 30)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Client().Put(ctx, "/snap-lease.replicas/members/r1", "x", clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Client().Put(ctx, "/snap-lease.replicas/other", "no lease"); err != nil {
			t.Fatal(err)
		}
		got, err := b.LeasedKeys(ctx)
		if err != nil || len(got) != 1 || got[0] != "/snap-lease.replicas/members/r1" {
			t.Fatalf("a running replica's record: %v, %v", got, err)
		}
		b.Client().Revoke(ctx, lease.ID)
		if got, err := b.LeasedKeys(ctx); err != nil || len(got) != 0 {
			t.Fatalf("after the lease ends: %v, %v", got, err)
		}
	})
}
