// Package e2e runs the real coffer binary as a child process and talks to it
// over loopback HTTP: restarts, crashes, durability.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
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

// API calls a server's REST API with raw net/http and the client package's
// wire types.
type API struct {
	Base  func() string // the current base URL (it changes on restart)
	Token string
	HC    *http.Client
}

func newAPI(s *Server, token string) *API {
	return &API{Base: func() string { return s.Addr }, Token: token,
		HC: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Status int
	Body   client.Error
	Raw    string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("status %d: %s: %s", e.Status, e.Body.Code, e.Body.Message)
}

// Do sends in as JSON (nil: no body) and decodes a 2xx answer into out.
// Non-2xx answers come back as *StatusError; transport failures as they are.
func (a *API) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base()+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	resp, err := a.HC.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Status: resp.StatusCode, Raw: string(raw)}
		var eb client.ErrorBody
		if json.Unmarshal(raw, &eb) == nil {
			se.Body = eb.Error
		}
		return se
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decoding %s %s answer %q: %w", method, path, raw, err)
		}
	}
	return nil
}

// Must is Do that fails the test on any error.
func (a *API) Must(t testing.TB, method, path string, in, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Do(ctx, method, path, in, out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}

// WantStatus calls and checks a non-2xx answer's status and code.
func (a *API) WantStatus(t testing.TB, method, path string, in any, status int, code string) {
	t.Helper()
	err := a.Do(context.Background(), method, path, in, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != status || se.Body.Code != code {
		t.Fatalf("%s %s: %v; want status %d %s", method, path, err, status, code)
	}
}

// SealStatus reads GET /v1/sys/seal-status.
func (a *API) SealStatus(t testing.TB) client.SealStatus {
	t.Helper()
	var st client.SealStatus
	a.Must(t, "GET", "/v1/sys/seal-status", nil, &st)
	return st
}

// Init initializes the server and returns the shares and root token.
func (a *API) Init(t testing.TB, shares, threshold int) client.InitResponse {
	t.Helper()
	var ir client.InitResponse
	a.Must(t, "POST", "/v1/sys/init", client.InitRequest{Shares: shares, Threshold: threshold}, &ir)
	if len(ir.Shares) != shares || ir.RootToken == "" {
		t.Fatalf("init answered %d shares, root token %q", len(ir.Shares), ir.RootToken)
	}
	return ir
}

// Unseal submits shares in order and fails unless the server is unsealed
// after the last one.
func (a *API) Unseal(t testing.TB, shares ...string) {
	t.Helper()
	var st client.SealStatus
	for _, sh := range shares {
		a.Must(t, "POST", "/v1/sys/unseal", client.UnsealRequest{Share: sh}, &st)
	}
	if st.Sealed {
		t.Fatalf("still sealed after %d shares: %+v", len(shares), st)
	}
}
