package proc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProcLinesLogAndSignals(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "child.log")
	p, err := Start("child", "/bin/sh", []string{"-c", `echo "noise"; echo "Address:  http://x:1  "; echo "$PROC_TEST_VAR"; exec sleep 30`},
		[]string{"PROC_TEST_VAR=from-env"}, logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	if v, err := p.WaitLine("Address:", 10*time.Second); err != nil || v != "http://x:1" {
		t.Fatalf("WaitLine = %q, %v; want the trimmed rest of the line", v, err)
	}
	if _, err := p.WaitLine("from-env", 10*time.Second); err != nil {
		t.Fatalf("env entry not passed to the child: %v", err)
	}
	if _, ok := p.Line("missing"); ok {
		t.Fatal("Line found a line nobody printed")
	}
	if p.Exited() {
		t.Fatal("running child reported as exited")
	}
	// A stopped child must still die on Kill (it gets SIGCONT first).
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	if !p.Exited() || p.Err() == nil {
		t.Fatalf("after Kill: exited %v, err %v", p.Exited(), p.Err())
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Fatal("Signal to an ended process did not fail")
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "==== child start ") || !strings.Contains(string(b), "noise\n") {
		t.Fatalf("log file:\n%s", b)
	}
	if !strings.Contains(p.Output(), "noise") || !strings.HasSuffix(p.Tail(9), "from-env\n") {
		t.Fatalf("output %q, tail %q", p.Output(), p.Tail(9))
	}
}

func TestProcWaitLineGivesUpWhenTheChildEnds(t *testing.T) {
	p, err := Start("quitter", "/bin/sh", []string{"-c", "echo bye; exit 3"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.WaitLine("Address:", time.Minute)
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "bye") {
		t.Fatalf("WaitLine = %v; want an exit error with the output", err)
	}
	p.Stop(time.Second) // ended: nothing to do
}

func TestWaitForStopsAtPermanent(t *testing.T) {
	calls := 0
	want := errors.New("gone")
	start := time.Now()
	err := WaitFor(time.Minute, time.Millisecond, func() error {
		calls++
		if calls == 3 {
			return Permanent(want)
		}
		return errors.New("not yet")
	})
	if err != want || calls != 3 || time.Since(start) > 30*time.Second {
		t.Fatalf("WaitFor = %v after %d calls; want the permanent error at once", err, calls)
	}
	calls = 0
	err = WaitFor(20*time.Millisecond, time.Millisecond, func() error { calls++; return errors.New("never") })
	if err == nil || err.Error() != "never" || calls < 2 {
		t.Fatalf("WaitFor = %v after %d calls; want the last error at the deadline", err, calls)
	}
}
