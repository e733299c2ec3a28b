package proc

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// RequireE2E skips t unless COFFER_E2E is set; what says what the test
// needs ("tests with the etcd binary", ...).
func RequireE2E(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("COFFER_E2E") == "" {
		t.Skip("set COFFER_E2E=1 to run " + what)
	}
}

// Patience is COFFER_E2E_PATIENCE (a Go duration) when it is set and
// positive, else def: how long a test polls for a condition that normally
// holds within seconds, so that a loaded machine is not mistaken for a
// broken one.
func Patience(def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("COFFER_E2E_PATIENCE")); err == nil && d > 0 {
		return d
	}
	return def
}

// FreePort returns a loopback port that was free a moment ago. Callers
// that hand it to a child retry on a bind failure.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
// Every listener stays open until all n are chosen, so the kernel cannot
// hand one port out twice (two FreePort calls in a row may).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// HostPort is 127.0.0.1:port.
func HostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// WaitFor polls cond every interval until it returns nil or timeout passes;
// it returns cond's last error. An error made with Permanent stops it at
// once (and is returned unwrapped).
func WaitFor(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		var perm permanentError
		if err == nil {
			return nil
		} else if errors.As(err, &perm) {
			return perm.err
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// permanentError stops WaitFor at once.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }

// Permanent marks err as one WaitFor must not wait out (the process
// exited, say).
func Permanent(err error) error { return permanentError{err} }

// DumpLogsOnFailure logs the tails of the files logs returns when t has
// failed at cleanup; with copyTo non-nil it also copies each whole file
// into the directory copyTo returns (one that outlives the test), named
// after the file's directory and name.
func DumpLogsOnFailure(t testing.TB, copyTo func() string, logs func() []string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var dir string
		if copyTo != nil {
			dir = copyTo()
		}
		for _, path := range logs() {
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			if dir != "" {
				dst := filepath.Join(dir, filepath.Base(filepath.Dir(path))+"-"+filepath.Base(path))
				if os.WriteFile(dst, b, 0o644) == nil {
					t.Logf("log copied to %s", dst)
				}
			}
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("---- tail of %s ----\n%s", path, b)
		}
	})
}
