package kube

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
)

// Coffer is a Coffer dev server (`coffer server --dev`) with its store in a
// temporary directory, so it keeps its keys across Stop and Restart.
type Coffer struct {
	// Addr is the API's base URL, from the "Address:" line.
	Addr string
	// Token is the root token.
	Token string
	// CACertFile is the server's self-signed certificate when it serves
	// TLS (StartCofferMTLS); empty for cleartext.
	CACertFile string
	t          testing.TB
	dir        string
	p          *proc.Proc
	extra      []string // more server flags
}

// StartCoffer starts a Coffer dev server on a free loopback port.
func StartCoffer(t testing.TB) *Coffer {
	t.Helper()
	c := &Coffer{t: t, dir: tempDir(t), Token: "kube-root-token"}
	dumpOnFailure(t, "coffer server", func() *proc.Proc { return c.p })
	c.start("127.0.0.1:0")
	t.Cleanup(c.Stop)
	return c
}

func (c *Coffer) start(listen string) {
	c.t.Helper()
	bin := CofferBin(c.t)
	args := append([]string{"server", "--dev", "--dev-dir", filepath.Join(c.dir, "store"), "--dev-root-token", c.Token, "--listen", listen}, c.extra...)
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		c.p, err = proc.Start("coffer server", bin, args, nil, filepath.Join(c.dir, "server.log"))
		if err != nil {
			c.t.Fatal(err)
		}
		var addr string
		if addr, err = c.p.WaitLine("Address:", Patience()); err == nil {
			c.Addr = addr
			return
		}
		// On a restart the old port may not be free again yet.
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Fatal(err)
}

// Client returns an API client with the root token.
func (c *Coffer) Client() *client.Client {
	c.t.Helper()
	cl, err := client.New(c.Addr, client.WithToken(c.Token), client.WithCACertFile(c.CACertFile))
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// StartCofferMTLS starts a dev server over TLS (a self-signed certificate,
// in CACertFile) that asks clients for a certificate signed by the CA in
// clientCAFile, for certificate login.
func StartCofferMTLS(t testing.TB, clientCAFile string) *Coffer {
	t.Helper()
	c := &Coffer{t: t, dir: tempDir(t), Token: "kube-root-token"}
	cfg := filepath.Join(c.dir, "coffer.yaml")
	if err := os.WriteFile(cfg, []byte("tls:\n  auto: true\n  client_ca_file: "+clientCAFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.extra = []string{"--config", cfg}
	c.CACertFile = filepath.Join(c.dir, "store", "tls-auto-cert.pem")
	dumpOnFailure(t, "coffer server", func() *proc.Proc { return c.p })
	c.start("127.0.0.1:0")
	t.Cleanup(c.Stop)
	return c
}

// CreateKey creates a key with the alias ("alias/k8s") and returns the
// key's id.
func (c *Coffer) CreateKey(alias string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := c.Client().CreateKey(ctx, client.CreateKeyRequest{Alias: alias, Description: "kube test key"})
	if err != nil {
		c.t.Fatalf("creating key %s: %v", alias, err)
	}
	return k.ID
}

// RotateKey rotates key (an id or alias) and returns its new version.
func (c *Coffer) RotateKey(key string) uint32 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := c.Client().RotateKey(ctx, key)
	if err != nil {
		c.t.Fatalf("rotating %s: %v", key, err)
	}
	return k.PrimaryVersion
}

// TokenFile writes token to a new file and returns its path.
func (c *Coffer) TokenFile(token string) string {
	c.t.Helper()
	p := filepath.Join(tempDir(c.t), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// Stop stops the server; its store is kept for Restart.
func (c *Coffer) Stop() { c.p.Stop(10 * time.Second) }

// Restart stops the server if it runs and starts it again on the same
// address with the same store.
func (c *Coffer) Restart() {
	c.t.Helper()
	c.Stop()
	u, err := url.Parse(c.Addr)
	if err != nil {
		c.t.Fatal(fmt.Errorf("coffer address %q: %w", c.Addr, err))
	}
	c.start(u.Host)
}
