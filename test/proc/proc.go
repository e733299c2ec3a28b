// Package proc runs the child processes of Coffer's process-level tests:
// a `coffer` binary built once per test process, etcd binaries (one member
// or a cluster), and any other program whose output a test scans for
// marker lines. Everything listens on free loopback ports.
//
// It is imported only by tests (test/ha, test/kube, test/e2e); it is an
// ordinary package so that they can share it.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a child process whose output goes to a log file (if it has one)
// and, bounded, to memory, where WaitLine and Tail read it.
type Proc struct {
	// Name names the process in errors.
	Name string
	cmd  *exec.Cmd
	out  *lineLog
	done chan struct{}
	err  error
}

// Start starts bin with args; env entries are added to the test process's
// environment. Output is appended to logPath unless it is "".
func Start(name, bin string, args, env []string, logPath string) (*Proc, error) {
	p := &Proc{Name: name, out: &lineLog{}, done: make(chan struct{})}
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(f, "==== %s start %s\n", name, time.Now().UTC().Format(time.RFC3339Nano))
		p.out.file = f
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		p.out.close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.out.close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil while it runs or after a clean exit).
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Kill sends SIGKILL (after SIGCONT, so that a stopped process dies) and
// waits for the process to end. A nil or ended process is left alone.
func (p *Proc) Kill() {
	if p == nil || p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM (after SIGCONT), waits up to grace, then kills.
func (p *Proc) Stop(grace time.Duration) {
	if p == nil || p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Signal sends sig unless the process ended.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s exited (%v)", p.Name, p.err)
	}
	return p.cmd.Process.Signal(sig)
}

// WaitLine waits for an output line starting with prefix and returns the
// rest of it, trimmed. It gives up when the process ends or timeout passes,
// with the tail of the output in the error.
func (p *Proc) WaitLine(prefix string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if v, ok := p.out.line(prefix); ok {
			return v, nil
		}
		if p.Exited() {
			return "", fmt.Errorf("%s exited (%v) before printing %q:\n%s", p.Name, p.err, prefix, p.out.tail(4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("%s printed no %q line within %s:\n%s", p.Name, prefix, timeout, p.out.tail(4000))
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Line returns the rest (trimmed) of the first output line starting with
// prefix, and whether there is one so far.
func (p *Proc) Line(prefix string) (string, bool) { return p.out.line(prefix) }

// Output is what the process printed so far (the first MiB of it).
func (p *Proc) Output() string { return p.out.tail(maxKept) }

// Tail is the last n bytes of what the process printed (of the first MiB
// kept in memory).
func (p *Proc) Tail(n int) string { return p.out.tail(n) }

// lineLog collects a child's output: all of it to the log file, the first
// MiB to memory, and the first 1000 lines for WaitLine.
type lineLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	lines   []string
	file    *os.File
}

const (
	maxKept  = 1 << 20
	maxLines = 1000
)

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
		if len(l.lines) < maxLines {
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
