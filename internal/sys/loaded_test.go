package sys_test

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// listGate passes through to a barrier; once armed, the next List waits
// for release: the moment an unseal has opened the barrier and not yet
// loaded the token cache.
type listGate struct {
	*barrier.Barrier
	armed   atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (g *listGate) List(ctx context.Context, prefix string) ([]string, error) {
	if g.armed.CompareAndSwap(true, false) {
		close(g.reached)
		<-g.release
	}
	return g.Barrier.List(ctx, prefix)
}

// TestSealedUntilCachesLoaded: a server whose barrier is open but whose
// caches are still loading answers as sealed, so a valid token is never
// refused as unknown meanwhile (test/ha saw 401s on a replica being
// unsealed on etcd, where loading takes ~100 ms).
func TestSealedUntilCachesLoaded(t *testing.T) {
	b := barrier.New(inmem.New())
	g := &listGate{Barrier: b, reached: make(chan struct{}), release: make(chan struct{})}
	s := &sys.Sys{Barrier: b, Keys: keys.New(b), Tokens: auth.NewTokens(g, nil)}
	res, err := s.Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Sealed() {
		t.Fatal("sealed after init: Sealed() says no")
	}
	g.armed.Store(true)
	done := make(chan error, 1)
	go func() { _, err := s.Unseal(ctx, res.Shares[0]); done <- err }()
	<-g.reached
	if b.Sealed() {
		t.Fatal("setup: the barrier is not open while the caches load")
	}
	if !s.Sealed() {
		t.Error("Sealed() is false while the token cache is still loading")
	}
	if st, err := s.Status(ctx); err != nil || !st.Sealed {
		t.Errorf("seal status while loading: %+v, %v; want sealed", st, err)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s.Sealed() {
		t.Fatal("still sealed after the unseal finished")
	}
	if _, err := s.Tokens.Lookup(res.RootToken, netip.Addr{}); err != nil {
		t.Fatalf("root token after unseal: %v", err)
	}
	s.Seal()
	if !s.Sealed() {
		t.Fatal("not sealed after Seal")
	}
}
