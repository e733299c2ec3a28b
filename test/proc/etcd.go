package proc

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// EtcdOptions shape StartEtcd.
type EtcdOptions struct {
	// Patience bounds the wait for the cluster to become healthy
	// (default Patience(time.Minute)).
	Patience time.Duration
	// ArtifactDir, when set, is where the members' whole log files are
	// copied if the test fails (their tails are logged either way).
	ArtifactDir func() string
}

// Etcd is an n-member etcd cluster of real etcd processes on free loopback
// ports, each member with a data directory under the test's temp dir.
type Etcd struct {
	t       testing.TB
	bin     string
	dir     string
	members []*etcdMember
}

type etcdMember struct {
	name      string
	clientURL string
	args      []string
	logPath   string
	p         *Proc
}

// StartEtcd starts n etcd members and waits until every one reports
// healthy (retrying on other ports if one was taken meanwhile). They are
// killed at cleanup.
func StartEtcd(t testing.TB, n int, opts EtcdOptions) *Etcd {
	t.Helper()
	if opts.Patience <= 0 {
		opts.Patience = Patience(time.Minute)
	}
	c := &Etcd{t: t, bin: EtcdBin(t), dir: t.TempDir()}
	t.Cleanup(c.killAll)
	DumpLogsOnFailure(t, opts.ArtifactDir, c.logPaths)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c.killAll()
		c.members = nil
		peers := make([]string, n)
		clients := make([]string, n)
		var initial []string
		for i := range n {
			peers[i] = "http://" + HostPort(FreePort(t))
			clients[i] = "http://" + HostPort(FreePort(t))
			initial = append(initial, fmt.Sprintf("m%d=%s", i, peers[i]))
		}
		for i := range n {
			name := fmt.Sprintf("m%d", i)
			m := &etcdMember{
				name:      name,
				clientURL: clients[i],
				logPath:   filepath.Join(c.dir, fmt.Sprintf("etcd-%s-%d.log", name, attempt)),
				args: []string{
					"--name", name,
					"--data-dir", filepath.Join(c.dir, fmt.Sprintf("data-%s-%d", name, attempt)),
					"--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
					"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
					"--initial-cluster", strings.Join(initial, ","),
					"--initial-cluster-state", "new",
					"--initial-cluster-token", fmt.Sprintf("coffer-test-%d-%d", os.Getpid(), attempt),
					"--heartbeat-interval", "100", "--election-timeout", "1000",
					"--log-level", "warn", "--logger", "zap",
				},
			}
			c.members = append(c.members, m)
			if err := c.Start(i); err != nil {
				t.Fatal(err)
			}
		}
		lastErr = c.WaitHealthy(opts.Patience)
		if lastErr == nil {
			return c
		}
	}
	t.Fatalf("etcd cluster did not start: %v", lastErr)
	return nil
}

// etcdEnv sets ETCD_UNSUPPORTED_ARCH, which etcd 3.4 wants on
// architectures it does not officially support.
func etcdEnv() []string {
	if runtime.GOARCH == "amd64" {
		return nil
	}
	return []string{"ETCD_UNSUPPORTED_ARCH=" + runtime.GOARCH}
}

// Bin is the etcd binary the members run.
func (c *Etcd) Bin() string { return c.bin }

// Len is the number of members.
func (c *Etcd) Len() int { return len(c.members) }

// Endpoints are the members' client URLs (http://127.0.0.1:PORT).
func (c *Etcd) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// Start (re)starts member i with its data directory.
func (c *Etcd) Start(i int) error {
	m := c.members[i]
	if m.p != nil && !m.p.Exited() {
		return fmt.Errorf("etcd %s is running", m.name)
	}
	p, err := Start("etcd "+m.name, c.bin, m.args, etcdEnv(), m.logPath)
	if err != nil {
		return err
	}
	m.p = p
	return nil
}

// Stop stops member i with SIGTERM (SIGKILL after 10 s). Stopping a
// stopped member does nothing.
func (c *Etcd) Stop(i int) { c.members[i].p.Stop(10 * time.Second) }

func (c *Etcd) killAll() {
	for _, m := range c.members {
		m.p.Kill()
	}
}

func (c *Etcd) logPaths() []string {
	var ls []string
	for _, m := range c.members {
		ls = append(ls, m.logPath)
	}
	return ls
}

// WaitHealthy waits until every running member answers /health with
// "true" (it has a leader and can serve).
func (c *Etcd) WaitHealthy(timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, m := range c.members {
		if m.p == nil || m.p.Exited() {
			continue
		}
		err := WaitFor(timeout, 100*time.Millisecond, func() error {
			if m.p.Exited() {
				return Permanent(fmt.Errorf("etcd %s exited: %v\n%s", m.name, m.p.Err(), m.p.Tail(3000)))
			}
			resp, err := hc.Get(m.clientURL + "/health")
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"true"`) {
				return fmt.Errorf("etcd %s /health: %s %s", m.name, resp.Status, b)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
