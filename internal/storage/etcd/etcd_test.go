package etcd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
	"github.com/cofferkms/coffer/internal/storage/storagetest"
)

var prefixes atomic.Int64

// uniquePrefix gives each backend of a test its own namespace on a shared
// cluster.
func uniquePrefix(t *testing.T) string {
	return fmt.Sprintf("/test-%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), prefixes.Add(1))
}

func open(t *testing.T, cfg etcd.Config) *etcd.Backend {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = uniquePrefix(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := etcd.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return b
}

func TestConformance(t *testing.T) {
	c := etcdtest.Start(t, 3)
	t.Run("Backend", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Backend {
			return open(t, etcd.Config{Endpoints: c.Endpoints()})
		})
	})
	t.Run("Watch", func(t *testing.T) {
		storagetest.RunWatch(t, func(t *testing.T) storage.Backend {
			return open(t, etcd.Config{Endpoints: c.Endpoints()})
		})
	})
}

// TestPrefixLayout: keys live at prefix + "/" + key, nothing else is
// written, values are stored as given, and two prefixes do not see each
// other's keys.
func TestPrefixLayout(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	a := open(t, etcd.Config{Endpoints: c.Endpoints(), Prefix: "/coffer-a/"})
	defer a.Close()
	bb := open(t, etcd.Config{Endpoints: c.Endpoints(), Prefix: "/coffer-a-b"})
	defer bb.Close()
	if a.Prefix() != "/coffer-a" {
		t.Errorf("Prefix() = %q, want the trailing slash dropped", a.Prefix())
	}
	if err := a.Apply(ctx, storage.Put("keys/1", []byte("ciphertext"))); err != nil {
		t.Fatal(err)
	}
	if err := bb.Apply(ctx, storage.Put("keys/2", []byte("other"))); err != nil {
		t.Fatal(err)
	}
	resp, err := a.Client().Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range resp.Kvs {
		got = append(got, string(kv.Key)+"="+string(kv.Value))
	}
	if want := "/coffer-a-b/keys/2=other /coffer-a/keys/1=ciphertext"; strings.Join(got, " ") != want {
		t.Errorf("etcd holds %q, want %q", got, want)
	}
	if keys, _ := a.List(ctx, ""); len(keys) != 1 || keys[0] != "keys/1" {
		t.Errorf("List of /coffer-a = %q, want only its own key", keys)
	}
	e, err := a.Get(ctx, "keys/1")
	if err != nil || e.Revision != resp.Kvs[1].ModRevision {
		t.Errorf("Get revision = %d (%v), want the mod revision %d", e.Revision, err, resp.Kvs[1].ModRevision)
	}

	// The default prefix.
	d, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Prefix() != etcd.DefaultPrefix {
		t.Errorf("default Prefix() = %q, want %q", d.Prefix(), etcd.DefaultPrefix)
	}
}

// TestListPages: more keys than one page, in order, at one revision.
func TestListPages(t *testing.T) {
	c := etcdtest.Start(t, 1)
	b := open(t, etcd.Config{Endpoints: c.Endpoints()})
	defer b.Close()
	ctx := context.Background()
	const n = 10_500
	for i := 0; i < n; i += 100 {
		var ops []storage.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, storage.Put(fmt.Sprintf("keys/%06d", j), []byte("v")))
		}
		if err := b.Apply(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Apply(ctx, storage.Put("keysz", nil), storage.Put("aliases/x", nil)); err != nil {
		t.Fatal(err)
	}
	keys, err := b.List(ctx, "keys/")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != n {
		t.Fatalf("List returned %d keys, want %d", len(keys), n)
	}
	for i, k := range keys {
		if want := fmt.Sprintf("keys/%06d", i); k != want {
			t.Fatalf("key %d = %q, want %q", i, k, want)
		}
	}
	all, err := b.List(ctx, "")
	if err != nil || len(all) != n+2 || all[0] != "aliases/x" || all[n+1] != "keysz" {
		t.Errorf("List(\"\") = %d keys (%v), first %q", len(all), err, all[:1])
	}
}

// TestLimits: a batch beyond etcd's operation or size limits is refused
// before it is sent, with an error that names the limit; one at the limit
// works.
func TestLimits(t *testing.T) {
	c := etcdtest.Start(t, 1)
	b := open(t, etcd.Config{Endpoints: c.Endpoints()})
	defer b.Close()
	ctx := context.Background()
	batch := func(n int, value []byte) []storage.Op {
		var ops []storage.Op
		for i := range n {
			ops = append(ops, storage.Put(fmt.Sprintf("k/%d", i), value))
		}
		return ops
	}
	if err := b.Apply(ctx, batch(etcd.DefaultMaxTxnOps, nil)...); err != nil {
		t.Errorf("a batch of %d puts: %v", etcd.DefaultMaxTxnOps, err)
	}
	wantLimit := func(what string, err error, mention string) {
		t.Helper()
		if err == nil || errors.Is(err, storage.ErrConflict) || errors.Is(err, etcd.ErrUnavailable) || !strings.Contains(err.Error(), mention) {
			t.Errorf("%s: %v, want an error naming %s", what, err, mention)
		}
	}
	wantLimit("129 puts", b.Apply(ctx, batch(etcd.DefaultMaxTxnOps+1, nil)...), "--max-txn-ops")
	// 129 conditions guarding one write.
	var checks []storage.Op
	for i := range etcd.DefaultMaxTxnOps + 1 {
		checks = append(checks, storage.Op{Kind: storage.OpCheck, Key: fmt.Sprintf("c/%d", i), IfRevision: 0})
	}
	wantLimit("129 checks", b.Apply(ctx, append(checks, storage.Put("x", nil))...), "--max-txn-ops")

	big := bytes.Repeat([]byte("x"), 700<<10)
	if err := b.Apply(ctx, batch(2, big)...); err != nil {
		t.Errorf("a batch of 1.4 MiB: %v", err)
	}
	wantLimit("a batch of 2.1 MiB", b.Apply(ctx, batch(3, big)...), "--max-request-bytes")
	wantLimit("one value of 1.6 MiB", b.Apply(ctx, storage.Put("big", bytes.Repeat([]byte("x"), 1600<<10))), "--max-request-bytes")
	wantLimit("a key written twice", b.Apply(ctx, storage.Put("k/1", nil), storage.Delete("k/1")), "twice")
	// A refused batch wrote nothing.
	if _, err := b.Get(ctx, "big"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get of a refused put: %v, want ErrNotFound", err)
	}
	// A check and a write of the same key are fine.
	e, _ := b.Get(ctx, "k/1")
	if err := b.Apply(ctx, storage.Op{Kind: storage.OpCheck, Key: "k/1", IfRevision: e.Revision},
		storage.Op{Kind: storage.OpPut, Key: "k/1", Value: []byte("v"), IfRevision: e.Revision}); err != nil {
		t.Errorf("check and put of one key: %v", err)
	}
}

// TestOpenErrors: configuration mistakes say what to fix.
func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		cfg  etcd.Config
		want string
	}{
		{"no endpoints", etcd.Config{}, "no endpoints"},
		{"bad endpoint", etcd.Config{Endpoints: []string{"10.0.0.1:2379"}}, "want a URL"},
		{"root prefix", etcd.Config{Endpoints: []string{"http://127.0.0.1:1"}, Prefix: "/"}, "whole keyspace"},
		{"http with tls", etcd.Config{Endpoints: []string{"http://127.0.0.1:1"}, TLS: etcd.TLSConfig{CAFile: "/nonexistent"}}, "ca_file"},
		{"cert without key", etcd.Config{Endpoints: []string{"https://127.0.0.1:1"}, TLS: etcd.TLSConfig{CertFile: "c.pem"}}, "go together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := etcd.Open(ctx, tc.cfg)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || errors.Is(err, etcd.ErrUnavailable) {
				t.Errorf("Open: %v, want a configuration error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestUnavailable: with the cluster's quorum gone, requests fail within
// the request timeout with an error matching ErrUnavailable, and work again
// once a quorum is back, without reopening the backend.
func TestUnavailable(t *testing.T) {
	c := etcdtest.Start(t, 3)
	const timeout = time.Second
	b := open(t, etcd.Config{Endpoints: c.Endpoints(), RequestTimeout: timeout})
	defer b.Close()
	ctx := context.Background()
	if err := b.Apply(ctx, storage.Put("k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
	c.Stop(1)
	c.Stop(2)
	for _, step := range []struct {
		name string
		fn   func() error
	}{
		{"Apply", func() error { return b.Apply(ctx, storage.Put("k", []byte("w"))) }},
		{"Get", func() error { _, err := b.Get(ctx, "k"); return err }},
		{"List", func() error { _, err := b.List(ctx, ""); return err }},
		{"Revision", func() error { _, err := b.Revision(ctx); return err }},
	} {
		start := time.Now()
		err := step.fn()
		took := time.Since(start)
		t.Logf("%s without quorum: %v after %v", step.name, err, took.Round(time.Millisecond))
		if !errors.Is(err, etcd.ErrUnavailable) {
			t.Errorf("%s without quorum: %v, want ErrUnavailable", step.name, err)
		}
		if took > timeout+5*time.Second {
			t.Errorf("%s without quorum took %v, want about the request timeout %v", step.name, took, timeout)
		}
	}
	// The caller's own deadline is reported as such, not as the cluster's.
	short, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	if err := b.Apply(short, storage.Put("k", []byte("w"))); !errors.Is(err, context.Canceled) || errors.Is(err, etcd.ErrUnavailable) {
		t.Errorf("Apply cancelled by the caller: %v, want context.Canceled", err)
	}

	c.Restart(1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := b.Apply(ctx, storage.Put("k", []byte("back")))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Apply after the quorum came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if e, err := b.Get(ctx, "k"); err != nil || string(e.Value) != "back" {
		t.Errorf("Get after recovery = %q, %v", e.Value, err)
	}
}

// TestOpenUnreachable: Open against endpoints where nothing listens fails
// with ErrUnavailable within the timeouts.
func TestOpenUnreachable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ep := c.Endpoint(0)
	c.Stop(0)
	start := time.Now()
	b, err := etcd.Open(context.Background(), etcd.Config{Endpoints: []string{ep}, DialTimeout: time.Second, RequestTimeout: time.Second})
	if err == nil {
		b.Close()
		t.Fatal("Open of a stopped cluster succeeded")
	}
	t.Logf("Open: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if !errors.Is(err, etcd.ErrUnavailable) {
		t.Errorf("Open of a stopped cluster: %v, want ErrUnavailable", err)
	}
}

// TestTLS: over TLS with client-certificate authentication, the backend
// works with the configured CA and client certificate, and is refused
// without a certificate, with one from another CA, or without the CA.
func TestTLS(t *testing.T) {
	c := etcdtest.StartWith(t, 1, etcdtest.Options{ClientTLS: true})
	files := c.TLS()
	ctx := context.Background()
	good := etcd.TLSConfig{CAFile: files.CAFile, CertFile: files.ClientCertFile, KeyFile: files.ClientKeyFile}
	b := open(t, etcd.Config{Endpoints: c.Endpoints(), TLS: good})
	if err := b.Apply(ctx, storage.Put("k", []byte("v"))); err != nil {
		t.Fatalf("Apply over TLS: %v", err)
	}
	if e, err := b.Get(ctx, "k"); err != nil || string(e.Value) != "v" {
		t.Fatalf("Get over TLS: %q %v", e.Value, err)
	}
	b.Close()

	for _, tc := range []struct {
		name string
		tls  etcd.TLSConfig
		why  string // in the error
	}{
		{"no client certificate", etcd.TLSConfig{CAFile: files.CAFile}, "certificate required"},
		{"client certificate of another CA", etcd.TLSConfig{CAFile: files.CAFile, CertFile: files.OtherClientCertFile, KeyFile: files.OtherClientKeyFile}, "certificate"}, // Go offers no certificate the server's CA list does not name
		{"server not verified (system roots)", etcd.TLSConfig{CertFile: files.ClientCertFile, KeyFile: files.ClientKeyFile}, "unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints(), TLS: tc.tls, DialTimeout: time.Second, RequestTimeout: time.Second})
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("Open: %v", err)
			if !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), "storage.etcd.tls") {
				t.Errorf("Open: %v, want the reason (%s) and the setting to check", err, tc.why)
			}
		})
	}
	// An http endpoint with TLS configured is a configuration mistake.
	_, err := etcd.Open(ctx, etcd.Config{Endpoints: []string{strings.Replace(c.Endpoint(0), "https:", "http:", 1)}, TLS: good})
	if err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Errorf("http endpoint with tls: %v, want an error naming plain http", err)
	}
}
