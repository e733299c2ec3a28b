// Package etcdtest runs a real etcd cluster inside a Go test: n members of
// go.etcd.io/etcd/server/v3/embed (the release of the client in go.mod) on
// loopback ports, each with its own data directory, so tests of the etcd
// backend, the watches and the job leadership talk to the real thing.
// Members can be stopped and started again to test faults.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
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
	var tlsFiles TLSFiles
	if o.ClientTLS {
		tlsFiles = makeTLS(t)
	}
	// A port that was free when it was picked can be taken by another
	// process before etcd binds it; a lost race is retried on new ports.
	for attempt := 1; ; attempt++ {
		c, err := tryStart(t, n, o, tlsFiles)
		if err == nil {
			t.Cleanup(c.Close)
			return c
		}
		if !lostBind(err) || attempt == bindAttempts {
			t.Fatalf("etcd: %v", err)
		}
		t.Logf("etcd: %v; retrying on other ports", err)
	}
}

// lostBind reports whether err is a listener that found its port taken
// (etcd does not always wrap the syscall error, so the text counts too).
func lostBind(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// bindAttempts bounds the retries of a cluster start that lost a port.
const bindAttempts = 5

// tryStart starts the members on fresh ports; on an error it stops what
// it started.
func tryStart(t testing.TB, n int, o Options, tlsFiles TLSFiles) (*Cluster, error) {
	c := &Cluster{t: t, tls: tlsFiles}
	clientScheme := "http"
	if o.ClientTLS {
		clientScheme = "https"
	}
	addrs, err := pickAddrs(2 * n)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := 0; i < n; i++ {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       t.TempDir(),
			clientURL: url.URL{Scheme: clientScheme, Host: addrs[2*i]},
			peerURL:   url.URL{Scheme: "http", Host: addrs[2*i+1]},
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
	// A member that lost its port is the cause even when another member
	// reports first (it then waits for a quorum that cannot form).
	for i, err := range errs {
		if err != nil && lostBind(err) {
			c.Close()
			return nil, fmt.Errorf("member %d: %w", i, err)
		}
	}
	for i, err := range errs {
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("member %d: %w", i, err)
		}
	}
	return c, nil
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

// pickAddrs chooses the members' addresses; a test replaces it to lose a
// bind race on purpose.
var pickAddrs = freeAddrs

// freeAddrs returns n distinct loopback addresses whose ports are free
// right now. Every listener stays open until all n are chosen, so the
// kernel cannot hand the same port out twice (a single member would then
// collide with another member of its own cluster).
func freeAddrs(n int) ([]string, error) {
	out := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out, nil
}
