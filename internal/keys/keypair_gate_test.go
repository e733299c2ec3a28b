package keys

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// TestPairGateBounds: with every slot taken, a full queue of waiters
// refuses the next caller at once with ErrKeyPairBusy (no goroutine left
// waiting), a waiter gives up after the gate's wait, and a waiter gets the
// slot given back.
func TestPairGateBounds(t *testing.T) {
	g := newPairGate(2) // one slot, four waiters
	if cap(g.slots) != 1 || g.queue != 4 {
		t.Fatalf("gate of 2 procs: %d slots, queue %d", cap(g.slots), g.queue)
	}
	release, err := g.enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 4)
	for range 4 {
		go func() {
			r, err := g.enter(context.Background())
			if err == nil {
				r()
			}
			got <- err
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); g.waiting.Load() != 4; {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want 4", g.waiting.Load())
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if _, err := g.enter(context.Background()); !errors.Is(err, ErrKeyPairBusy) {
		t.Fatalf("a fifth waiter: %v, want ErrKeyPairBusy", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the refusal took %s: it must not wait", d)
	}
	if n := g.waiting.Load(); n != 4 {
		t.Fatalf("%d waiters after the refusal, want 4", n)
	}
	release()
	for range 4 {
		if err := <-got; err != nil {
			t.Fatalf("a waiter: %v", err)
		}
	}

	g.wait = 20 * time.Millisecond
	release, err = g.enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := g.enter(context.Background()); !errors.Is(err, ErrKeyPairBusy) {
		t.Fatalf("a waiter past the wait: %v, want ErrKeyPairBusy", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.enter(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("a caller gone: %v", err)
	}
	if n := g.waiting.Load(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

// TestGenerateDataKeyPairBusy: GenerateDataKeyPair goes through the gate:
// with its slot and queue full it is ErrKeyPairBusy.
func TestGenerateDataKeyPairBusy(t *testing.T) {
	b := barrier.New(inmem.New())
	if _, err := b.Initialize(context.Background(), 1, 1); err != nil {
		t.Fatal(err)
	}
	s := New(b)
	k, err := s.Create(context.Background(), CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	old := keyPairGate
	t.Cleanup(func() { keyPairGate = old })
	keyPairGate = newPairGate(1)
	keyPairGate.queue = 0
	release, err := keyPairGate.enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GenerateDataKeyPair(context.Background(), k.ID, "ECC_NIST_P256", nil); !errors.Is(err, ErrKeyPairBusy) {
		t.Fatalf("with the gate full: %v, want ErrKeyPairBusy", err)
	}
	release()
	if _, err := s.GenerateDataKeyPair(context.Background(), k.ID, "ECC_NIST_P256", nil); err != nil {
		t.Fatalf("with a slot free: %v", err)
	}
}

// TestPairGateFollowsGOMAXPROCS: the process's gate is sized by
// GOMAXPROCS (a container's CPU limit), not by the machine's cores. The
// test runs itself again with GOMAXPROCS=8 and expects 4 slots, which
// NumCPU would give only on a machine of 8 or 9 cores.
func TestPairGateFollowsGOMAXPROCS(t *testing.T) {
	if os.Getenv("COFFER_PAIR_GATE_CHILD") == "1" {
		if runtime.GOMAXPROCS(0) != 8 || cap(keyPairGate.slots) != 4 {
			t.Fatalf("GOMAXPROCS %d: %d slots, want 4", runtime.GOMAXPROCS(0), cap(keyPairGate.slots))
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPairGateFollowsGOMAXPROCS$", "-test.count=1")
	cmd.Env = append(os.Environ(), "COFFER_PAIR_GATE_CHILD=1", "GOMAXPROCS=8")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
