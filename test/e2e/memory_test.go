package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// rssBytes reads the resident set size of a process from /proc.
func rssBytes(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestMemory checks the memory bounds on the real binary: an idle dev
// server under 40 MiB RSS, and a server with 10,000 keys loaded (after a
// restart, so every key was read back from storage) under 150 MiB.
func TestMemory(t *testing.T) {
	const (
		idleLimit = 40 << 20
		keysLimit = 150 << 20
		nKeys     = 10000
	)
	dir := t.TempDir()
	args := []string{"--dev", "--dev-dir", dir, "--dev-root-token", "memtest", "--listen", "127.0.0.1:0"}
	srv := StartServer(t, args...)
	time.Sleep(300 * time.Millisecond) // let start-up garbage be collected
	idle := rssBytes(t, srv.Pid())
	t.Logf("idle dev server: %.1f MiB RSS", float64(idle)/(1<<20))
	if idle > idleLimit {
		t.Errorf("idle RSS %d MiB exceeds %d MiB", idle>>20, idleLimit>>20)
	}

	c, err := client.New(srv.Addr, client.WithToken("memtest"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < nKeys/16; i++ {
				if _, err := c.CreateKey(ctx, client.CreateKeyRequest{Description: "memory test"}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	t.Logf("created %d keys in %v", nKeys, time.Since(start).Round(time.Millisecond))
	t.Logf("after creating %d keys: %.1f MiB RSS", nKeys, float64(rssBytes(t, srv.Pid()))/(1<<20))

	srv.Stop()
	srv.Restart()
	c, _ = client.New(srv.Addr, client.WithToken("memtest"))
	l, err := c.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Keys) != nKeys {
		t.Fatalf("%d keys after restart, want %d", len(l.Keys), nKeys)
	}
	loaded := rssBytes(t, srv.Pid())
	t.Logf("after restart with %d keys loaded and listed: %.1f MiB RSS", nKeys, float64(loaded)/(1<<20))
	if loaded > keysLimit {
		t.Errorf("RSS with %d keys %d MiB exceeds %d MiB", nKeys, loaded>>20, keysLimit>>20)
	}
}
