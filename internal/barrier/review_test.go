package barrier

import (
	"context"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// stuckBackend blocks every Apply of path until release is closed, as a
// slow or partitioned store would.
type stuckBackend struct {
	storage.Backend
	path    string
	entered chan struct{}
	release chan struct{}
}

func (s *stuckBackend) Apply(ctx context.Context, ops ...storage.Op) error {
	for _, op := range ops {
		if op.Key == s.path {
			close(s.entered)
			<-s.release
		}
	}
	return s.Backend.Apply(ctx, ops...)
}

// TestReviewStatusAnswersWhileSealWaits: Seal waits for the writes in
// flight (so that nothing is written after it), and while it waits it holds
// the write side of the barrier's lock pending, which blocks every new
// reader of the lock. A storage write that hangs must not also hang
// seal-status and Sealed (every request's first check): an operator who
// seals in an emergency must be able to see that the seal is under way.
func TestReviewStatusAnswersWhileSealWaits(t *testing.T) {
	b, be, _ := initBarrier(t, 1, 1)
	st := &stuckBackend{Backend: be, path: "keys/slow", entered: make(chan struct{}), release: make(chan struct{})}
	b.backend = st
	defer close(st.release)
	go func() { _ = b.Apply(ctx, storage.Put("keys/slow", []byte("v"))) }()
	<-st.entered
	go b.Seal()
	time.Sleep(50 * time.Millisecond) // let Seal queue for the lock

	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Sealed()
		_, _ = b.Status(ctx)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Sealed and Status hang while Seal waits for a storage write in flight")
	}
}
