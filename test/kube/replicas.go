package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
)

// Replicas are several `coffer server` processes sharing one store in an
// etcd (under their own prefix), initialized once and each unsealed on its
// own with the same shares, as an HA deployment is.
type Replicas struct {
	// Addrs are the replicas' API base URLs, in order.
	Addrs []string
	// Token is the root token.
	Token  string
	shares []string
	t      testing.TB
	dirs   []string
	procs  []*proc.Proc
}

// StartReplicas starts n replicas on etcd under prefix (for example
// "/coffer", beside the apiserver's "/registry"), initializes the store
// through the first and unseals every replica.
func StartReplicas(t testing.TB, etcd *Etcd, n int, prefix string) *Replicas {
	t.Helper()
	r := &Replicas{t: t}
	base := tempDir(t)
	for i := range n {
		dir := filepath.Join(base, fmt.Sprintf("r%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		r.dirs = append(r.dirs, dir)
		r.procs = append(r.procs, nil)
		r.Addrs = append(r.Addrs, "")
		i := i
		dumpOnFailure(t, fmt.Sprintf("coffer replica %d", i), func() *proc.Proc { return r.procs[i] })
		r.start(i, etcd, prefix)
	}
	t.Cleanup(func() {
		for _, p := range r.procs {
			p.Stop(10 * time.Second)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), Patience())
	defer cancel()
	var ini *client.InitResponse
	err := proc.WaitFor(Patience(), 200*time.Millisecond, func() error {
		var err error
		ini, err = r.client(0, "").Init(ctx, client.InitRequest{Shares: 3, Threshold: 2})
		return err
	})
	if err != nil {
		t.Fatalf("initializing the replicas' store: %v", err)
	}
	r.Token, r.shares = ini.RootToken, ini.Shares
	for i := range n {
		r.Unseal(i)
	}
	return r
}

// start writes replica i's config and starts it on a free port.
func (r *Replicas) start(i int, etcd *Etcd, prefix string) {
	t := r.t
	t.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		listen := proc.HostPort(proc.FreePort(t))
		cfg := fmt.Sprintf("listen: %s\nstorage:\n  etcd:\n    endpoints: [%s]\n    prefix: %s\n    dial_timeout: 5s\n"+
			"data_dir: %s\nha:\n  replica_id: coffer-%d\n  advertise_address: http://%s\n",
			listen, etcd.URL, prefix, r.dirs[i], i, listen)
		path := filepath.Join(r.dirs[i], "coffer.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		p, perr := proc.Start(fmt.Sprintf("coffer replica %d", i), CofferBin(t), []string{"server", "--config", path},
			[]string{"COFFER_ADDR=", "COFFER_TOKEN="}, filepath.Join(r.dirs[i], "server.log"))
		if perr != nil {
			t.Fatal(perr)
		}
		r.procs[i] = p
		var addr string
		if addr, err = p.WaitLine("Address:", Patience()); err == nil {
			r.Addrs[i] = strings.TrimSpace(addr)
			return
		}
		p.Stop(5 * time.Second) // the port was taken meanwhile: try another
	}
	t.Fatalf("coffer replica %d did not start: %v", i, err)
}

// client returns a client of replica i alone.
func (r *Replicas) client(i int, token string) *client.Client {
	r.t.Helper()
	c, err := client.New(r.Addrs[i], client.WithToken(token))
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// Client returns a root client of every replica (it fails over).
func (r *Replicas) Client() *client.Client {
	r.t.Helper()
	c, err := client.NewEndpoints(r.Addrs, client.WithToken(r.Token))
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// Unseal unseals replica i with the shares, through its own address, and
// waits for its /readyz.
func (r *Replicas) Unseal(i int) {
	r.t.Helper()
	c := r.client(i, "")
	err := proc.WaitFor(Patience(), 200*time.Millisecond, func() error {
		if r.procs[i].Exited() {
			return proc.Permanent(fmt.Errorf("replica %d exited: %v", i, r.procs[i].Err()))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range r.shares[:2] {
			st, err := c.Unseal(ctx, client.UnsealRequest{Share: s})
			if err != nil {
				return err
			}
			if !st.Sealed {
				break
			}
		}
		ready, err := c.Ready(ctx)
		if err != nil {
			return err
		}
		if !ready {
			return fmt.Errorf("replica %d not ready", i)
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("unsealing replica %d: %v", i, err)
	}
}

// Kill sends SIGKILL to replica i and waits for it to end.
func (r *Replicas) Kill(i int) {
	r.procs[i].Kill()
}

// Index returns the index of the replica at addr, or -1.
func (r *Replicas) Index(addr string) int {
	for i, a := range r.Addrs {
		if a == addr {
			return i
		}
	}
	return -1
}

// WaitKey waits until every replica can encrypt with key: the key made
// through one replica has reached the others' caches.
func (r *Replicas) WaitKey(key string) {
	r.t.Helper()
	for i := range r.Addrs {
		c := r.client(i, r.Token)
		err := proc.WaitFor(Patience(), 50*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Encrypt(ctx, client.EncryptRequest{KeyID: key, Plaintext: []byte("probe")})
			return err
		})
		if err != nil {
			r.t.Fatalf("replica %d cannot use %s: %v", i, key, err)
		}
	}
}
