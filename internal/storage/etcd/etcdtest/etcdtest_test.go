package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestClusterServes(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	c.Stop(0)
	if _, err := cli.Put(ctx, "b", "2"); err != nil {
		t.Fatalf("put with one member down: %v", err)
	}
	c.Restart(0)
	r, err := cli.Get(ctx, "b")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "2" {
		t.Fatalf("get after restart: %v %v", r, err)
	}
}
