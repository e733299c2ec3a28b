package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func init() {
	// [shm]: /dev/shm is a tmpfs, for --file-dir.
	scriptConditions["shm"] = func() bool {
		m, err := fsMagic("/dev/shm")
		return err == nil && (m == tmpfsMagic || m == ramfsMagic)
	}
	// [tmpdisk]: the scripts' work directories are not on a tmpfs, so
	// --file-dir there must be refused.
	scriptConditions["tmpdisk"] = func() bool {
		m, err := fsMagic(os.TempDir())
		return err == nil && m != tmpfsMagic && m != ramfsMagic
	}
}

// execSecretPut writes a version of a one-field secret through the CLI.
func execSecretPut(t *testing.T, name, value string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"secret", "put", name, "--from-literal", "value=" + value},
		strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("secret put %s: exit %d: %s", name, code, errOut.String())
	}
}

// runExecAsync runs coffer exec in the test process and returns its exit
// code on a channel.
func runExecAsync(args ...string) (chan int, *syncBuffer) {
	done := make(chan int, 1)
	errOut := &syncBuffer{}
	go func() {
		done <- run(context.Background(), append([]string{"exec"}, args...), strings.NewReader(""), io.Discard, errOut)
	}()
	return done, errOut
}

// waitLog waits until the file holds want (its lines joined by spaces).
func waitLog(t *testing.T, path, want string, done chan int, errOut *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if got := strings.Join(strings.Fields(string(b)), " "); got == want {
			return
		}
		select {
		case code := <-done:
			b, _ := os.ReadFile(path)
			if strings.Join(strings.Fields(string(b)), " ") == want {
				// It wrote the last line and ended: hand the code back.
				done <- code
				return
			}
			t.Fatalf("coffer exec ended (exit %d) with the log %q, want %q; stderr:\n%s", code, b, want, errOut.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("log %q, want %q; stderr:\n%s", b, want, errOut.String())
}

func waitExit(t *testing.T, done <-chan int, errOut *syncBuffer) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(20 * time.Second):
		t.Fatalf("coffer exec did not end; stderr:\n%s", errOut.String())
		return 0
	}
}

// TestExecSecretWatchRestart: a new current version restarts the command
// with the new value in its environment; the command's own exit ends coffer
// with its code.
func TestExecSecretWatchRestart(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "w/db", "v1")
	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start:$V" >> "$0"; [ "$V" = v2 ] && exit 4; trap 'echo "term:$V" >> "$0"; exit 0' TERM; while :; do sleep 0.05; done`
	done, errOut := runExecAsync("--secret", "w/db=V", "--watch", "--interval", "1s", "--", "sh", "-c", script, log)
	waitLog(t, log, "start:v1", done, errOut)
	execSecretPut(t, "w/db", "v2")
	waitLog(t, log, "start:v1 term:v1 start:v2", done, errOut)
	if code := waitExit(t, done, errOut); code != 4 {
		t.Fatalf("exit %d, want the command's 4; stderr:\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "new secret versions (w/db@2): restarting sh") {
		t.Errorf("stderr does not report the restart:\n%s", errOut.String())
	}
	if strings.Contains(errOut.String(), "v2") {
		t.Errorf("stderr holds a value:\n%s", errOut.String())
	}
}

// TestExecSecretWatchSignal: with --on-change signal:HUP the files are
// rewritten and the command signalled, not restarted.
func TestExecSecretWatchSignal(t *testing.T) {
	if m, err := fsMagic("/dev/shm"); err != nil || m != tmpfsMagic {
		t.Fatalf("/dev/shm is not a tmpfs here (%v): the test needs one", err)
	}
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "s/db", "v1")
	dir := filepath.Join("/dev/shm", "coffer-exec-watch-"+strconv.Itoa(os.Getpid()))
	log := filepath.Join(t.TempDir(), "log")
	script := `log=$0; d=$1; echo "start:$(cat $d/V)" >> $log
trap 'v=$(cat $d/V); echo "hup:$v" >> $log; [ "$v" = v2 ] && exit 6' HUP
while :; do sleep 0.05; done`
	done, errOut := runExecAsync("--secret", "s/db=V", "--file-dir", dir, "--watch", "--interval", "1s",
		"--on-change", "signal:HUP", "--", "sh", "-c", script, log, dir)
	waitLog(t, log, "start:v1", done, errOut)
	execSecretPut(t, "s/db", "v2")
	waitLog(t, log, "start:v1 hup:v2", done, errOut)
	if code := waitExit(t, done, errOut); code != 6 {
		t.Fatalf("exit %d, want the command's 6; stderr:\n%s", code, errOut.String())
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--file-dir %s left behind: %v", dir, err)
	}
}

// TestExecSecretWatchKeepsValuesOnError: a version that cannot be read
// (here: the secret is deleted) leaves the command running with the old
// values and says so, without restarting it.
func TestExecSecretWatchKeepsValuesOnError(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "k/db", "v1")
	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start:$V" >> "$0"; trap 'echo "term:$V" >> "$0"; exit 3' TERM; while [ ! -e "$0.stop" ]; do sleep 0.05; done; exit 8`
	done, errOut := runExecAsync("--secret", "k/db=V", "--watch", "--interval", "1s", "--", "sh", "-c", script, log)
	waitLog(t, log, "start:v1", done, errOut)
	var out, e bytes.Buffer
	if code := run(context.Background(), []string{"secret", "delete", "k/db", "--yes"}, strings.NewReader(""), &out, &e); code != 0 {
		t.Fatalf("delete: %d %s", code, e.String())
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(errOut.String(), "keeping the running values") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning; stderr:\n%s", errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.WriteFile(log+".stop", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, done, errOut); code != 8 {
		t.Fatalf("exit %d, want 8; stderr:\n%s", code, errOut.String())
	}
	if b, _ := os.ReadFile(log); strings.TrimSpace(string(b)) != "start:v1" {
		t.Errorf("log %q: the command was restarted or stopped", b)
	}
}

// TestExecSecretWatchReadOnly: a caller with secret:Read alone (no
// secret:List, so no metadata) still sees new versions, by reading them.
func TestExecSecretWatchReadOnly(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	root := os.Getenv("COFFER_TOKEN")
	execSecretPut(t, "r/db", "v1")
	dir := t.TempDir()
	pol := filepath.Join(dir, "reader.yaml")
	doc := "statements:\n  - effect: allow\n    actions: [secret:Read]\n    resources: [\"secret/r/db\"]\n"
	if err := os.WriteFile(pol, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"policy", "put", "reader", pol}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("policy put: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"token", "create", "--policy", "reader", "-o", "json"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("token create: %d %s", code, errOut.String())
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(out.Bytes(), &tok); err != nil || tok.Token == "" {
		t.Fatalf("token create output %q: %v", out.String(), err)
	}
	t.Setenv("COFFER_TOKEN", tok.Token)
	log := filepath.Join(dir, "log")
	script := `echo "start:$V" >> "$0"; [ "$V" = v2 ] && exit 4; trap 'exit 0' TERM; while :; do sleep 0.05; done`
	done, stderr := runExecAsync("--secret", "r/db=V", "--watch", "--interval", "1s", "--", "sh", "-c", script, log)
	waitLog(t, log, "start:v1", done, stderr)
	t.Setenv("COFFER_TOKEN", root)
	execSecretPut(t, "r/db", "v2")
	waitLog(t, log, "start:v1 start:v2", done, stderr)
	if code := waitExit(t, done, stderr); code != 4 {
		t.Fatalf("exit %d, want 4; stderr:\n%s", code, stderr.String())
	}
	if strings.Contains(stderr.String(), "warning") {
		t.Errorf("the metadata refusal was reported:\n%s", stderr.String())
	}
}

// TestExecSecretWatchPrefix: a secret added under a watched prefix is a
// change: the command restarts with its fields.
func TestExecSecretWatchPrefix(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "p/a", "1")
	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start:$VALUE:${B_VALUE-none}" >> "$0"; [ -n "$B_VALUE" ] && exit 5; trap 'exit 0' TERM; while :; do sleep 0.05; done`
	done, stderr := runExecAsync("--secret", "p/a", "--secret", "p/b*", "--watch", "--interval", "1s", "--", "sh", "-c", script, log)
	// p/b* matches nothing yet: fail closed.
	if code := waitExit(t, done, stderr); code != 1 || !strings.Contains(stderr.String(), `no secret's name starts with "p/b"`) {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	done, stderr = runExecAsync("--secret", "p/*", "--secret", "p/a#value=VALUE", "--watch", "--interval", "1s", "--", "sh", "-c", script, log)
	// p/* and p/a#value=VALUE both name VALUE.
	if code := waitExit(t, done, stderr); code != 1 || !strings.Contains(stderr.String(), "VALUE would be set by both p/a#value and p/a#value") {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"secret", "put", "p/b", "--from-literal", "b.value=2", "--cas", "0"},
		strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("put p/b: %d %s", code, errOut.String())
	}
	if code := run(context.Background(), []string{"secret", "delete", "p/b", "--yes"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("delete p/b: %d %s", code, errOut.String())
	}
	done, stderr = runExecAsync("--secret", "p/*", "--watch", "--interval", "1s", "--", "sh", "-c", script, log)
	waitLog(t, log, "start:1:none", done, stderr)
	if code := run(context.Background(), []string{"secret", "undelete", "p/b"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("undelete p/b: %d %s", code, errOut.String())
	}
	waitLog(t, log, "start:1:none start:1:2", done, stderr)
	if code := waitExit(t, done, stderr); code != 5 {
		t.Fatalf("exit %d, want 5; stderr:\n%s", code, stderr.String())
	}
}

// TestExecSecretWatchKillTimeout: a command that ignores SIGTERM is killed
// after --kill-timeout and started again.
func TestExecSecretWatchKillTimeout(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "t/db", "v1")
	log := filepath.Join(t.TempDir(), "log")
	script := `trap '' TERM; echo "start:$V" >> "$0"; [ "$V" = v2 ] && exit 4; while :; do sleep 0.05; done`
	done, stderr := runExecAsync("--secret", "t/db=V", "--watch", "--interval", "1s", "--kill-timeout", "1s", "--", "sh", "-c", script, log)
	waitLog(t, log, "start:v1", done, stderr)
	execSecretPut(t, "t/db", "v2")
	waitLog(t, log, "start:v1 start:v2", done, stderr)
	if code := waitExit(t, done, stderr); code != 4 {
		t.Fatalf("exit %d, want 4; stderr:\n%s", code, stderr.String())
	}
}
