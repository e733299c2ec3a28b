package server_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/replica"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// TestMembersOverHTTP: two API servers, each with its replica on one etcd
// cluster, list both replicas over HTTP (through the Go client), one of
// them the leader, with the seal state each publishes. The route needs
// sys:ReadMembers: a token without it is refused, one whose policy names
// it is served.
func TestMembersOverHTTP(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	var urls []string
	var root string
	for i, id := range []string{"replica-a", "replica-b"} {
		s := sys.New(barrier.New(inmem.New()), nil)
		_, tok, err := s.DevBootstrap(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			root = tok
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoint(0)}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		rep, err := replica.NewEtcd(cli, "/coffer", replica.Config{ID: id, Address: "https://" + id + ":8200", Version: sys.Version,
			Sealed: s.Barrier.Sealed, TTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rep.Close() })
		ts := httptest.NewServer(server.New(s, server.Options{Replica: rep, Logger: slog.New(slog.DiscardHandler)}))
		t.Cleanup(ts.Close)
		urls = append(urls, ts.URL)
		if i == 1 {
			s.Seal() // b publishes that it is sealed
		}
	}
	cl, err := client.New(urls[0], client.WithToken(root))
	if err != nil {
		t.Fatal(err)
	}
	var ms []client.Member
	deadline := time.Now().Add(15 * time.Second)
	for {
		ms, err = cl.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 2 && ms[0].Leader != ms[1].Leader && ms[1].Sealed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members: %+v", ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a, b := ms[0], ms[1]
	if a.ID != "replica-a" || b.ID != "replica-b" || a.Address != "https://replica-a:8200" || a.Version != sys.Version || a.Sealed ||
		a.LastHeartbeat.IsZero() || a.Started.IsZero() {
		t.Fatalf("members: %+v", ms)
	}
	t.Logf("members: %+v", ms)

	// Authorization.
	st, raw := doJSON(t, "POST", urls[0]+"/v1/auth/token/create", root, client.CreateTokenRequest{DisplayName: "nothing"})
	if st != http.StatusOK && st != http.StatusCreated {
		t.Fatalf("token: %d %s", st, raw)
	}
	var none client.CreateTokenResponse
	mustJSON(t, raw, &none)
	nc, _ := client.New(urls[0], client.WithToken(none.Token))
	var apiErr *client.APIError
	if _, err := nc.Members(ctx); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Fatalf("members without sys:ReadMembers: %v", err)
	}
	if st, raw := doJSON(t, "PUT", urls[0]+"/v1/policies/members", root, client.PutPolicyRequest{
		Document: "statements:\n  - effect: allow\n    actions: [sys:ReadMembers]\n    resources: [\"*\"]\n"}); st != http.StatusOK && st != http.StatusCreated {
		t.Fatalf("policy: %d %s", st, raw)
	}
	st, raw = doJSON(t, "POST", urls[0]+"/v1/auth/token/create", root, client.CreateTokenRequest{DisplayName: "reader", Policies: []string{"members"}})
	if st != http.StatusOK && st != http.StatusCreated {
		t.Fatalf("token: %d %s", st, raw)
	}
	var reader client.CreateTokenResponse
	mustJSON(t, raw, &reader)
	rc, _ := client.New(urls[0], client.WithToken(reader.Token))
	if got, err := rc.Members(ctx); err != nil || len(got) != 2 {
		t.Fatalf("members with sys:ReadMembers: %v %v", got, err)
	}
}

// TestMembersSingleNode: a single-node server (bbolt, server.Run) lists
// itself as the only member and the leader.
func TestMembersSingleNode(t *testing.T) {
	ban, stop := runServer(t, server.Config{})
	defer stop()
	cl, err := client.New(ban.Addr, client.WithToken(ban.RootToken))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := cl.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || !ms[0].Leader || ms[0].Sealed || ms[0].ID == "" || ms[0].Address != ban.Addr {
		t.Fatalf("members: %+v (server %s)", ms, ban.Addr)
	}
}

// TestMembersOfRunOnEtcd: two real servers (server.Run) on one etcd prefix
// publish their records with their ha settings; the list shows both, one
// the leader. When the leader stops, it revokes its lease: the other one
// leads at once, and the stopped one is gone from the list.
func TestMembersOfRunOnEtcd(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	var srvs []etcdServer
	var share, root string
	for i, id := range []string{"run-a", "run-b"} {
		cfg := etcdConfig(c.Endpoints(), "/coffer-members", t.TempDir())
		cfg.HA.ReplicaID, cfg.HA.AdvertiseAddress, cfg.HA.LeaseTTL = id, "https://"+id+".example:8200", "30s"
		srv := startEtcdServer(t, cfg, slog.New(slog.DiscardHandler))
		srv.stop = sync.OnceValue(srv.stop)
		defer srv.stop()
		anon, _ := client.New(srv.ban.Addr)
		if i == 0 {
			ini, err := anon.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1})
			if err != nil {
				t.Fatal(err)
			}
			share, root = ini.Shares[0], ini.RootToken
		}
		if _, err := anon.Unseal(ctx, client.UnsealRequest{Share: share}); err != nil {
			t.Fatal(err)
		}
		srvs = append(srvs, srv)
	}
	list := func(i int) []client.Member {
		t.Helper()
		cl, _ := client.New(srvs[i].ban.Addr, client.WithToken(root))
		ms, err := cl.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	var ms []client.Member
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ms = list(1)
		if len(ms) == 2 && ms[0].Leader != ms[1].Leader && !ms[0].Sealed && !ms[1].Sealed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members: %+v", ms)
		}
	}
	if ms[0].ID != "run-a" || ms[0].Address != "https://run-a.example:8200" || ms[1].ID != "run-b" {
		t.Fatalf("members: %+v", ms)
	}
	lead, other := 0, 1
	if ms[1].Leader {
		lead, other = 1, 0
	}
	if err := srvs[lead].stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for deadline := start.Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ms = list(other)
		if len(ms) == 1 && ms[0].Leader {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the leader stopped (lease TTL 30s): %+v", ms)
		}
	}
	t.Logf("leadership handed over %s after the leader stopped (lease TTL 30s)", time.Since(start))
}
