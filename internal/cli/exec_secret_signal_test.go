package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
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

// A signal caught after the --file-dir files were written and before
// COMMAND started (it waits in the channel writeSecretFiles set up) goes
// to COMMAND once it runs, not lost; the files go when it ends.
func TestExecSecretSignalCaughtBeforeStartForwarded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "files")
	files, err := openSecretFiles(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := files.write([]deliveredValue{{target: "V", source: "s#f", value: "x"}}); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 8)
	sigs <- syscall.SIGTERM
	cmd := &cobra.Command{}
	cmd.SetContext(context.Background())
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(""))
	x := &secretExec{cmd: cmd, opts: &secretExecOptions{}, files: files, sigs: sigs, set: &secretSet{}}
	prog, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = x.run(prog, []string{"sleep", "10"}, nil)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 128+int(syscall.SIGTERM) || time.Since(start) > 5*time.Second {
		t.Fatalf("COMMAND ended with %v after %s, want killed by the caught SIGTERM", err, time.Since(start))
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("--file-dir is left (%v)", err)
	}
}
