package sys_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

// etcdStore opens a client of the cluster at endpoints, under prefix.
func etcdStore(t *testing.T, endpoints []string, prefix string) sharedStore {
	t.Helper()
	b, err := etcd.Open(ctx, etcd.Config{Endpoints: endpoints, Prefix: prefix, RequestTimeout: 2 * time.Second,
		ProgressInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// etcdBound is the freshness bound of replicas in the etcd tests that do
// not test staleness: three etcd members share the process and the machine
// with the replicas (under the race detector too), so a proof can come
// late without anything being wrong.
const etcdBound = 10 * time.Second

// TestFollowOverEtcd runs the propagation tests over a real 3-member etcd
// cluster, each replica with its own client.
func TestFollowOverEtcd(t *testing.T) {
	cl := etcdtest.Start(t, 3)
	run := func(name string, f func(*testing.T, time.Duration, sharedStore), t *testing.T) {
		// Both replicas share one client here (each with its own watch);
		// own-clients below gives each replica its own.
		t.Run(name, func(t *testing.T) { f(t, etcdBound, etcdStore(t, cl.Endpoints(), "/"+name)) })
	}
	run("keys", testFollowKeys, t)
	run("iam", testFollowIAM, t)
	run("revocations", testFollowRevocations, t)

	t.Run("own-clients", func(t *testing.T) {
		rs := replicasBound(t, etcdBound, etcdStore(t, cl.Endpoints(), "/own"), etcdStore(t, cl.Endpoints(), "/own"))
		a, b := rs[0].root, rs[1].root
		tok, err := a.CreateToken(ctx, client.CreateTokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		onB := rs[1].as(t, tok.Token)
		eventually(t, "a token issued on A", func() error { _, err := onB.LookupSelf(ctx); return err })
		if err := a.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: tok.Accessor}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a token revoked on A", func() error { _, err := onB.LookupSelf(ctx); return wantCode(err, "unauthenticated") })
		if _, err := b.RotateKeyring(ctx); err != nil {
			t.Fatal(err)
		}
		k, err := b.CreateKey(ctx, client.CreateKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ct, err := b.Encrypt(ctx, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "a key made on B after its keyring rotation", func() error {
			_, err := a.Decrypt(ctx, client.DecryptRequest{Ciphertext: ct.Ciphertext})
			return err
		})
	})
}

// TestStaleReplicaOverEtcd: replica B talks to one etcd member only; when
// that member stops, B cannot prove its caches fresh and refuses
// credentials with 503 replica_stale, while A, on the two members left,
// revokes a token B had served. When the member comes back, B catches up
// without a restart and refuses the revoked token.
func TestStaleReplicaOverEtcd(t *testing.T) {
	cl := etcdtest.Start(t, 3)
	rs := replicasOn(t, etcdStore(t, []string{cl.Endpoint(0), cl.Endpoint(1)}, "/stale"), etcdStore(t, []string{cl.Endpoint(2)}, "/stale"))
	a := rs[0].root
	tok, err := a.CreateToken(ctx, client.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	onB := rs[1].as(t, tok.Token)
	use := func() error { _, err := onB.LookupSelf(ctx); return err }
	eventually(t, "a token issued on A", use)

	cl.Stop(2)
	revoked := time.Now()
	if err := a.RevokeToken(ctx, client.RevokeTokenRequest{Token: tok.Token}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a replica cut off from etcd", func() error { return wantCode(use(), "replica_stale") })
	t.Logf("B refused the token as stale %s after the revocation started (bound %s)", time.Since(revoked).Round(time.Millisecond), testBound)
	// Seal status reads the seal configuration from the store B cannot
	// reach; health needs nothing.
	if err := rs[1].root.Health(ctx); err != nil {
		t.Fatalf("health on a stale replica: %v", err)
	}

	cl.Restart(2)
	eventually(t, "a replica reconnected to etcd", func() error { return wantCode(use(), "unauthenticated") })
	if _, err := rs[1].root.LookupSelf(ctx); err != nil {
		t.Fatalf("the root token on a replica that caught up: %v", err)
	}
}

// TestRevocationPropagation measures how long a token revoked over HTTP on
// replica A stays usable on replica B, over a real 3-member etcd cluster,
// each replica with its own client: from the moment A acknowledged the
// revocation to B's first refusal. 1,000 samples (100 with -short or under
// the race detector); it prints p50 and p99 and fails only if p99 exceeds
// 1 s (not checked under the race detector, whose slowdown it would
// measure).
func TestRevocationPropagation(t *testing.T) {
	n := 1000
	if testing.Short() || raceDetector {
		n = 100
	}
	cl := etcdtest.Start(t, 3)
	rs := replicasBound(t, etcdBound, etcdStore(t, cl.Endpoints(), "/prop"), etcdStore(t, cl.Endpoints(), "/prop"))
	a := rs[0].root
	samples := make([]time.Duration, 0, n)
	for range n {
		tok, err := a.CreateToken(ctx, client.CreateTokenRequest{TTL: "10m"})
		if err != nil {
			t.Fatal(err)
		}
		onB := rs[1].as(t, tok.Token)
		eventually(t, "a token issued on A", func() error { _, err := onB.LookupSelf(ctx); return err })
		if err := a.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: tok.Accessor}); err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		for {
			_, err := onB.LookupSelf(ctx)
			if err != nil {
				if c := code(err); c != "unauthenticated" {
					t.Fatalf("B answered %q (%v), want unauthenticated", c, err)
				}
				break
			}
			if time.Since(acked) > propagation {
				t.Fatalf("a token revoked on A still served on B after %s", propagation)
			}
		}
		samples = append(samples, time.Since(acked))
	}
	slices.Sort(samples)
	p50, p99, worst := samples[len(samples)/2], samples[len(samples)*99/100], samples[len(samples)-1]
	t.Logf("revocation propagation A -> B over etcd, %d samples: p50 %s, p99 %s, max %s", n,
		p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), worst.Round(10*time.Microsecond))
	fmt.Printf("TestRevocationPropagation: samples=%d p50=%s p99=%s max=%s\n", n, p50, p99, worst)
	if raceDetector {
		t.Logf("under the race detector the figures measure it; the 1 s bound is checked without it")
		return
	}
	if p99 > time.Second {
		t.Fatalf("p99 %s exceeds the 1 s propagation bound", p99)
	}
}
