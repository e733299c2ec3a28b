package kube

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferkms/coffer/test/proc"
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
	p         *proc.Proc
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
	if opts.Token == "" {
		opts.Token = c.Token
	}
	return startPlugin(t, []string{c.Addr}, c.CACertFile, opts)
}

// StartPluginReplicas starts the plugin with every replica's address (one
// --server flag each), so that it fails over between them.
func StartPluginReplicas(t testing.TB, r *Replicas, opts PluginOptions) *Plugin {
	t.Helper()
	if opts.Token == "" {
		opts.Token = r.Token
	}
	return startPlugin(t, r.Addrs, "", opts)
}

func startPlugin(t testing.TB, servers []string, caCert string, opts PluginOptions) *Plugin {
	t.Helper()
	if opts.Key == "" {
		opts.Key = "alias/k8s"
	}
	if opts.HealthInterval == 0 {
		opts.HealthInterval = time.Second
	}
	dir := tempDir(t) // short: the socket lives here
	p := &Plugin{t: t, dir: dir, Socket: filepath.Join(dir, "kms.sock")}
	dumpOnFailure(t, "kms-plugin", func() *proc.Proc { return p.p })
	health := proc.HostPort(proc.FreePort(t))
	p.HealthURL = "http://" + health
	p.args = []string{"kms-plugin", "--listen", "unix://" + p.Socket, "--key", opts.Key,
		"--health-addr", health, "--health-interval", opts.HealthInterval.String()}
	for _, s := range servers {
		p.args = append(p.args, "--server", s)
	}
	if opts.Role != "" {
		p.args = append(p.args, "--role", opts.Role, "--client-cert", opts.ClientCert, "--client-key", opts.ClientKey)
	} else {
		tf := filepath.Join(dir, "token")
		if err := os.WriteFile(tf, []byte(opts.Token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p.args = append(p.args, "--token-file", tf)
	}
	if caCert != "" {
		p.args = append(p.args, "--ca-cert", caCert)
	}
	p.start()
	t.Cleanup(p.Stop)
	return p
}

func (p *Plugin) start() {
	p.t.Helper()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		p.p, err = proc.Start("kms-plugin", CofferBin(p.t), p.args, nil, filepath.Join(p.dir, "plugin.log"))
		if err != nil {
			p.t.Fatal(err)
		}
		if _, err = p.p.WaitLine("Listening:", Patience()); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond) // health port not free again yet
	}
	p.t.Fatal(err)
}

// Stop stops the plugin (SIGTERM, graceful).
func (p *Plugin) Stop() { p.p.Stop(15 * time.Second) }

// Restart stops the plugin and starts it again on the same socket and
// health address.
func (p *Plugin) Restart() {
	p.t.Helper()
	p.Stop()
	p.start()
}

// Ready returns the plugin's /readyz answer: ok, and the key_id it reports.
func (p *Plugin) Ready() (ok bool, keyID string, err error) {
	r, err := p.Readyz()
	return r.OK, r.KeyID, err
}

// Readyz is the plugin's /readyz answer.
type Readyz struct {
	OK     bool
	KeyID  string `json:"key_id"`
	Server string `json:"server"` // the Coffer replica in use
	Class  string `json:"class"`
	Error  string `json:"error"`
}

// Readyz returns the plugin's /readyz answer.
func (p *Plugin) Readyz() (Readyz, error) {
	var r Readyz
	resp, err := http.Get(p.HealthURL + "/readyz")
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("/readyz: %s: %s", resp.Status, b)
	}
	r.OK = resp.StatusCode == http.StatusOK
	return r, nil
}

// WaitKeyID waits until the plugin is ready and reports a key_id for which
// accept returns true (nil accepts any), and returns it.
func (p *Plugin) WaitKeyID(timeout time.Duration, accept func(string) bool) string {
	p.t.Helper()
	var id string
	err := proc.WaitFor(timeout, 100*time.Millisecond, func() error {
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
