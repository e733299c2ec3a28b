package keys_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
)

// cancelAfterApply is a Store whose next successful Apply cancels the
// caller's context, as a client that hangs up while its request writes
// does: the write is durable, but what follows it in the same request sees
// a done context.
type cancelAfterApply struct {
	keys.Store
	cancel atomic.Pointer[context.CancelFunc]
}

func (c *cancelAfterApply) Apply(ctx context.Context, ops ...storage.Op) error {
	err := c.Store.Apply(ctx, ops...)
	if f := c.cancel.Swap(nil); err == nil && f != nil {
		(*f)()
	}
	return err
}

// TestReviewHangUpAfterWriteKeepsKeyWritable: a request whose client hangs
// up right after its key write was stored (here the lease write an
// encryption makes every `lease` uses) must not leave the key service with
// a snapshot of the old revision, or every later write of that key (the
// next lease, an update, a rotation, the destruction at its deletion date)
// fails compare-and-swap until the server is sealed and unsealed.
func TestReviewHangUpAfterWriteKeepsKeyWritable(t *testing.T) {
	e := newEnv(t)
	st := &cancelAfterApply{Store: e.store}
	const lease = 4
	svc := keys.New(st, keys.WithUseLimits(1<<20, lease))
	k, err := svc.Create(ctx, keys.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The first encryption stores the first lease; its client hangs up
	// once the lease is stored.
	rctx, cancel := context.WithCancel(ctx)
	st.cancel.Store(&cancel)
	_, _ = svc.Encrypt(rctx, k.ID, []byte("x"), nil) // may fail: its client is gone
	cancel()
	for i := range 3 * lease {
		if _, err := svc.Encrypt(ctx, k.ID, []byte("x"), nil); err != nil {
			t.Fatalf("encryption %d after a hung-up request: %v", i, err)
		}
	}
	desc := "d"
	if _, err := svc.Update(ctx, k.ID, keys.UpdateRequest{Description: &desc}); err != nil {
		t.Fatalf("update after a hung-up request: %v", err)
	}
}
