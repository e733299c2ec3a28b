package kube

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// Plugin is `coffer kms-plugin` on a unix socket, with its health endpoints
// on a loopback port.
type Plugin struct {
	// Socket is the unix socket path (for the EncryptionConfiguration's
	// endpoint unix://Socket).
	Socket string
	// HealthURL is the base URL of /livez, /readyz and /metrics.
	HealthURL string
	t         testing.TB
	args      []string
	dir       string
	p         *proc
}

// PluginOptions configure StartPlugin.
type PluginOptions struct {
	// Key is the Coffer key id or alias; default "alias/k8s".
	Key string
	// Token is the credential written to the plugin's token file; default
	// the server's root token.
	Token string
	// HealthInterval is --health-interval; default 1s.
	HealthInterval time.Duration
	// Role, ClientCert and ClientKey, when set, make the plugin log in to
	// the role with its client certificate instead of reading a token file.
	Role, ClientCert, ClientKey string
}

// StartPlugin starts the plugin against c and waits for its "Listening:"
// line.
func StartPlugin(t testing.TB, c *Coffer, opts PluginOptions) *Plugin {
	t.Helper()
	if opts.Key == "" {
		opts.Key = "alias/k8s"
	}
	if opts.Token == "" {
		opts.Token = c.Token
	}
	if opts.HealthInterval == 0 {
		opts.HealthInterval = time.Second
	}
	dir := tempDir(t) // short: the socket lives here
	p := &Plugin{t: t, dir: dir, Socket: filepath.Join(dir, "kms.sock")}
	dumpOnFailure(t, "kms-plugin", func() *proc { return p.p })
	health := hostPort(freePort(t))
	p.HealthURL = "http://" + health
	p.args = []string{"kms-plugin", "--listen", "unix://" + p.Socket, "--server", c.Addr, "--key", opts.Key,
		"--health-addr", health, "--health-interval", opts.HealthInterval.String()}
	if opts.Role != "" {
		p.args = append(p.args, "--role", opts.Role, "--client-cert", opts.ClientCert, "--client-key", opts.ClientKey)
	} else {
		p.args = append(p.args, "--token-file", c.TokenFile(opts.Token))
	}
	if c.CACertFile != "" {
		p.args = append(p.args, "--ca-cert", c.CACertFile)
	}
	p.start()
	t.Cleanup(p.Stop)
	return p
}

func (p *Plugin) start() {
	p.t.Helper()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		p.p, err = startProc(p.t, "kms-plugin", CofferBin(p.t), p.args, nil, filepath.Join(p.dir, "plugin.log"))
		if err != nil {
			p.t.Fatal(err)
		}
		if _, err = p.p.waitLine("Listening:", Patience()); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond) // health port not free again yet
	}
	p.t.Fatal(err)
}

// Stop stops the plugin (SIGTERM, graceful).
func (p *Plugin) Stop() { p.p.stop(15 * time.Second) }

// Restart stops the plugin and starts it again on the same socket and
// health address.
func (p *Plugin) Restart() {
	p.t.Helper()
	p.Stop()
	p.start()
}

// Ready returns the plugin's /readyz answer: ok, and the key_id it reports.
func (p *Plugin) Ready() (ok bool, keyID string, err error) {
	resp, err := http.Get(p.HealthURL + "/readyz")
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		KeyID string `json:"key_id"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return false, "", fmt.Errorf("/readyz: %s: %s", resp.Status, b)
	}
	return resp.StatusCode == http.StatusOK, r.KeyID, nil
}

// WaitKeyID waits until the plugin is ready and reports a key_id for which
// accept returns true (nil accepts any), and returns it.
func (p *Plugin) WaitKeyID(timeout time.Duration, accept func(string) bool) string {
	p.t.Helper()
	var id string
	err := waitFor(timeout, 100*time.Millisecond, func() error {
		ok, k, err := p.Ready()
		if err != nil {
			return err
		}
		if !ok || k == "" || (accept != nil && !accept(k)) {
			return fmt.Errorf("plugin ready=%v key_id=%q", ok, k)
		}
		id = k
		return nil
	})
	if err != nil {
		p.t.Fatalf("waiting for the plugin's key_id: %v", err)
	}
	return id
}
