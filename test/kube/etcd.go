package kube

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is an etcd server with a temporary data directory.
type Etcd struct {
	// URL is the client URL (http://127.0.0.1:PORT).
	URL string
	t   testing.TB
	p   *proc
	cl  *clientv3.Client
}

// StartEtcd starts etcd on free loopback ports and waits until it answers
// /health. It is stopped at cleanup.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := EtcdBin(t)
	dir := tempDir(t)
	e := &Etcd{t: t}
	dumpOnFailure(t, "etcd", func() *proc { return e.p })
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		client, peer := hostPort(freePort(t)), hostPort(freePort(t))
		url := "http://" + client
		args := []string{
			"--name", "default",
			"--data-dir", fmt.Sprintf("%s/data%d", dir, attempt),
			"--listen-client-urls", url, "--advertise-client-urls", url,
			"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
			"--initial-cluster", "default=http://" + peer,
			"--log-level", "warn",
		}
		p, err := startProc(t, "etcd", bin, args, etcdEnv(), dir+"/etcd.log")
		if err != nil {
			t.Fatal(err)
		}
		e.p, e.URL = p, url
		lastErr = waitFor(Patience(), 50*time.Millisecond, func() error {
			if p.exited() {
				return permanent(fmt.Errorf("etcd exited: %v\n%s", p.err, p.out.tail(3000)))
			}
			resp, err := http.Get(url + "/health")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("etcd /health: %s", resp.Status)
			}
			return nil
		})
		if lastErr == nil {
			break
		}
		p.stop(5 * time.Second) // a port was taken meanwhile: try others
	}
	if lastErr != nil {
		t.Fatalf("etcd did not start: %v", lastErr)
	}
	t.Cleanup(e.Stop)
	return e
}

// etcdEnv sets ETCD_UNSUPPORTED_ARCH, which etcd 3.4 wants on
// architectures it does not officially support.
func etcdEnv() []string {
	if runtime.GOARCH == "amd64" {
		return nil
	}
	return []string{"ETCD_UNSUPPORTED_ARCH=" + runtime.GOARCH}
}

// Client returns a v3 client of this etcd, closed at cleanup.
func (e *Etcd) Client() *clientv3.Client {
	e.t.Helper()
	if e.cl != nil {
		return e.cl
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{e.URL}, DialTimeout: 5 * time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	e.cl = cl
	e.t.Cleanup(func() { cl.Close() })
	return cl
}

// Get returns the raw stored value of key, or nil when there is none.
func (e *Etcd) Get(t testing.TB, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.Client().Get(ctx, key)
	if err != nil {
		t.Fatalf("etcd get %s: %v", key, err)
	}
	if len(r.Kvs) == 0 {
		return nil
	}
	return r.Kvs[0].Value
}

// List returns the raw stored values of all keys under prefix.
func (e *Etcd) List(t testing.TB, prefix string) map[string][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := e.Client().Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("etcd get %s*: %v", prefix, err)
	}
	out := make(map[string][]byte, len(r.Kvs))
	for _, kv := range r.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out
}

// Stop stops etcd. It is idempotent.
func (e *Etcd) Stop() {
	if e.cl != nil {
		e.cl.Close()
		e.cl = nil
	}
	e.p.stop(10 * time.Second)
}
