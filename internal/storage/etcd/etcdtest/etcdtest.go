// Package etcdtest runs a real etcd cluster inside a Go test: n members of
// go.etcd.io/etcd/server/v3/embed (the release of the client in go.mod) on
// loopback ports, each with its own data directory, so tests of the etcd
// backend, the watches and the job leadership talk to the real thing.
// Members can be stopped and started again to test faults.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Cluster is a running embedded etcd cluster.
type Cluster struct {
	t       testing.TB
	members []*member
	mu      sync.Mutex
	tls     TLSFiles
}

type member struct {
	name       string
	dir        string
	clientURL  url.URL
	peerURL    url.URL
	etcd       *embed.Etcd
	configured *embed.Config
}

// Options tune a cluster; the zero value is a sensible default.
type Options struct {
	// ProgressNotify is the server's periodic watch progress interval
	// (0 leaves etcd's default of 10 minutes).
	ProgressNotify time.Duration
	// ClientTLS serves clients over TLS and requires a client certificate
	// signed by the cluster's CA (etcd --client-cert-auth); Cluster.TLS
	// has the files. Endpoints are then https URLs.
	ClientTLS bool
}

// Start starts an n-member cluster and stops it when the test ends.
func Start(t testing.TB, n int) *Cluster { return StartWith(t, n, Options{}) }

// StartWith starts an n-member cluster with options.
func StartWith(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	clientScheme := "http"
	if o.ClientTLS {
		c.tls = makeTLS(t)
		clientScheme = "https"
	}
	var initial []string
	for i := 0; i < n; i++ {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       t.TempDir(),
			clientURL: url.URL{Scheme: clientScheme, Host: freeAddr(t)},
			peerURL:   url.URL{Scheme: "http", Host: freeAddr(t)},
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL.String())
	}
	for _, m := range c.members {
		cfg := embed.NewConfig()
		cfg.Name = m.name
		cfg.Dir = m.dir
		cfg.ListenClientUrls = []url.URL{m.clientURL}
		cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
		cfg.ListenPeerUrls = []url.URL{m.peerURL}
		cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "coffer-test"
		cfg.LogLevel = "error"
		cfg.LogOutputs = []string{"stderr"}
		cfg.WatchProgressNotifyInterval = o.ProgressNotify
		if o.ClientTLS {
			cfg.ClientTLSInfo.CertFile = c.tls.serverCert
			cfg.ClientTLSInfo.KeyFile = c.tls.serverKey
			cfg.ClientTLSInfo.TrustedCAFile = c.tls.CAFile
			cfg.ClientTLSInfo.ClientCertAuth = true
		}
		m.configured = cfg
	}
	// Members of a new cluster wait for each other: start them together.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.members {
		wg.Add(1)
		go func(i int, m *member) {
			defer wg.Done()
			errs[i] = m.start()
		}(i, m)
	}
	wg.Wait()
	t.Cleanup(c.Close)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("etcd member %d: %v", i, err)
		}
	}
	return c
}

func (m *member) start() error {
	e, err := embed.StartEtcd(m.configured)
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return err
	case <-time.After(60 * time.Second):
		e.Close()
		return fmt.Errorf("not ready after 60s")
	}
	m.etcd = e
	return nil
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientURL.String()
	}
	return out
}

// Endpoint returns member i's client URL.
func (c *Cluster) Endpoint(i int) string { return c.members[i].clientURL.String() }

// Stop stops member i (the others keep quorum if there are at least three).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
}

// Restart starts a stopped member i again on the same ports and data.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.etcd != nil {
		return
	}
	m.configured.ClusterState = embed.ClusterStateFlagExisting
	if err := m.start(); err != nil {
		c.t.Fatalf("restarting etcd member %d: %v", i, err)
	}
}

// Close stops every member.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Stop(i)
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
