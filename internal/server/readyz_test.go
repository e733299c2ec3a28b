package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// probe is one answer of /healthz or /readyz.
type probe struct {
	code   int
	Status string `json:"status"`
	Reason string `json:"reason"`
	Since  string `json:"since"`
	Error  struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// getProbe GETs url with hc and decodes the JSON answer (code 0 when the
// request itself failed).
func getProbe(hc *http.Client, url string) probe {
	var p probe
	resp, err := hc.Get(url)
	if err != nil {
		p.Reason = err.Error()
		return p
	}
	defer resp.Body.Close()
	p.code = resp.StatusCode
	json.NewDecoder(resp.Body).Decode(&p)
	return p
}

// pollProbe polls url until ok accepts its answer, or fails after
// deadline; it returns the answer and how long it took.
func pollProbe(t *testing.T, hc *http.Client, url, what string, deadline time.Duration, ok func(probe) bool) (probe, time.Duration) {
	t.Helper()
	start := time.Now()
	var p probe
	for time.Since(start) < deadline {
		if p = getProbe(hc, url); ok(p) {
			return p, time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: after %s the answer is still %d %+v", what, deadline, p.code, p)
	return p, 0
}

// TestReadyzStaleAndKeyringMismatch: a replica that cannot prove its
// caches fresh is not ready (503 "stale", with Fresh's reason), and is
// ready again once its watch delivers; a replica whose barrier keyring
// differs from the stored one is not ready (503 "keyring mismatch").
func TestReadyzStaleAndKeyringMismatch(t *testing.T) {
	ctx := context.Background()
	store := inmem.New()
	store.SetProgressInterval(50 * time.Millisecond)
	t.Cleanup(func() { store.Close() })
	quiet := slog.New(slog.DiscardHandler)
	const bound = 500 * time.Millisecond
	var syss []*sys.Sys
	var urls []string
	for range 2 {
		s := sys.New(barrier.New(store), nil)
		s.Follow(store, bound, quiet)
		ts := httptest.NewServer(server.New(s, server.Options{Logger: quiet}))
		t.Cleanup(func() { ts.Close(); s.Seal() })
		syss, urls = append(syss, s), append(urls, ts.URL)
	}
	ini, err := syss[0].Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syss {
		if _, err := s.Unseal(ctx, ini.Shares[0]); err != nil {
			t.Fatal(err)
		}
	}
	hc := http.DefaultClient
	ready := func(p probe) bool { return p.code == http.StatusOK && p.Status == "ready" }
	for _, u := range urls {
		pollProbe(t, hc, u+"/readyz", "an unsealed replica", 10*time.Second, ready)
	}

	// B's watch goes silent and A writes: B cannot prove it has seen it.
	store.SetWatchPaused(true)
	root, _ := client.New(urls[0], client.WithToken(ini.RootToken))
	if _, err := root.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/moves-the-revision"}); err != nil {
		t.Fatal(err)
	}
	p, took := pollProbe(t, hc, urls[1]+"/readyz", "a replica whose watch is lost", 10*bound, func(p probe) bool { return p.code != http.StatusOK })
	t.Logf("/readyz went 503 %s %s after the write (bound %s)", p.Status, took.Round(time.Millisecond), bound)
	if p.code != http.StatusServiceUnavailable || p.Status != "stale" || !strings.Contains(p.Reason, "freshness bound of 500ms") {
		t.Fatalf("/readyz of a stale replica: %d %+v, want 503 stale with Fresh's reason", p.code, p)
	}
	if h := getProbe(hc, urls[1]+"/healthz"); h.code != http.StatusOK {
		t.Errorf("/healthz of a stale replica: %d %+v, want 200 (alive)", h.code, h)
	}
	store.SetWatchPaused(false)
	pollProbe(t, hc, urls[1]+"/readyz", "a replica whose watch is back", 10*time.Second, ready)

	// A keyring from another store.
	other := inmem.New()
	if _, err := sys.New(barrier.New(other), nil).Init(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Get(ctx, barrier.KeyringPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Apply(ctx, storage.Put(barrier.KeyringPath, foreign.Value)); err != nil {
		t.Fatal(err)
	}
	p, _ = pollProbe(t, hc, urls[1]+"/readyz", "a foreign keyring", 10*time.Second, func(p probe) bool { return p.code != http.StatusOK })
	if p.code != http.StatusServiceUnavailable || p.Status != "keyring mismatch" || !strings.Contains(p.Reason, "keyring") {
		t.Fatalf("/readyz with a foreign keyring: %d %+v, want 503 keyring mismatch with the reason", p.code, p)
	}
}

// TestReadyzStaleOnEtcd: a server.Run replica on etcd whose etcd stops
// answers /readyz 503 "stale" within its freshness bound (plus slack), and
// is ready again without a restart once etcd is back.
func TestReadyzStaleOnEtcd(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	cfg := etcdConfig(c.Endpoints(), "/coffer-readyz", t.TempDir())
	cfg.HA.FreshnessBound = "1s"
	cfg.Audit.Disabled = true
	srv := startEtcdServer(t, cfg, slog.New(slog.DiscardHandler))
	defer func() {
		if err := srv.stop(); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	anon, _ := client.New(srv.ban.Addr)
	ini, err := anon.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[0]}); err != nil {
		t.Fatal(err)
	}
	url := srv.ban.Addr + "/readyz"
	hc := &http.Client{Timeout: 10 * time.Second}
	ready := func(p probe) bool { return p.code == http.StatusOK && p.Status == "ready" }
	pollProbe(t, hc, url, "an unsealed replica", 10*time.Second, ready)

	stopping := time.Now()
	c.Stop(0) // embed's Close can take seconds: the bound counts from its start
	stopped := time.Now()
	p, _ := pollProbe(t, hc, url, "a replica whose etcd stopped", 1*time.Second+10*time.Second, func(p probe) bool { return p.Status == "stale" })
	t.Logf("/readyz said stale %s after etcd began to stop, %s after it had stopped (bound 1s): %s",
		time.Since(stopping).Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond), p.Reason)
	if p.code != http.StatusServiceUnavailable || !strings.Contains(p.Reason, "freshness bound of 1s") {
		t.Fatalf("/readyz of a replica cut off from etcd: %d %+v", p.code, p)
	}
	c.Restart(0)
	_, took := pollProbe(t, hc, url, "a replica whose etcd is back", 60*time.Second, ready)
	t.Logf("/readyz ready again %s after etcd restarted", took.Round(time.Millisecond))
}

// freeLoopbackAddr returns a loopback address no one listens on now.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestRunListensWhileWaitingForEtcd: with etcd unreachable at start the
// server listens at once, with its TLS (tls.auto), and serves the probes
// (/healthz 200, /readyz 503 "waiting for storage" with the last error and
// since when) and refuses everything else with 503 storage_unavailable
// without opening its audit trail; it logs why and retries, and once etcd
// answers it becomes the real server without a restart: initialized,
// unsealed, audited. Stopped while still waiting, Run returns no error.
func TestRunListensWhileWaitingForEtcd(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	c.Stop(0) // its client port is now closed
	var log lockedBuffer
	dataDir := t.TempDir()
	cfg := etcdConfig(c.Endpoints(), "/coffer-wait", dataDir)
	cfg.Listen = freeLoopbackAddr(t)
	cfg.TLS.Auto = true
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan server.Banner, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- server.Run(runCtx, cfg, slog.New(slog.NewTextHandler(&log, nil)), func(b server.Banner) { ready <- b })
	}()

	// The listener is up with its TLS before the storage answers.
	certFile := filepath.Join(dataDir, "tls-auto-cert.pem")
	var hc *http.Client
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if pem, err := os.ReadFile(certFile); err == nil {
			pool := x509.NewCertPool()
			if pool.AppendCertsFromPEM(pem) {
				hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tls.auto certificate in %s while etcd is down", dataDir)
		}
	}
	base := "https://" + cfg.Listen
	pollProbe(t, hc, base+"/healthz", "/healthz while etcd is down", 30*time.Second, func(p probe) bool { return p.code == http.StatusOK && p.Status == "ok" })
	p, _ := pollProbe(t, hc, base+"/readyz", "/readyz while etcd is down", 30*time.Second, func(p probe) bool { return strings.Contains(p.Reason, "last error") })
	t.Logf("/readyz while etcd is down: %d %s: %s", p.code, p.Status, p.Reason)
	if p.code != http.StatusServiceUnavailable || p.Status != "waiting for storage" || p.Since == "" ||
		!strings.Contains(p.Reason, "has not answered since") || !strings.Contains(p.Reason, c.Endpoint(0)) {
		t.Errorf("/readyz while etcd is down: %d %+v, want 503 waiting for storage, since when and the last error naming the endpoint", p.code, p)
	}
	for _, path := range []string{"/v1/sys/seal-status", "/v1/keys", "/metrics"} {
		if p := getProbe(hc, base+path); p.code != http.StatusServiceUnavailable || p.Error.Code != "storage_unavailable" || !strings.Contains(p.Error.Message, "waiting for its storage") {
			t.Errorf("GET %s while etcd is down: %d %+v, want 503 storage_unavailable", path, p.code, p)
		}
	}
	resp, err := hc.Post(base+"/v1/sys/init", "application/json", strings.NewReader(`{"shares":1,"threshold":1}`))
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("init while etcd is down: %v %v, want 503", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	select {
	case <-ready:
		t.Fatal("Run reported ready while etcd is down")
	case err := <-errc:
		t.Fatalf("Run returned while etcd is down: %v", err)
	default:
	}
	if _, err := os.Stat(filepath.Join(dataDir, "audit")); !os.IsNotExist(err) {
		t.Errorf("the audit trail was opened before the storage answered: %v", err)
	}
	if !strings.Contains(log.String(), "etcd does not answer") {
		t.Errorf("log while etcd is down does not say why:\n%s", log.String())
	}

	// etcd comes up on the endpoint: the same listener becomes the server.
	waited := time.Now()
	c.Restart(0)
	var ban server.Banner
	select {
	case ban = <-ready:
	case err := <-errc:
		t.Fatalf("server.Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server not ready 60s after etcd came back")
	}
	t.Logf("ready %s after etcd came back", time.Since(waited).Round(time.Millisecond))
	if ban.Addr != base {
		t.Errorf("banner address %q, want %q", ban.Addr, base)
	}
	anon, err := client.New(base, client.WithCACertFile(certFile))
	if err != nil {
		t.Fatal(err)
	}
	ini, err := anon.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatalf("init once etcd answers: %v", err)
	}
	if st, err := anon.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[0]}); err != nil || st.Sealed {
		t.Fatalf("unseal once etcd answers: %+v %v", st, err)
	}
	pollProbe(t, hc, base+"/readyz", "/readyz once unsealed", 10*time.Second, func(p probe) bool { return p.code == http.StatusOK && p.Status == "ready" })
	if _, err := os.Stat(filepath.Join(dataDir, "audit")); err != nil {
		t.Errorf("no audit trail once serving: %v", err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("server.Run after stop: %v", err)
	}

	// Stopped while still waiting: Run returns without error and its
	// listener is closed.
	c.Stop(0)
	ctx2, cancel2 := context.WithCancel(ctx)
	cfg.TLS.Auto = false
	go func() { errc <- server.Run(ctx2, cfg, slog.New(slog.DiscardHandler), nil) }()
	pollProbe(t, http.DefaultClient, "http://"+cfg.Listen+"/healthz", "/healthz of a second wait", 30*time.Second, func(p probe) bool { return p.code == http.StatusOK })
	cancel2()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run stopped while waiting for etcd: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if conn, err := net.Dial("tcp", cfg.Listen); err == nil {
		conn.Close()
		t.Error("the listener is still open after Run returned")
	}
}
