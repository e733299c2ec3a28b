package etcdtest

import (
	"context"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestStartRetriesALostBindRace gives the first start a port that another
// listener holds (what happens when a parallel test or process takes a
// port between the pick and etcd's bind): the cluster must come up on
// other ports instead of failing the test.
func TestStartRetriesALostBindRace(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	calls := 0
	pickAddrs = func(n int) ([]string, error) {
		calls++
		addrs, err := freeAddrs(n)
		if calls == 1 && err == nil {
			addrs[0] = taken.Addr().String()
		}
		return addrs, err
	}
	defer func() { pickAddrs = freeAddrs }()

	c := Start(t, 1)
	if calls < 2 {
		t.Fatalf("addresses picked %d times, want a retry after the lost race", calls)
	}
	if c.Endpoint(0) == "http://"+taken.Addr().String() {
		t.Fatal("the member kept the taken address")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put on the retried cluster: %v", err)
	}
}

func TestLostBindIsOnlyAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = net.Listen("tcp", l.Addr().String())
	if err == nil || !lostBind(err) {
		t.Fatalf("lostBind(%v) = false for a taken port", err)
	}
	if _, err := net.Listen("tcp", "127.0.0.1:notaport"); err == nil || lostBind(err) {
		t.Fatalf("lostBind(%v) = true for a bad address", err)
	}
}

func TestFreeAddrsAreDistinct(t *testing.T) {
	addrs, err := freeAddrs(64)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("address %s handed out twice", a)
		}
		seen[a] = true
	}
}
