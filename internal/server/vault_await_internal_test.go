package server

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// TestAwaitAlias: the loser of an upsert race waits for the alias another
// request created (here it appears late, as on a replica that follows the
// store); one that never appears is a retryable 503 after aliasWait, and a
// request that ends stops the wait.
func TestAwaitAlias(t *testing.T) {
	st := sys.New(barrier.New(inmem.New()), nil)
	if _, _, err := st.DevBootstrap(context.Background(), "", ""); err != nil {
		t.Fatal(err)
	}
	s := New(st, Options{})
	ctx := context.Background()

	go func() {
		time.Sleep(50 * time.Millisecond)
		st.Keys.Create(ctx, keys.CreateRequest{Alias: "alias/late"})
	}()
	if err := s.awaitAlias(ctx, "alias/late"); err != nil {
		t.Fatalf("an alias that appears within the wait: %v", err)
	}
	if _, _, err := st.Keys.Names("alias/late"); err != nil {
		t.Fatalf("after the wait: %v", err)
	}

	defer func(d time.Duration) { aliasWait = d }(aliasWait)
	aliasWait = 100 * time.Millisecond
	start := time.Now()
	err := s.awaitAlias(ctx, "alias/never")
	var ae *apiError
	if !errors.As(err, &ae) || ae.status != http.StatusServiceUnavailable || ae.code != "busy" {
		t.Fatalf("an alias that never appears: %v, want 503 busy", err)
	}
	if d := time.Since(start); d < aliasWait {
		t.Fatalf("gave up after %s, before the %s wait", d, aliasWait)
	}

	aliasWait = time.Minute
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	start = time.Now()
	if err := s.awaitAlias(cctx, "alias/never"); !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("a request that ends: %v after %s", err, time.Since(start))
	}
}
