package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// TestExecSecretWatchWaitsOnTheServer: with an --interval of an hour, a
// new version still restarts the command within seconds: --watch waits on
// the server (POST /v1/secrets/wait) for a new current version instead of
// reading the secrets again each interval.
func TestExecSecretWatchWaitsOnTheServer(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "lp/db", "v1")
	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start:$V" >> "$0"; [ "$V" = v2 ] && exit 5; trap 'exit 0' TERM; while :; do sleep 0.05; done`
	done, errOut := runExecAsync("--secret", "lp/db=V", "--watch", "--interval", "1h", "--", "sh", "-c", script, log)
	waitLog(t, log, "start:v1", done, errOut)
	// Let the first check reach its wait.
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	execSecretPut(t, "lp/db", "v2")
	waitLog(t, log, "start:v1 start:v2", done, errOut)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("restarted %s after the write", d)
	}
	if code := waitExit(t, done, errOut); code != 5 {
		t.Fatalf("exit %d, want 5; stderr:\n%s", code, errOut.String())
	}
	if strings.Contains(errOut.String(), "warning") {
		t.Errorf("warnings:\n%s", errOut.String())
	}
}

// TestAwaitVersionsTooShortToWaitIsNoWait: with --interval 1s (the least
// allowed) the budget is below the shortest wait awaitVersions asks for,
// so it asks none. It must then not report that the server held a wait:
// --watch starts the next check at once after a held wait, and read every
// secret's metadata in a loop with no pause at all.
func TestAwaitVersionsTooShortToWaitIsNoWait(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"changed":[],"denied":[]}`)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, budget := range []time.Duration{time.Second, 1500 * time.Millisecond} {
		start := time.Now()
		changed, waited := awaitVersions(context.Background(), c, map[string]uint32{"a": 1}, budget)
		took := time.Since(start)
		if changed {
			t.Fatalf("budget %s: changed without a change", budget)
		}
		if waited && took < budget/2 {
			t.Fatalf("budget %s: reported a held wait after %s (%d wait calls): --watch would check again at once, in a loop", budget, took, calls.Load())
		}
	}
}
