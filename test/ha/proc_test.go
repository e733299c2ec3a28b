// Package ha runs a real etcd cluster (the etcd binary) and several real
// `coffer server` processes on it, and checks what high availability
// promises: nothing acknowledged is lost under faults, rotations are
// exactly-once, and the histories clients observe are linearizable (within
// the documented propagation bound for what replicas serve from caches).
//
// The tests need the etcd binary and are skipped unless COFFER_E2E is set.
package ha

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// requireE2E skips t unless COFFER_E2E is set.
func requireE2E(t testing.TB) {
	t.Helper()
	if os.Getenv("COFFER_E2E") == "" {
		t.Skip("set COFFER_E2E=1 to run the HA tests with the etcd binary and real coffer processes")
	}
}

// patience scales every wait for a slow or loaded machine
// (COFFER_E2E_PATIENCE, default 60s).
func patience() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("COFFER_E2E_PATIENCE")); err == nil && d > 0 {
		return d
	}
	return 60 * time.Second
}

// proc is a child process whose output goes to a log file and, bounded, to
// memory.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *lineLog
	logPath string
	done    chan struct{}
	err     error
}

// startProc starts bin with args; env entries are added to the process's.
func startProc(name, bin string, args, env []string, logPath string) (*proc, error) {
	p := &proc{name: name, out: &lineLog{}, logPath: logPath, done: make(chan struct{})}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "==== %s start %s\n", name, time.Now().UTC().Format(time.RFC3339Nano))
	p.out.file = f
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.out.close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL (after SIGCONT, so a stopped process dies) and waits.
func (p *proc) kill() {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// signal sends sig unless the process ended.
func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s exited (%v)", p.name, p.err)
	}
	return p.cmd.Process.Signal(sig)
}

// waitLine waits for an output line starting with prefix and returns the
// rest of it.
func (p *proc) waitLine(prefix string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if v, ok := p.out.line(prefix); ok {
			return v, nil
		}
		if p.exited() {
			return "", fmt.Errorf("%s exited (%v) before printing %q:\n%s", p.name, p.err, prefix, p.out.tail(4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("%s printed no %q line within %s:\n%s", p.name, prefix, timeout, p.out.tail(4000))
}

// lineLog collects a child's output.
type lineLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	lines   []string
	file    *os.File
}

const maxKept = 1 << 20

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.Write(b)
	}
	if l.buf.Len() < maxKept {
		l.buf.Write(b)
	}
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		if len(l.lines) < 1000 {
			l.lines = append(l.lines, strings.TrimSpace(string(l.partial[:i])))
		}
		l.partial = l.partial[i+1:]
	}
	return len(b), nil
}

func (l *lineLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.Close()
		l.file = nil
	}
}

func (l *lineLog) line(prefix string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ln := range l.lines {
		if v, ok := strings.CutPrefix(ln, prefix); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

func (l *lineLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// freePort returns a loopback port that was free a moment ago. Callers
// that hand it to a child retry on a bind failure.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// waitFor polls cond every interval until it returns nil or timeout passes;
// it returns cond's last error. A permanent error stops it at once.
func waitFor(timeout, interval time.Duration, cond func() error) error {
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

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }

func permanent(err error) error { return permanentError{err} }

// dumpLogsOnFailure prints the tails of the named log files when t fails
// and copies the whole files to the test's artifact directory.
func dumpLogsOnFailure(t testing.TB, logs func() []string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := artifactDir(t)
		for _, path := range logs() {
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			dst := filepath.Join(dir, filepath.Base(filepath.Dir(path))+"-"+filepath.Base(path))
			if os.WriteFile(dst, b, 0o644) == nil {
				t.Logf("log copied to %s", dst)
			}
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("---- tail of %s ----\n%s", path, b)
		}
	})
}
