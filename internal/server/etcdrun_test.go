package server_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// etcdServer is a running server.Run on etcd.
type etcdServer struct {
	ban  server.Banner
	stop func() error
}

// startEtcdServer starts server.Run with cfg and waits for it to listen.
func startEtcdServer(t *testing.T, cfg server.Config, log *slog.Logger) etcdServer {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Banner, 1)
	errc := make(chan error, 1)
	go func() { errc <- server.Run(ctx, cfg, log, func(b server.Banner) { ready <- b }) }()
	stop := func() error { cancel(); return <-errc }
	select {
	case b := <-ready:
		return etcdServer{ban: b, stop: stop}
	case err := <-errc:
		cancel()
		t.Fatalf("server.Run: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("server not listening after 60s")
	}
	return etcdServer{}
}

// startUnsealedReplicas runs n replicas over the etcd at endpoints under
// prefix (freshness bound 1s, audit off), initializes the store with one
// share and unseals every replica with it. The replicas stop when the test
// ends.
func startUnsealedReplicas(t *testing.T, endpoints []string, prefix string, n int, log *slog.Logger) ([]etcdServer, client.InitResponse) {
	t.Helper()
	var servers []etcdServer
	for range n {
		cfg := etcdConfig(endpoints, prefix, t.TempDir())
		cfg.HA.FreshnessBound = "1s"
		cfg.Audit.Disabled = true
		s := startEtcdServer(t, cfg, log)
		t.Cleanup(func() {
			if err := s.stop(); err != nil {
				t.Errorf("stopping a replica: %v", err)
			}
		})
		servers = append(servers, s)
	}
	ctx := context.Background()
	anon, _ := client.New(servers[0].ban.Addr)
	ini, err := anon.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		a, _ := client.New(s.ban.Addr)
		if _, err := a.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[0]}); err != nil {
			t.Fatal(err)
		}
	}
	return servers, *ini
}

func etcdConfig(endpoints []string, prefix, dataDir string) server.Config {
	var cfg server.Config
	cfg.Storage.Etcd = &server.EtcdConfig{Endpoints: endpoints, Prefix: prefix, DialTimeout: "2s", RequestTimeout: "2s"}
	cfg.DataDir = dataDir
	cfg.RotationCheckInterval = "1h"
	return cfg
}

// TestRunOnEtcd drives the real server.Run on a 3-member etcd cluster: init
// and unseal over HTTP, create a key, encrypt; stop; a second server on the
// same prefix (another replica's data_dir) unseals and decrypts. etcd holds
// only barrier-encrypted values under the prefix, and local files go to
// data_dir. Without a quorum a storage request answers 503.
func TestRunOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := context.Background()
	const prefix = "/coffer-run"
	dir1 := t.TempDir()
	first := startEtcdServer(t, etcdConfig(c.Endpoints(), prefix, dir1), slog.New(slog.DiscardHandler))
	if !strings.Contains(first.ban.StoragePath, "etcd") || !strings.Contains(first.ban.StoragePath, prefix) {
		t.Errorf("banner storage %q, want the etcd endpoints and prefix", first.ban.StoragePath)
	}
	if want := filepath.Join(dir1, "audit"); first.ban.AuditDir != want {
		t.Errorf("audit dir %q, want %q (in data_dir)", first.ban.AuditDir, want)
	}
	anon, err := client.New(first.ban.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ini, err := anon.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	if _, err := anon.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[0]}); err != nil {
		t.Fatalf("unseal: %v", err)
	}
	root, _ := client.New(first.ban.Addr, client.WithToken(ini.RootToken))
	if _, err := root.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/etcd"}); err != nil {
		t.Fatalf("create key: %v", err)
	}
	secret := []byte("plaintext that must never reach etcd")
	enc, err := root.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/etcd", Plaintext: secret})
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	if err := first.stop(); err != nil {
		t.Fatalf("first server: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir1, "audit")); err != nil {
		t.Errorf("audit trail not in data_dir: %v", err)
	}

	// What etcd holds: keys under the prefix only, no plaintext, no
	// unseal share, no root token.
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	all, err := cli.Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Kvs) == 0 {
		t.Fatal("nothing stored in etcd")
	}
	for _, kv := range all.Kvs {
		if !strings.HasPrefix(string(kv.Key), prefix+"/") {
			t.Errorf("etcd key %q outside the prefix %s/", kv.Key, prefix)
		}
		for what, s := range map[string][]byte{"plaintext": secret, "share": []byte(ini.Shares[0]), "root token": []byte(ini.RootToken)} {
			if bytes.Contains(kv.Value, s) || bytes.Contains(kv.Key, s) {
				t.Errorf("etcd key %q holds the %s", kv.Key, what)
			}
		}
	}
	t.Logf("%d etcd keys under %s", len(all.Kvs), prefix)

	// A second replica: its own data_dir, the same prefix.
	second := startEtcdServer(t, etcdConfig(c.Endpoints(), prefix, t.TempDir()), slog.New(slog.DiscardHandler))
	defer func() {
		if err := second.stop(); err != nil {
			t.Errorf("second server: %v", err)
		}
	}()
	anon2, _ := client.New(second.ban.Addr)
	st, err := anon2.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[0]})
	if err != nil || st.Sealed {
		t.Fatalf("unseal of the second server: %+v, %v", st, err)
	}
	root2, _ := client.New(second.ban.Addr, client.WithToken(ini.RootToken))
	dec, err := root2.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext})
	if err != nil || !bytes.Equal(dec.Plaintext, secret) {
		t.Fatalf("decrypt on the second server: %+v, %v", dec, err)
	}

	// No quorum: a storage request answers 503 with a code that says so
	// (storage_unavailable, or replica_stale once this replica's watch
	// can no longer prove its caches fresh), then works again.
	c.Stop(1)
	c.Stop(2)
	_, err = root2.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/no-quorum"})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable ||
		(apiErr.Code != "storage_unavailable" && apiErr.Code != "replica_stale") {
		t.Errorf("create key without quorum: %v, want 503 storage_unavailable", err)
	} else {
		t.Logf("without quorum: %v", err)
	}
	c.Restart(1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := root2.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/after-quorum"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create key after the quorum came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStorageConfigErrors: the storage section names exactly one backend,
// and etcd needs a data_dir.
func TestStorageConfigErrors(t *testing.T) {
	eps := []string{"http://127.0.0.1:1"}
	tests := []struct {
		name string
		cfg  func() server.Config
		want string
	}{
		{"both", func() server.Config {
			cfg := etcdConfig(eps, "", t.TempDir())
			cfg.Storage.Path = filepath.Join(t.TempDir(), "coffer.db")
			return cfg
		}, "both set"},
		{"neither", func() server.Config { return server.Config{} }, "no storage"},
		{"etcd without data_dir", func() server.Config { return etcdConfig(eps, "", "") }, "data_dir is required"},
		{"dev with etcd", func() server.Config {
			cfg := etcdConfig(eps, "", t.TempDir())
			cfg.Dev, cfg.DevDir = true, t.TempDir()
			return cfg
		}, "--dev"},
		{"bad duration", func() server.Config {
			cfg := etcdConfig(eps, "", t.TempDir())
			cfg.Storage.Etcd.DialTimeout = "5"
			return cfg
		}, "dial_timeout"},
		{"bad endpoint", func() server.Config { return etcdConfig([]string{"127.0.0.1:2379"}, "", t.TempDir()) }, "want a URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg()
			cfg.Listen = "127.0.0.1:0"
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := server.Run(ctx, cfg, slog.New(slog.DiscardHandler), func(server.Banner) { t.Error("server started") })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestLoadEtcdConfig: the agreed YAML shape parses.
func TestLoadEtcdConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer.yaml")
	yaml := `
storage:
  etcd:
    endpoints: [https://10.0.0.1:2379, https://10.0.0.2:2379]
    prefix: /coffer
    tls: {ca_file: /etc/coffer/etcd-ca.pem, cert_file: /etc/coffer/etcd.pem, key_file: /etc/coffer/etcd-key.pem}
    dial_timeout: 5s
data_dir: /var/lib/coffer
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := server.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Storage.Etcd
	if e == nil || len(e.Endpoints) != 2 || e.Prefix != "/coffer" || e.TLS.CAFile != "/etc/coffer/etcd-ca.pem" ||
		e.TLS.CertFile != "/etc/coffer/etcd.pem" || e.TLS.KeyFile != "/etc/coffer/etcd-key.pem" || e.DialTimeout != "5s" || cfg.DataDir != "/var/lib/coffer" {
		t.Errorf("parsed %+v, data_dir %q", e, cfg.DataDir)
	}
}
