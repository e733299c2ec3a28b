// Package e2e runs the real coffer binary as a child process and talks to it
// over loopback HTTP: restarts, crashes, durability.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cofferkms/coffer/test/proc"
	"github.com/cofferkms/coffer/test/rawapi"
)

func TestMain(m *testing.M) { proc.Main(m) }

// writeConfig writes a production config file (no dev mode) with storage in
// dir and returns its path.
func writeConfig(t testing.TB, dir string) string {
	t.Helper()
	cfg := fmt.Sprintf("listen: 127.0.0.1:0\nstorage:\n  path: %s\nrotation_check_interval: 1h\nlog_level: warn\n",
		filepath.Join(dir, "coffer.db"))
	p := filepath.Join(dir, "coffer.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Server is a coffer server running as a child process.
type Server struct {
	t    testing.TB
	args []string
	p    *proc.Proc
	// Addr is the API's base URL, from the "Address:" line.
	Addr string
}

// StartServer runs `coffer server args...` and waits for its address. The
// child is killed when the test ends if it still runs.
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, args: args}
	s.start()
	return s
}

func (s *Server) start() {
	s.t.Helper()
	p, err := proc.Start("coffer server", proc.CofferBin(s.t), append([]string{"server"}, s.args...),
		[]string{"COFFER_TOKEN=", "COFFER_ADDR="}, "")
	if err != nil {
		s.t.Fatal(err)
	}
	s.p = p
	s.t.Cleanup(p.Kill)
	if s.Addr, err = p.WaitLine("Address:", 30*time.Second); err != nil {
		s.t.Fatal(err)
	}
}

// Pid is the server process's id.
func (s *Server) Pid() int { return s.p.Pid() }

// Output is what the child printed so far (stdout and stderr).
func (s *Server) Output() string { return s.p.Output() }

// OutputLine returns the first printed line's value after prefix. The
// banner is written in several pieces after the "Address:" line that start
// waits for, so it polls for up to 10 s before giving up with "".
func (s *Server) OutputLine(prefix string) string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, ok := s.p.Line(prefix); ok || time.Now().After(deadline) {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the child to be gone.
func (s *Server) Kill() {
	s.t.Helper()
	s.p.Kill()
}

// Stop sends SIGTERM and waits (up to 20 s) for a clean exit with status 0.
func (s *Server) Stop() {
	s.t.Helper()
	_ = s.p.Signal(syscall.SIGTERM)
	select {
	case <-s.p.Done():
	case <-time.After(20 * time.Second):
		s.p.Kill()
		s.t.Fatalf("coffer server ignored SIGTERM for 20s:\n%s", s.Output())
	}
	if err := s.p.Err(); err != nil {
		s.t.Fatalf("coffer server exited with %v after SIGTERM:\n%s", err, s.Output())
	}
}

// Restart starts the server again with the same arguments; it must have
// stopped. The address changes (port 0).
func (s *Server) Restart() {
	s.t.Helper()
	if !s.p.Exited() {
		s.t.Fatal("Restart of a running server")
	}
	s.start()
}

// newAPI is the REST API of s (wherever it listens now) with token.
func newAPI(s *Server, token string) *rawapi.API {
	return rawapi.New(func() string { return s.Addr }, token)
}
