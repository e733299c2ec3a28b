package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
)

// TestSnapshotConsistent takes views while a writer changes pairs of keys
// in single batches: every view holds both keys of a pair at the same
// value, counts what it yields, and is at a revision no entry exceeds. A
// view read in several transactions would catch a pair half-written.
func TestSnapshotConsistent(t *testing.T) {
	b, err := Open(filepath.Join(t.TempDir(), "coffer.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			v := []byte(fmt.Sprint(i))
			k := i % 50
			if err := b.Apply(ctx, storage.Put(fmt.Sprintf("a/%02d", k), v), storage.Put(fmt.Sprintf("b/%02d", k), v)); err != nil && ctx.Err() == nil {
				t.Error(err)
				return
			}
		}
	})
	defer func() { cancel(); wg.Wait() }()

	for range 200 {
		err := b.Snapshot(context.Background(), func(v storage.View) error {
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
				if e.Revision > v.Revision || e.Revision <= 0 {
					return fmt.Errorf("key %q at revision %d, the view is at %d", e.Key, e.Revision, v.Revision)
				}
				last = e.Key
				n++
				vals[e.Key] = e.Value
			}
			if n != v.Count {
				return fmt.Errorf("the view counted %d entries and yielded %d", v.Count, n)
			}
			for k, a := range vals {
				if !strings.HasPrefix(k, "a/") {
					continue
				}
				if bv := vals["b/"+k[2:]]; !bytes.Equal(a, bv) {
					return fmt.Errorf("%s=%s but b/%s=%s: the view mixes two states", k, a, k[2:], bv)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestSnapshotErrors(t *testing.T) {
	b, err := Open(filepath.Join(t.TempDir(), "coffer.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(context.Background(), storage.Put("k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
	// fn's error comes back as it is.
	mine := errors.New("mine")
	if err := b.Snapshot(context.Background(), func(storage.View) error { return mine }); err != mine {
		t.Errorf("fn's error came back as %v", err)
	}
	// A done context takes no view.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Snapshot(ctx, func(storage.View) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("done context: %v", err)
	}
	// Stopping the iteration early is fine.
	err = b.Snapshot(context.Background(), func(v storage.View) error {
		for range v.Entries {
			break
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	b.Close()
	if err := b.Snapshot(context.Background(), func(storage.View) error { return nil }); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("closed store: %v", err)
	}
}
