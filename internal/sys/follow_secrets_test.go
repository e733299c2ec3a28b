package sys_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/secrets"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// TestFollowWakesSecretWaiters: a secret written on one replica wakes a
// wait on another (the follow loop hands secrets/meta/ changes to the
// secrets service); the waiter there has no other way to learn of it.
func TestFollowWakesSecretWaiters(t *testing.T) {
	rs := replicas(t, inmem.New(), 2)
	a, b := rs[0].sys.Secrets, rs[1].sys.Secrets
	if _, err := a.Put(ctx, secrets.PutRequest{Name: "app/db", Fields: map[string]string{"p": "1"}}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out []secrets.Change
		err error
	}
	done := make(chan result, 1)
	wctx, cancel := context.WithTimeout(ctx, 2*propagation)
	defer cancel()
	go func() {
		out, err := b.Wait(wctx, map[string]uint32{"app/db": 1, "app/other": 0}, secrets.WaitOptions{})
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the wait on the other replica returned before any change: %+v %v", r.out, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	start := time.Now()
	if _, err := a.Put(ctx, secrets.PutRequest{Name: "app/db", Fields: map[string]string{"p": "2"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || !reflect.DeepEqual(r.out, []secrets.Change{{Name: "app/db", CurrentVersion: 2}}) {
			t.Fatalf("woken with %+v %v", r.out, r.err)
		}
		t.Logf("woken on the other replica %s after the write", time.Since(start).Round(time.Microsecond))
	case <-time.After(propagation):
		t.Fatal("a write on one replica did not wake a wait on the other")
	}
}

// TestFollowWakesSecretWaitsOverREST: the same through the API and the Go
// client: a wait sent to one replica answers a write sent to the other.
func TestFollowWakesSecretWaitsOverREST(t *testing.T) {
	rs := replicas(t, inmem.New(), 2)
	if _, err := rs[0].root.SecretPut(ctx, "app/db", client.SecretPutRequest{Fields: map[string]string{"p": "1"}}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res *client.SecretWaitResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := rs[1].root.SecretWait(ctx, map[string]uint32{"app/db": 1}, 2*propagation)
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the wait answered before any change: %+v %v", r.res, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := rs[0].root.SecretPut(ctx, "app/db", client.SecretPutRequest{Fields: map[string]string{"p": "2"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || !reflect.DeepEqual(r.res.Changed, []client.SecretChange{{Name: "app/db", CurrentVersion: 2}}) {
			t.Fatalf("woken with %+v %v", r.res, r.err)
		}
	case <-time.After(propagation):
		t.Fatal("a write on one replica did not answer a wait on the other")
	}
}

// TestStaleReplicaEndsSecretWaits: a wait re-checks its credential while it
// blocks, and a replica that can no longer prove it has seen every
// revocation (its watch is silent while a token is revoked elsewhere)
// ends the wait with 503 replica_stale, as it refuses any request with
// that credential.
func TestStaleReplicaEndsSecretWaits(t *testing.T) {
	store := inmem.New()
	store.SetProgressInterval(50 * time.Millisecond)
	t.Cleanup(func() { store.Close() })
	rs := replicas(t, store, 2)
	a := rs[0].root
	if _, err := a.SecretPut(ctx, "app/db", client.SecretPutRequest{Fields: map[string]string{"p": "1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutPolicy(ctx, "lister", client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [secret:List]\n    resources: [\"secret/*\"]\n"}); err != nil {
		t.Fatal(err)
	}
	tok, err := a.CreateToken(ctx, client.CreateTokenRequest{Policies: []string{"lister"}})
	if err != nil {
		t.Fatal(err)
	}
	onB := rs[1].as(t, tok.Token)
	eventually(t, "a token issued on A", func() error {
		_, err := onB.SecretMetadata(ctx, "app/db")
		return err
	})
	for _, r := range rs {
		if err := r.sys.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := onB.SecretWait(ctx, map[string]uint32{"app/db": 1}, time.Minute)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	store.SetWatchPaused(true)
	if err := a.RevokeToken(ctx, client.RevokeTokenRequest{Token: tok.Token}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if wantCode(err, "replica_stale") != nil {
			t.Fatalf("the wait on the stale replica ended with %v", err)
		}
	case <-time.After(propagation):
		t.Fatal("the wait on a replica that cannot see the revocation went on")
	}
}

// TestSecretWaitAfterLostHistory: a secret written while the other
// replica's watch lost history (a compacted revision) still wakes the wait
// there, through the resync that wakes every waiter to read all its names.
func TestSecretWaitAfterLostHistory(t *testing.T) {
	base := inmem.New()
	base.SetProgressInterval(50 * time.Millisecond)
	t.Cleanup(func() { base.Close() })
	lossy := &lossyStore{Backend: base, wake: make(chan struct{}, 1)}
	rs := replicasOn(t, base, lossy)
	a, b := rs[0].sys.Secrets, rs[1].sys.Secrets
	if _, err := a.Put(ctx, secrets.PutRequest{Name: "app/db", Fields: map[string]string{"p": "1"}}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out []secrets.Change
		err error
	}
	done := make(chan result, 1)
	wctx, cancel := context.WithTimeout(ctx, 4*propagation)
	defer cancel()
	go func() {
		out, err := b.Wait(wctx, map[string]uint32{"app/db": 1}, secrets.WaitOptions{})
		done <- result{out, err}
	}()
	time.Sleep(100 * time.Millisecond)
	lossy.setLose(true)
	if _, err := a.Put(ctx, secrets.PutRequest{Name: "app/db", Fields: map[string]string{"p": "2"}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the watch drop the event
	lossy.setLose(false)
	select {
	case r := <-done:
		if r.err != nil || !reflect.DeepEqual(r.out, []secrets.Change{{Name: "app/db", CurrentVersion: 2}}) {
			t.Fatalf("woken with %+v %v", r.out, r.err)
		}
	case <-time.After(2 * propagation):
		t.Fatal("a write whose event the watch lost did not wake the wait")
	}
}
