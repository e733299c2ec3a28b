package kube

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/test/proc"
)

// Etcd is a one-member etcd (the etcd binary) with a temporary data
// directory.
type Etcd struct {
	// URL is the client URL (http://127.0.0.1:PORT).
	URL string
	t   testing.TB
	c   *proc.Etcd
	cl  *clientv3.Client
}

// StartEtcd starts etcd on free loopback ports and waits until it answers
// /health. It is stopped at cleanup.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	c := proc.StartEtcd(t, 1, proc.EtcdOptions{Patience: Patience()})
	e := &Etcd{t: t, c: c, URL: c.Endpoints()[0]}
	t.Cleanup(e.Stop)
	return e
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
	e.c.Stop(0)
}
