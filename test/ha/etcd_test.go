package ha

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// etcdCluster is an n-member etcd cluster of real etcd processes on
// loopback, each with a data directory under the test's temp dir.
type etcdCluster struct {
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
	p         *proc
}

// etcdBin finds the etcd binary: $ETCD_BIN, /usr/bin/etcd or $PATH.
func etcdBin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("ETCD_BIN"); b != "" {
		return b
	}
	if b, err := exec.LookPath("etcd"); err == nil {
		return b
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd"
	}
	t.Fatal("no etcd binary: install it (apt-get install etcd-server) or set ETCD_BIN")
	return ""
}

// etcdEnv sets ETCD_UNSUPPORTED_ARCH, which etcd 3.4 wants on
// architectures it does not officially support.
func etcdEnv() []string {
	if runtime.GOARCH == "amd64" {
		return nil
	}
	return []string{"ETCD_UNSUPPORTED_ARCH=" + runtime.GOARCH}
}

// startEtcdCluster starts n etcd members on free loopback ports and waits
// until every one reports healthy. They are killed at cleanup.
func startEtcdCluster(t testing.TB, n int) *etcdCluster {
	t.Helper()
	c := &etcdCluster{t: t, bin: etcdBin(t), dir: t.TempDir()}
	t.Cleanup(c.killAll)
	dumpLogsOnFailure(t, func() []string {
		var ls []string
		for _, m := range c.members {
			ls = append(ls, m.logPath)
		}
		return ls
	})
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c.killAll()
		c.members = nil
		peers := make([]string, n)
		clients := make([]string, n)
		var initial []string
		for i := range n {
			peers[i] = "http://" + hostPort(freePort(t))
			clients[i] = "http://" + hostPort(freePort(t))
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
					"--initial-cluster-token", fmt.Sprintf("coffer-ha-%d-%d", os.Getpid(), attempt),
					"--heartbeat-interval", "100", "--election-timeout", "1000",
					"--log-level", "warn", "--logger", "zap",
				},
			}
			c.members = append(c.members, m)
			if err := c.Start(i); err != nil {
				t.Fatal(err)
			}
		}
		lastErr = c.WaitHealthy(patience())
		if lastErr == nil {
			return c
		}
	}
	t.Fatalf("etcd cluster did not start: %v", lastErr)
	return nil
}

// Endpoints are the members' client URLs.
func (c *etcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// Start (re)starts member i with its data directory.
func (c *etcdCluster) Start(i int) error {
	m := c.members[i]
	if m.p != nil && !m.p.exited() {
		return fmt.Errorf("etcd %s is running", m.name)
	}
	p, err := startProc("etcd "+m.name, c.bin, m.args, etcdEnv(), m.logPath)
	if err != nil {
		return err
	}
	m.p = p
	return nil
}

// Stop stops member i with SIGTERM.
func (c *etcdCluster) Stop(i int) { c.members[i].p.stop(10 * time.Second) }

func (c *etcdCluster) killAll() {
	for _, m := range c.members {
		m.p.kill()
	}
}

// WaitHealthy waits until every running member answers /health with
// "true" (it has a leader and can serve).
func (c *etcdCluster) WaitHealthy(timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, m := range c.members {
		if m.p == nil || m.p.exited() {
			continue
		}
		err := waitFor(timeout, 100*time.Millisecond, func() error {
			if m.p.exited() {
				return permanent(fmt.Errorf("etcd %s exited: %v\n%s", m.name, m.p.err, m.p.out.tail(3000)))
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
