package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

// TestRunReplicasIAMWritesOnStoredRecord: two server.Run replicas on one
// etcd prefix; an IAM write sent to the second right after the first
// changed the same record (before, or while, the change reaches the
// second's cache) is decided on the stored record: the second's update
// of an access key keeps the first's enable or disable, and its answer
// says so; a role the first created is not created again on the second
// (409 already_exists).
func TestRunReplicasIAMWritesOnStoredRecord(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	servers, ini := startUnsealedReplicas(t, c.Endpoints(), "/coffer-iamcas", 2, quiet)
	a, _ := client.New(servers[0].ban.Addr, client.WithToken(ini.RootToken))
	b, _ := client.New(servers[1].ban.Addr, client.WithToken(ini.RootToken))

	k, err := a.CreateAccessKey(ctx, client.CreateAccessKeyRequest{Description: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err = b.GetAccessKey(ctx, k.ID); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the access key never reached the second replica: %v", err)
		}
	}

	const rounds = 20
	for i := range rounds {
		enabled := i%2 == 1 // disable first, then enable, and so on
		if _, err := a.UpdateAccessKey(ctx, k.ID, client.UpdateAccessKeyRequest{Enabled: &enabled}); err != nil {
			t.Fatal(err)
		}
		d := fmt.Sprintf("round %d", i)
		got, err := b.UpdateAccessKey(ctx, k.ID, client.UpdateAccessKeyRequest{Description: &d})
		if err != nil {
			t.Fatal(err)
		}
		if got.Enabled != enabled || got.Description != d {
			t.Fatalf("round %d: the second replica's update answered enabled=%v description=%q; want enabled=%v (the first's change kept)", i, got.Enabled, got.Description, enabled)
		}
		name := fmt.Sprintf("app-%d", i)
		if _, err := a.CreateRole(ctx, client.Role{Name: name}); err != nil {
			t.Fatal(err)
		}
		_, err = b.CreateRole(ctx, client.Role{Name: name, Description: "again"})
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 409 || ae.Code != "already_exists" {
			t.Fatalf("round %d: creating on the second replica a role the first just created: %v; want 409 already_exists", i, err)
		}
	}
	// Both replicas settle on the stored record.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ga, errA := a.GetAccessKey(ctx, k.ID)
		gb, errB := b.GetAccessKey(ctx, k.ID)
		want := fmt.Sprintf("round %d", rounds-1)
		if errA == nil && errB == nil && ga.Description == want && gb.Description == want && ga.Enabled && gb.Enabled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not settle: %+v %v / %+v %v", ga, errA, gb, errB)
		}
	}
}
