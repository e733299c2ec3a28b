package kube

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a child process whose output is kept in memory (and in a log
// file) and scanned for marker lines.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lineLog
	done chan struct{}
	err  error
}

// startProc starts bin with args; env entries are added to the process's.
func startProc(t testing.TB, name, bin string, args []string, env []string, logFile string) (*proc, error) {
	t.Helper()
	p := &proc{name: name, out: &lineLog{}, done: make(chan struct{})}
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		p.out.file = f
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		if p.out.file != nil {
			p.out.file.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
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
// it returns cond's last error.
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

// permanentError stops waitFor at once.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }

func permanent(err error) error { return permanentError{err} }
