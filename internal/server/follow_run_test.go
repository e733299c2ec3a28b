package server_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

// TestRunReplicasFollowEachOther: two server.Run replicas on one etcd
// prefix follow each other's changes: a token issued on the first works on
// the second, and a revocation on the first is refused on the second. A
// freshness bound below 100ms is refused at start.
func TestRunReplicasFollowEachOther(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := context.Background()
	const prefix = "/coffer-follow"
	quiet := slog.New(slog.DiscardHandler)

	bad := etcdConfig(c.Endpoints(), prefix, t.TempDir())
	bad.HA.FreshnessBound = "10ms"
	bad.Listen = "127.0.0.1:0"
	if err := server.Run(ctx, bad, quiet, nil); err == nil || !strings.Contains(err.Error(), "ha.freshness_bound") {
		t.Fatalf("a freshness bound of 10ms: %v", err)
	}

	servers, ini := startUnsealedReplicas(t, c.Endpoints(), prefix, 2, quiet)
	rootA, _ := client.New(servers[0].ban.Addr, client.WithToken(ini.RootToken))
	tok, err := rootA.CreateToken(ctx, client.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	onB, _ := client.New(servers[1].ban.Addr, client.WithToken(tok.Token))
	poll := func(what string, ok func(error) bool) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, err = onB.LookupSelf(ctx); ok(err) {
				return
			}
		}
		t.Fatalf("%s: %v", what, err)
	}
	poll("a token issued on the first replica, used on the second", func(err error) bool { return err == nil })
	// A revocation first waits until its replica has applied every change
	// stored so far (the member records beside the data move the store's
	// revision without an event, so this can take a progress interval).
	start := time.Now()
	if err := rootA.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: tok.Accessor}); err != nil {
		t.Fatal(err)
	}
	t.Logf("revocation acknowledged in %s", time.Since(start).Round(time.Millisecond))
	poll("a token revoked on the first replica, used on the second", func(err error) bool {
		var ae *client.APIError
		return errors.As(err, &ae) && ae.Code == "unauthenticated"
	})
}
