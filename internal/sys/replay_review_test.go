package sys_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/storage"
)

// replayStore is a replica's client of a shared store whose Revision runs
// a hook once, right after reading the revision (as if other replicas
// wrote between this replica's revision read and its load), and whose
// watch holds back deletions of token records until released.
type replayStore struct {
	sharedStore
	mu      sync.Mutex
	hook    func()
	release chan struct{}
}

func (r *replayStore) Revision(ctx context.Context) (int64, error) {
	rev, err := r.sharedStore.Revision(ctx)
	r.mu.Lock()
	h := r.hook
	r.hook = nil
	r.mu.Unlock()
	if h != nil {
		h()
	}
	return rev, err
}

func (r *replayStore) Watch(ctx context.Context, prefix string, from int64) <-chan storage.Event {
	in := r.sharedStore.Watch(ctx, prefix, from)
	out := make(chan storage.Event)
	go func() {
		defer close(out)
		for ev := range in {
			if ev.Kind == storage.EventDelete && strings.HasPrefix(ev.Key, "auth/tokens/") {
				select {
				case <-r.release:
				case <-ctx.Done():
					return
				}
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

// TestReviewRevokedBeforeLoadNotServed: a token created and revoked on A
// between B's revision read and B's load (B unsealing) is absent from B's
// load; B's watch then replays the token's creation before its deletion.
// B must not accept the revoked token in between.
func TestReviewRevokedBeforeLoadNotServed(t *testing.T) {
	store := newInmem(t)
	rb := &replayStore{sharedStore: store, release: make(chan struct{})}
	rs := replicasOn(t, store, rb)
	a, b := rs[0], rs[1]
	defer close(rb.release)
	b.sys.Seal()
	var tok string
	rb.mu.Lock()
	rb.hook = func() {
		res, err := a.root.CreateToken(ctx, client.CreateTokenRequest{DisplayName: "revoked-early"})
		if err != nil {
			t.Error(err)
			return
		}
		tok = res.Token
		if err := a.root.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: res.Accessor}); err != nil {
			t.Error(err)
		}
	}
	rb.mu.Unlock()
	if _, err := b.sys.Unseal(ctx, b.share); err != nil {
		t.Fatal(err)
	}
	if tok == "" {
		t.Fatal("hook did not run")
	}
	if _, err := a.as(t, tok).LookupSelf(ctx); err == nil {
		t.Fatal("A accepts the token it revoked")
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if info, err := b.as(t, tok).LookupSelf(ctx); err == nil {
			t.Fatalf("B accepts a token revoked before B loaded (accessor %s): the replayed creation event brought it back", info.Accessor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
