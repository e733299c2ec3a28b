package sys_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/storage"
)

// countingStore is one replica's client of a shared store: it counts the
// reads of each path, and can spoil the values its watch delivers for the
// paths spoil names (as if an event's value did not open), while reads
// still return what is stored.
type countingStore struct {
	sharedStore
	mu    sync.Mutex
	gets  map[string]int
	spoil atomic.Pointer[func(path string) bool]
}

func counting(s sharedStore) *countingStore {
	return &countingStore{sharedStore: s, gets: map[string]int{}}
}

func (c *countingStore) Get(ctx context.Context, key string) (storage.Entry, error) {
	c.mu.Lock()
	c.gets[key]++
	c.mu.Unlock()
	return c.sharedStore.Get(ctx, key)
}

// reads returns how many reads of paths under prefix were made since the
// last reset, and resets the count.
func (c *countingStore) reads(prefix string) (n int, paths []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, k := range c.gets {
		if strings.HasPrefix(p, prefix) {
			n += k
			paths = append(paths, p)
		}
	}
	return n, paths
}

func (c *countingStore) reset() {
	c.mu.Lock()
	clear(c.gets)
	c.mu.Unlock()
}

func (c *countingStore) Watch(ctx context.Context, prefix string, from int64) <-chan storage.Event {
	in := c.sharedStore.Watch(ctx, prefix, from)
	out := make(chan storage.Event)
	go func() {
		defer close(out)
		for ev := range in {
			if f := c.spoil.Load(); f != nil && ev.Kind == storage.EventPut && (*f)(ev.Key) {
				ev.Value = []byte("spoilt")
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// TestFollowAppliesWithoutReading: keys created and tokens issued on A
// reach B's caches from the watch events' values: B reads none of those
// paths from the store. (Reading each path again cost one store round trip
// per change, serially, and let a replica following a busy writer fall
// behind its freshness bound.)
func TestFollowAppliesWithoutReading(t *testing.T) {
	store := newInmem(t)
	cb := counting(store)
	rs := replicasOn(t, store, cb)
	a, b := rs[0], rs[1]
	cb.reset()
	const n = 20
	var keyIDs []string
	var tokens []string
	for i := range n {
		k, err := a.root.CreateKey(ctx, client.CreateKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		keyIDs = append(keyIDs, k.ID)
		if _, err := a.root.RotateKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		tok, err := a.root.CreateToken(ctx, client.CreateTokenRequest{DisplayName: fmt.Sprint("t", i)})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok.Token)
	}
	if err := b.sys.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range keyIDs {
		d, err := b.root.DescribeKey(ctx, id)
		if err != nil || d.PrimaryVersion != 2 {
			t.Fatalf("B's key %s after Sync: %+v, %v; want primary version 2", id, d, err)
		}
	}
	for _, tok := range tokens {
		if _, err := b.as(t, tok).LookupSelf(ctx); err != nil {
			t.Fatalf("B does not know a token issued on A after Sync: %v", err)
		}
	}
	if got, paths := cb.reads("keys/"); got != 0 {
		t.Errorf("B read key records %d times to follow %d creations and rotations on A (%v); want 0: the events carry the values", got, 2*n, paths)
	}
	if got, paths := cb.reads("auth/tokens/"); got != 0 {
		t.Errorf("B read token records %d times to follow %d tokens issued on A (%v); want 0", got, n, paths)
	}
	if err := b.sys.Fresh(); err != nil {
		t.Fatal(err)
	}
}

// TestFollowRetriesFromStore: a change whose event value cannot be applied
// (here: it does not open) is retried by reading the path from the store,
// so the replica catches up with no later event of that path.
func TestFollowRetriesFromStore(t *testing.T) {
	store := newInmem(t)
	cb := counting(store)
	rs := replicasOn(t, store, cb)
	a, b := rs[0], rs[1]
	spoil := func(path string) bool { return strings.HasPrefix(path, "keys/") }
	cb.spoil.Store(&spoil)
	cb.reset()
	k, err := a.root.CreateKey(ctx, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a key whose creation event was spoilt", func() error {
		_, err := b.root.Encrypt(ctx, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")})
		return err
	})
	if got, _ := cb.reads("keys/" + k.ID); got == 0 {
		t.Error("B learnt the key without reading it, although its event was spoilt")
	}
	if err := b.sys.Sync(ctx); err != nil {
		t.Fatalf("B after the retry: %v", err)
	}
}
