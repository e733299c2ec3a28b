package inmem_test

import (
	"context"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		return inmem.New()
	})
}

func TestWatchConformance(t *testing.T) {
	storagetest.RunWatch(t, func(t *testing.T) storage.Backend {
		return inmem.New()
	})
}

// TestWatchPaused: a paused watch delivers neither changes nor progress,
// and catches up, in order, on resume.
func TestWatchPaused(t *testing.T) {
	b := inmem.New()
	b.SetProgressInterval(10 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := b.Watch(ctx, "", 0)
	b.SetWatchPaused(true)
	// Drain what was sent before the pause took effect.
	for drained := false; !drained; {
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
			drained = true
		}
	}
	if err := b.Apply(ctx, storage.Put("a", nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-ch:
		t.Fatalf("paused watch delivered %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
	b.SetWatchPaused(false)
	select {
	case e := <-ch:
		if e.Kind != storage.EventPut || e.Key != "a" || e.Revision != 1 {
			t.Errorf("first event after resume = %+v, want the put of a at 1", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing delivered after resume")
	}
}
