package cli

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A SIGTERM that arrives while the --file-dir files are being written
// does not end coffer by its default action (which would leave the files
// behind): the files are removed, COMMAND does not start, and coffer
// exits 128+15 as a shell reports a signal.
func TestExecSecretSignalDuringFileWrite(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "sig/db", "value-in-a-file")
	// The test process's own catch: without coffer's, a SIGTERM would
	// otherwise end the whole test binary.
	own := make(chan os.Signal, 1)
	signal.Notify(own, syscall.SIGTERM)
	defer signal.Stop(own)
	dir := filepath.Join(t.TempDir(), "files")
	marker := filepath.Join(t.TempDir(), "ran")
	written := false
	filesWrittenHook = func(sigs <-chan os.Signal) {
		_, err := os.Stat(filepath.Join(dir, "V"))
		written = err == nil
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			t.Error(err)
			return
		}
		<-own
		// Delivered to every channel in one pass; wait until coffer's
		// has it too (it would not, were it not listening yet).
		for deadline := time.Now().Add(5 * time.Second); len(sigs) == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Cleanup(func() { filesWrittenHook = nil })
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"exec", "--secret", "sig/db=V", "--file-dir", dir, "--allow-disk", "--",
		"sh", "-c", `touch "$0"`, marker}, strings.NewReader(""), &out, &errOut)
	if !written {
		t.Fatal("the hook ran before the files were written")
	}
	if code != 128+int(syscall.SIGTERM) || !strings.Contains(errOut.String(), "arrived while the secret files were written") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("--file-dir is left after the signal (%v)", err)
	}
	if _, err := os.Lstat(marker); !os.IsNotExist(err) {
		t.Fatal("COMMAND ran after the signal")
	}
}
