package kmsplugin

// Shared test fixtures: a real Coffer server run in-process (server.Run in
// dev mode, bbolt storage, HTTP on 127.0.0.1), a real plugin serving the
// KMS v2 gRPC API on a unix socket, and a gRPC client for that socket.

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/server"
)

// cofferServer is a real Coffer server running in this process.
type cofferServer struct {
	Addr  string // http://127.0.0.1:port
	Token string // root token
	Dir   string // dev dir (storage, unseal share)

	cancel context.CancelFunc
	done   chan error
}

// startCoffer runs server.Run in dev mode on listen (127.0.0.1:0 for a free
// port) with storage in dir, and waits until it serves. rootToken may be ""
// the first time; pass the previous token to restart on the same dir.
func startCoffer(tb testing.TB, dir, listen, rootToken string) *cofferServer {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &cofferServer{Dir: dir, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan server.Banner, 1)
	logger := slog.New(slog.DiscardHandler)
	go func() {
		s.done <- server.Run(ctx, server.Config{Dev: true, DevDir: dir, DevRootToken: rootToken, Listen: listen}, logger,
			func(b server.Banner) { ready <- b })
	}()
	select {
	case b := <-ready:
		s.Addr, s.Token = b.Addr, b.RootToken
	case err := <-s.done:
		cancel()
		tb.Fatalf("coffer server did not start: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		tb.Fatal("coffer server did not start within 20s")
	}
	tb.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and waits for Run to return. It is idempotent.
func (s *cofferServer) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
	}
}

// HostPort is the listen address, for restarting on the same port.
func (s *cofferServer) HostPort() string {
	return s.Addr[len("http://"):]
}

func newCofferClient(tb testing.TB, s *cofferServer) *client.Client {
	tb.Helper()
	c, err := client.New(s.Addr, client.WithToken(s.Token))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// shortTempDir returns a fresh directory under os.TempDir with a short path,
// because a unix socket path must stay under 108 bytes and t.TempDir() names
// can be longer.
func shortTempDir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "kms")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// servedPlugin is a Plugin behind the real gRPC adapter on a unix socket.
type servedPlugin struct {
	P      *Plugin
	Socket string
	GS     *grpc.Server
	cancel context.CancelFunc
	served chan error
}

// servePlugin builds a plugin from cfg, starts its health loop (Run) and
// serves it on a new unix socket. It waits for the first health check.
func servePlugin(tb testing.TB, cfg Config) *servedPlugin {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := New(cfg)
	sock := filepath.Join(shortTempDir(tb), "kms.sock")
	ln, err := Listen(sock)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sp := &servedPlugin{P: p, Socket: sock, GS: NewGRPCServer(sock, 5*time.Second, p), cancel: cancel, served: make(chan error, 1)}
	go p.Run(ctx)
	go func() { sp.served <- sp.GS.Serve(ln) }()
	tb.Cleanup(func() {
		cancel()
		sp.GS.Stop()
		<-sp.served
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := p.state.Load()
		if !h.checked.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("the plugin's first health check did not finish within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return sp
}

// dialKMS returns a KMS v2 gRPC client for the socket at path.
func dialKMS(tb testing.TB, path string) kmsapi.KeyManagementServiceClient {
	tb.Helper()
	conn, err := grpc.NewClient("unix:"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return kmsapi.NewKeyManagementServiceClient(conn)
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")
