package cli

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
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
