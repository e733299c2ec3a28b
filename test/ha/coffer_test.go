package ha

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
	"github.com/cofferkms/coffer/test/rawapi"
)

// clusterOptions shape the replicas' config.
type clusterOptions struct {
	// Bolt runs one replica on a bbolt file instead of etcd (a baseline).
	Bolt bool
	// FreshnessBound and LeaseTTL go to ha.freshness_bound and ha.lease_ttl
	// ("" leaves the server's default).
	FreshnessBound string
	LeaseTTL       string
	// RotationCheckInterval is how often the job leader looks for due
	// rotations (default 1h: no automatic rotation in the way).
	RotationCheckInterval string
	// AuditDisabled turns the trail off (benchmarks).
	AuditDisabled bool
	// Prefix is the etcd prefix (default /coffer-ha).
	Prefix string
}

// replica is one `coffer server` process with a stable address.
type replica struct {
	idx     int
	id      string
	addr    string // http://127.0.0.1:PORT
	dir     string
	cfgPath string
	logPath string
	p       *proc.Proc
	api     *rawapi.API
}

// cofferCluster is N coffer replicas on one etcd cluster (or one on bbolt).
type cofferCluster struct {
	t        testing.TB
	etcd     *proc.Etcd
	opts     clusterOptions
	replicas []*replica
	shares   []string
	root     string
	// Threshold is how many shares unseal.
	threshold int
}

// startCoffer starts n replicas on etcd (nil for the bbolt baseline, n=1),
// initializes through replica 0 and unseals every replica with the same
// shares. Replicas are killed at cleanup.
func startCoffer(t testing.TB, etcd *proc.Etcd, n int, opts clusterOptions) *cofferCluster {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = "/coffer-ha"
	}
	if opts.RotationCheckInterval == "" {
		opts.RotationCheckInterval = "1h"
	}
	c := &cofferCluster{t: t, etcd: etcd, opts: opts, threshold: 2}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			r.p.Kill()
		}
	})
	dumpLogsOnFailure(t, func() []string {
		var ls []string
		for _, r := range c.replicas {
			ls = append(ls, r.logPath)
		}
		return ls
	})
	proc.CofferBin(t) // build before starting anything
	base := t.TempDir()
	for i := range n {
		r := &replica{idx: i, id: fmt.Sprintf("coffer-%d", i), dir: filepath.Join(base, fmt.Sprintf("r%d", i))}
		if err := os.MkdirAll(r.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		r.logPath = filepath.Join(r.dir, "server.log")
		c.replicas = append(c.replicas, r)
		c.startReplica(r, true)
	}
	var ir client.InitResponse
	c.replicas[0].api.Must(t, "POST", "/v1/sys/init", client.InitRequest{Shares: 3, Threshold: c.threshold}, &ir)
	if len(ir.Shares) != 3 || ir.RootToken == "" {
		t.Fatalf("init answered %d shares and root token %q", len(ir.Shares), ir.RootToken)
	}
	c.shares, c.root = ir.Shares, ir.RootToken
	for _, r := range c.replicas {
		r.api.Token = c.root
		c.unseal(r)
	}
	return c
}

// config writes r's config file.
func (c *cofferCluster) config(r *replica, port int) {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\n", proc.HostPort(port))
	if c.etcd == nil {
		fmt.Fprintf(&b, "storage:\n  path: %s\n", filepath.Join(r.dir, "coffer.db"))
	} else {
		fmt.Fprintf(&b, "storage:\n  etcd:\n    endpoints: [%s]\n    prefix: %s\n    dial_timeout: 5s\n",
			strings.Join(c.etcd.Endpoints(), ", "), c.opts.Prefix)
		fmt.Fprintf(&b, "data_dir: %s\n", r.dir)
		fmt.Fprintf(&b, "ha:\n  replica_id: %s\n  advertise_address: http://%s\n", r.id, proc.HostPort(port))
		if c.opts.FreshnessBound != "" {
			fmt.Fprintf(&b, "  freshness_bound: %s\n", c.opts.FreshnessBound)
		}
		if c.opts.LeaseTTL != "" {
			fmt.Fprintf(&b, "  lease_ttl: %s\n", c.opts.LeaseTTL)
		}
	}
	fmt.Fprintf(&b, "rotation_check_interval: %s\nlog_level: info\n", c.opts.RotationCheckInterval)
	if c.opts.AuditDisabled {
		b.WriteString("audit:\n  disabled: true\n")
	}
	r.cfgPath = filepath.Join(r.dir, "coffer.yaml")
	if err := os.WriteFile(r.cfgPath, []byte(b.String()), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// startReplica starts r's process and waits for its address line. A fresh
// replica gets a free port (retried if taken meanwhile); a restart keeps
// its address.
func (c *cofferCluster) startReplica(r *replica, fresh bool) {
	t := c.t
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if fresh {
			port := proc.FreePort(t)
			c.config(r, port)
			r.addr = "http://" + proc.HostPort(port)
		}
		p, err := proc.Start("coffer "+r.id, proc.CofferBin(t), []string{"server", "--config", r.cfgPath},
			[]string{"COFFER_TOKEN=", "COFFER_ADDR="}, r.logPath)
		if err != nil {
			t.Fatal(err)
		}
		r.p = p
		if r.api == nil {
			r.api = rawapi.New(rawapi.At(r.addr), c.root)
		}
		_, lastErr = p.WaitLine("Address:", patience())
		if lastErr == nil {
			return
		}
		p.Kill()
		if !fresh && !strings.Contains(lastErr.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("coffer %s did not start: %v", r.id, lastErr)
}

// unseal submits shares to r until it is unsealed; it retries while the
// replica cannot reach storage yet.
func (c *cofferCluster) unseal(r *replica) {
	c.t.Helper()
	err := proc.WaitFor(patience(), 200*time.Millisecond, func() error {
		if r.p.Exited() {
			return proc.Permanent(fmt.Errorf("coffer %s exited: %v", r.id, r.p.Err()))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var st client.SealStatus
		for _, sh := range c.shares[:c.threshold] {
			if err := r.api.Do(ctx, "POST", "/v1/sys/unseal", client.UnsealRequest{Share: sh}, &st); err != nil {
				r.api.Do(ctx, "POST", "/v1/sys/unseal", client.UnsealRequest{Reset: true}, nil)
				return err
			}
			if !st.Sealed {
				break
			}
		}
		if st.Sealed {
			return fmt.Errorf("coffer %s still sealed: %+v", r.id, st)
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("unsealing %s: %v", r.id, err)
	}
	c.waitReady(r)
}

// waitReady polls /readyz until it answers 200.
func (c *cofferCluster) waitReady(r *replica) {
	c.t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	err := proc.WaitFor(patience(), 100*time.Millisecond, func() error {
		if r.p.Exited() {
			return proc.Permanent(fmt.Errorf("coffer %s exited: %v", r.id, r.p.Err()))
		}
		resp, err := hc.Get(r.addr + "/readyz")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s /readyz: %s %s", r.id, resp.Status, b)
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("coffer %s not ready: %v", r.id, err)
	}
}

// Kill sends SIGKILL to replica i.
func (c *cofferCluster) Kill(i int) { c.replicas[i].p.Kill() }

// Pause sends SIGSTOP to replica i; Resume sends SIGCONT.
func (c *cofferCluster) Pause(i int) {
	if err := c.replicas[i].p.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cofferCluster) Resume(i int) {
	if err := c.replicas[i].p.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatal(err)
	}
}

// Restart starts replica i again (it must have ended), on the same
// address, and unseals it.
func (c *cofferCluster) Restart(i int) {
	c.t.Helper()
	r := c.replicas[i]
	r.p.Stop(20 * time.Second)
	c.startReplica(r, false)
	c.unseal(r)
}

// member is one entry of GET /v1/sys/members, decoded loosely so that the
// harness does not depend on every field.
type member map[string]any

// Leader returns the index of the replica that holds the job leadership,
// from GET /v1/sys/members on any live replica, or -1 when no replica says.
func (c *cofferCluster) Leader() int {
	for _, r := range c.replicas {
		if r.p.Exited() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var raw json.RawMessage
		err := r.api.Do(ctx, "GET", "/v1/sys/members", nil, &raw)
		cancel()
		if err != nil {
			continue
		}
		if i := leaderIn(raw, c.replicas); i >= 0 {
			return i
		}
	}
	return -1
}

// leaderIn finds the leader's replica index in a members answer: an object
// {"members": [...], "leader": ID?} or a bare list; a member is the leader
// when its "leader" (or "is_leader") field is true, or when its id equals
// the top-level "leader".
func leaderIn(raw json.RawMessage, rs []*replica) int {
	var wrapped struct {
		Members []member `json:"members"`
		Leader  any      `json:"leader"`
	}
	var list []member
	if json.Unmarshal(raw, &wrapped) != nil || wrapped.Members == nil {
		if json.Unmarshal(raw, &list) != nil {
			return -1
		}
	} else {
		list = wrapped.Members
	}
	idx := func(id string) int {
		for i, r := range rs {
			if r.id == id || strings.TrimRight(r.addr, "/") == strings.TrimRight(id, "/") {
				return i
			}
		}
		return -1
	}
	if s, ok := wrapped.Leader.(string); ok && s != "" {
		if i := idx(s); i >= 0 {
			return i
		}
	}
	for _, m := range list {
		lead := m["leader"] == true || m["is_leader"] == true || m["job_leader"] == true
		if !lead {
			continue
		}
		for _, f := range []string{"replica_id", "id", "address", "advertise_address"} {
			if s, ok := m[f].(string); ok {
				if i := idx(s); i >= 0 {
					return i
				}
			}
		}
	}
	return -1
}
