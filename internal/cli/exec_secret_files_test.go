package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A write that fails part way (here the second name is taken by a
// directory) must still let remove find the files it wrote before: in a
// directory coffer did not create, they would stay behind with their
// values after coffer exits.
func TestSecretFilesPartialWriteRemoved(t *testing.T) {
	dir := t.TempDir()
	sf, err := openSecretFiles(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "B"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = sf.write([]deliveredValue{{target: "A", source: "s#a", value: "va"}, {target: "B", source: "s#b", value: "vb"}})
	if err == nil {
		t.Fatal("writing over a directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "A")); err != nil {
		t.Fatalf("A was not written before the failure: %v", err)
	}
	sf.remove()
	if _, err := os.Lstat(filepath.Join(dir, "A")); !os.IsNotExist(err) {
		t.Fatalf("A is left in --file-dir after remove (%v)", err)
	}
}

// A rewrite (--watch) removes the files of names no longer delivered, and
// remove then removes the rest.
func TestSecretFilesRewriteDropsOldNames(t *testing.T) {
	dir := t.TempDir()
	sf, err := openSecretFiles(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := sf.write([]deliveredValue{{target: "A", value: "1"}, {target: "B", value: "2"}}); err != nil {
		t.Fatal(err)
	}
	if err := sf.write([]deliveredValue{{target: "B", value: "3"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "A")); !os.IsNotExist(err) {
		t.Fatalf("A, no longer delivered, is still there (%v)", err)
	}
	sf.remove()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left after remove: %v", ents)
	}
}

// TestExecSecretWatchServerHangs: a --watch check that the server never
// answers must not keep coffer from seeing the command exit (and then
// removing its files and passing its code on).
func TestExecSecretWatchServerHangs(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "hang/db", "v1")
	target, err := url.Parse(os.Getenv("COFFER_ADDR"))
	if err != nil {
		t.Fatal(err)
	}
	var hang atomic.Bool
	hung := make(chan struct{}, 1)
	release := make(chan struct{})
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case hung <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	defer close(release)
	t.Setenv("COFFER_ADDR", srv.URL)

	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start:$V" >> "$0"; while [ ! -e "$0.stop" ]; do sleep 0.05; done; exit 7`
	done, errOut := runExecAsync("--secret", "hang/db=V", "--watch", "--interval", "1s", "--", "sh", "-c", script, log)
	waitLog(t, log, "start:v1", done, errOut)
	hang.Store(true)
	select {
	case <-hung:
	case <-time.After(20 * time.Second):
		t.Fatalf("no watch check reached the server; stderr:\n%s", errOut.String())
	}
	if err := os.WriteFile(log+".stop", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, done, errOut); code != 7 {
		t.Fatalf("exit %d, want the command's 7; stderr:\n%s", code, errOut.String())
	}
}

// TestExecSecretStartupVariableRefused: a field name chosen by whoever
// writes the secret does not become LD_PRELOAD, BASH_ENV or PATH in
// COMMAND's environment unless the caller names that variable; as a file
// name it is harmless.
func TestExecSecretStartupVariableRefused(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"secret", "put", "inj/app", "--from-literal", "bash_env=/nonexistent-planted",
		"--from-literal", "user=app"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("put: %d %s", code, errOut.String())
	}
	for _, spec := range []string{"inj/app", "inj/app#bash_env", "inj/*"} {
		errOut.Reset()
		// --watch keeps coffer the parent: were the secret delivered,
		// this test process must not be replaced by the command.
		code := run(context.Background(), []string{"exec", "--secret", spec, "--watch", "--interval", "1h", "--", "true"},
			strings.NewReader(""), &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "BASH_ENV") || !strings.Contains(errOut.String(), "was not started") {
			t.Fatalf("--secret %s: exit %d, stderr %q", spec, code, errOut.String())
		}
		if strings.Contains(errOut.String(), "planted") {
			t.Fatalf("the error holds the value: %q", errOut.String())
		}
	}
	// Named by the caller: delivered (supervised, so this process is not
	// replaced).
	done, eo := runExecAsync("--secret", "inj/app#bash_env=BASH_ENV", "--watch", "--interval", "1h", "--",
		"sh", "-c", `test "$BASH_ENV" = /nonexistent-planted`)
	if code := waitExit(t, done, eo); code != 0 {
		t.Fatalf("explicit =BASH_ENV: exit %d; stderr:\n%s", code, eo.String())
	}
	// As files the names are only file names.
	if m, err := fsMagic("/dev/shm"); err != nil || m != tmpfsMagic {
		t.Fatalf("/dev/shm is not a tmpfs here (%v): the test needs one", err)
	}
	dir := filepath.Join("/dev/shm", "coffer-exec-startup-"+strconv.Itoa(os.Getpid()))
	done, eo = runExecAsync("--secret", "inj/app", "--file-dir", dir, "--", "sh", "-c", `test -f "$0/BASH_ENV" && test -z "$BASH_ENV"`, dir)
	if code := waitExit(t, done, eo); code != 0 {
		t.Fatalf("--file-dir: exit %d; stderr:\n%s", code, eo.String())
	}
}

// TestExecSecretWatchBacksOff: while the server fails, --watch checks less
// and less often (1s interval: checks at about 1, 3, 7 s), not every
// interval.
func TestExecSecretWatchBacksOff(t *testing.T) {
	startDocServer(t)
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	execSecretPut(t, "back/db", "v1")
	target, err := url.Parse(os.Getenv("COFFER_ADDR"))
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, `{"error":{"code":"internal","message":"down"}}`, http.StatusInternalServerError)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	t.Setenv("COFFER_ADDR", srv.URL)

	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start:$V" >> "$0"; while [ ! -e "$0.stop" ]; do sleep 0.05; done; exit 9`
	done, errOut := runExecAsync("--secret", "back/db=V", "--watch", "--interval", "1s", "--", "sh", "-c", script, log)
	waitLog(t, log, "start:v1", done, errOut)
	failing.Store(true)
	time.Sleep(6500 * time.Millisecond)
	warnings := strings.Count(errOut.String(), "keeping the running values")
	if err := os.WriteFile(log+".stop", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, done, errOut); code != 9 {
		t.Fatalf("exit %d, want 9; stderr:\n%s", code, errOut.String())
	}
	if warnings < 1 || warnings > 3 {
		t.Fatalf("%d failed checks in 6.5 s at a 1 s interval, want 1 to 3 (backing off); stderr:\n%s", warnings, errOut.String())
	}
}

func TestWatchBackoff(t *testing.T) {
	for _, c := range []struct {
		failures int
		want     time.Duration
	}{{1, time.Second}, {2, 3 * time.Second}, {3, 7 * time.Second}, {20, maxWatchBackoff}} {
		if got := watchBackoff(time.Second, c.failures); got != c.want {
			t.Errorf("watchBackoff(1s, %d) = %s, want %s", c.failures, got, c.want)
		}
	}
	if got := watchBackoff(10*time.Minute, 1); got != maxWatchBackoff {
		t.Errorf("a long interval's backoff: %s", got)
	}
}

// --file-dir is refused when its name is a symlink (even to an empty
// directory of the caller) or a directory of another user; the target is
// left as it was.
func TestSecretFilesRefusedDirs(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := openSecretFiles(link, true); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a symlink as --file-dir: %v", err)
	}
	if st, _ := os.Stat(real); st.Mode().Perm() != 0o755 {
		t.Fatalf("the symlink's target was changed to %o", st.Mode().Perm())
	}
	dangling := filepath.Join(base, "dangling")
	if err := os.Symlink(filepath.Join(base, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	if _, err := openSecretFiles(dangling, true); err == nil {
		t.Fatal("a dangling symlink as --file-dir was accepted")
	}
	if _, err := os.Lstat(filepath.Join(base, "nowhere")); !os.IsNotExist(err) {
		t.Fatalf("the dangling symlink's target was created (%v)", err)
	}
	// Another user's directory: as root, one given to nobody; otherwise
	// root's own /.
	other := "/"
	if os.Getuid() == 0 {
		other = filepath.Join(base, "nobody")
		if err := os.Mkdir(other, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := openSecretFiles(other, true); err == nil || !strings.Contains(err.Error(), "belongs to another user") {
		t.Fatalf("another user's directory: %v", err)
	}
}

// A symlink planted at a file's name inside --file-dir is replaced, not
// followed: the value does not reach the link's target.
func TestSecretFilesSymlinkAtNameReplaced(t *testing.T) {
	dir := t.TempDir()
	sf, err := openSecretFiles(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "A")); err != nil {
		t.Fatal(err)
	}
	if err := sf.write([]deliveredValue{{target: "A", value: "secret-value"}}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "untouched" {
		t.Fatalf("the link's target now holds %q", b)
	}
	st, err := os.Lstat(filepath.Join(dir, "A"))
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o400 {
		t.Fatalf("A: %v %v", st, err)
	}
	sf.remove()
}
