package sys_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// sharedStore is a backend several replicas share.
type sharedStore interface {
	storage.Backend
	storage.Watcher
}

// replica is one Coffer instance (system service and REST API on a real
// listener) over a shared store.
type replica struct {
	sys   *sys.Sys
	url   string
	root  *client.Client
	share string // the unseal share
}

// testBound is the freshness bound of these tests' replicas: the default,
// as a shorter one is missed under the race detector on a loaded machine.
const testBound = sys.DefaultFreshnessBound

// replicas starts n replicas over store, initializes the store through the
// first and unseals every one. Each follows the store with testBound.
func replicas(t *testing.T, store sharedStore, n int) []*replica {
	stores := make([]sharedStore, n)
	for i := range stores {
		stores[i] = store
	}
	return replicasOn(t, stores...)
}

// replicasOn starts one replica over each store (clients of one shared
// store), initializes it through the first and unseals every one.
func replicasOn(t *testing.T, stores ...sharedStore) []*replica {
	t.Helper()
	return replicasBound(t, testBound, stores...)
}

// replicasBound is replicasOn with a freshness bound.
func replicasBound(t *testing.T, bound time.Duration, stores ...sharedStore) []*replica {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	out := make([]*replica, len(stores))
	for i, store := range stores {
		s := sys.New(barrier.New(store), nil)
		s.Follow(store, bound, quiet)
		// These tests fail authentication on purpose, thousands of times
		// from one address: no throttling.
		limit := authlimit.New(authlimit.Config{Burst: 1 << 30, Refill: time.Nanosecond})
		ts := httptest.NewServer(server.New(s, server.Options{Logger: quiet, AuthLimit: limit}))
		t.Cleanup(func() {
			ts.Close()
			s.Seal()
		})
		out[i] = &replica{sys: s, url: ts.URL}
	}
	res, err := out[0].sys.Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range out {
		if _, err := r.sys.Unseal(ctx, res.Shares[0]); err != nil {
			t.Fatal(err)
		}
		if !r.sys.Follows() {
			t.Fatal("a replica over a shared store does not follow it after unseal")
		}
		r.root, r.share = r.as(t, res.RootToken), res.Shares[0]
	}
	return out
}

// as returns a client of r that presents token.
func (r *replica) as(t *testing.T, token string) *client.Client {
	t.Helper()
	c, err := client.New(r.url, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// withKey returns a client of r that signs with an access key.
func (r *replica) withKey(t *testing.T, id, secret string) *client.Client {
	t.Helper()
	c, err := client.New(r.url, client.WithAccessKey(id, secret))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// propagation is how long a change may take to reach another replica in
// these tests: generous, as the machine is shared; the figure that matters
// is measured by TestRevocationPropagation.
const propagation = 10 * time.Second

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(propagation)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not seen on the other replica within %s: %v", what, propagation, err)
}

// code returns the API error code of err ("" for nil or another error).
func code(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	if err != nil {
		return "not an API error: " + err.Error()
	}
	return ""
}

// wantCode returns nil when err carries the API code want.
func wantCode(err error, want string) error {
	if got := code(err); got != want {
		return fmt.Errorf("got %q (%v), want %q", got, err, want)
	}
	return nil
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestFollowKeys: key changes made on replica A reach replica B's key
// cache: a new key and alias, disabling, rotation, deletion scheduled, an
// alias moved; a keyring rotated on A is usable on B.
func TestFollowKeys(t *testing.T) { testFollowKeys(t, testBound, newInmem(t)) }

func newInmem(t *testing.T) sharedStore {
	st := inmem.New()
	st.SetProgressInterval(50 * time.Millisecond)
	t.Cleanup(func() { st.Close() })
	return st
}

func testFollowKeys(t *testing.T, bound time.Duration, store sharedStore) {
	rs := replicasBound(t, bound, store, store)
	a, b := rs[0].root, rs[1].root
	k, err := a.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	encrypt := func(c *client.Client, key string) (*client.EncryptResponse, error) {
		return c.Encrypt(ctx, client.EncryptRequest{KeyID: key, Plaintext: []byte("secret")})
	}
	var ct []byte
	eventually(t, "a key created on A", func() error {
		r, err := encrypt(b, "alias/app")
		if err == nil {
			ct = r.Ciphertext
		}
		return err
	})
	if _, err := a.Decrypt(ctx, client.DecryptRequest{Ciphertext: ct}); err != nil {
		t.Fatalf("A decrypts what B encrypted: %v", err)
	}

	if _, err := a.DisableKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a key disabled on A", func() error { _, err := encrypt(b, k.ID); return wantCode(err, "key_disabled") })
	if _, err := a.EnableKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a key enabled on A", func() error { _, err := encrypt(b, k.ID); return err })

	if _, err := a.RotateKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a key rotated on A", func() error {
		d, err := b.DescribeKey(ctx, k.ID)
		if err == nil && d.PrimaryVersion != 2 {
			err = fmt.Errorf("primary version %d", d.PrimaryVersion)
		}
		return err
	})
	r2, err := a.Encrypt(ctx, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("v2")})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := b.Decrypt(ctx, client.DecryptRequest{Ciphertext: r2.Ciphertext}); err != nil || string(out.Plaintext) != "v2" {
		t.Fatalf("B decrypts under the version A made: %v", err)
	}

	// An alias moved on A.
	k2, err := a.CreateKey(ctx, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteAlias(ctx, "alias/app"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAlias(ctx, client.Alias{Name: "alias/app", KeyID: k2.ID}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an alias moved on A", func() error {
		d, err := b.DescribeKey(ctx, "alias/app")
		if err == nil && d.ID != k2.ID {
			err = fmt.Errorf("alias/app names %s", d.ID)
		}
		return err
	})

	if _, err := a.ScheduleKeyDeletion(ctx, k.ID, client.ScheduleDeletionRequest{PendingDays: 7}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deletion scheduled on A", func() error { _, err := encrypt(b, k.ID); return wantCode(err, "key_pending_deletion") })

	// A keyring rotated on A, then a key created there: B decrypts with it,
	// and what B writes afterwards A reads.
	if _, err := a.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	k3, err := a.CreateKey(ctx, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r3, err := a.Encrypt(ctx, client.EncryptRequest{KeyID: k3.ID, Plaintext: []byte("after the keyring rotation")})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a key created on A after a keyring rotation", func() error {
		_, err := b.Decrypt(ctx, client.DecryptRequest{Ciphertext: r3.Ciphertext})
		return err
	})
	if _, err := b.RotateKey(ctx, k3.ID); err != nil {
		t.Fatalf("B writes a key after the keyring rotation: %v", err)
	}
	eventually(t, "a key rotated on B under the new keyring term", func() error {
		d, err := a.DescribeKey(ctx, k3.ID)
		if err == nil && d.PrimaryVersion != 2 {
			err = fmt.Errorf("primary version %d", d.PrimaryVersion)
		}
		return err
	})
	if err := rs[1].sys.Fresh(); err != nil {
		t.Fatalf("B after following every change: %v", err)
	}
}

const allowAll = `statements:
  - effect: allow
    actions: ["*"]
    resources: ["*"]
`

const allowEncrypt = `statements:
  - effect: allow
    actions: ["kms:Encrypt"]
    resources: ["*"]
`

// TestFollowIAM: policies, roles, access keys, clusters and key policies
// changed on A reach B.
func TestFollowIAM(t *testing.T) { testFollowIAM(t, testBound, newInmem(t)) }

func testFollowIAM(t *testing.T, bound time.Duration, store sharedStore) {
	rs := replicasBound(t, bound, store, store)
	a, b := rs[0].root, rs[1].root
	if _, err := a.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutPolicy(ctx, "enc", client.PutPolicyRequest{Document: allowEncrypt}); err != nil {
		t.Fatal(err)
	}
	ak, err := a.CreateAccessKey(ctx, client.CreateAccessKeyRequest{Policies: []string{"enc"}})
	if err != nil {
		t.Fatal(err)
	}
	onB := rs[1].withKey(t, ak.ID, ak.SecretAccessKey)
	encrypt := func() error {
		_, err := onB.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")})
		return err
	}
	eventually(t, "a policy and an access key created on A", encrypt)

	// The policy narrowed on A: the access key's compiled set on B follows.
	if _, err := a.PutPolicy(ctx, "enc", client.PutPolicyRequest{Document: strings.ReplaceAll(allowEncrypt, "kms:Encrypt", "kms:Decrypt")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a policy changed on A", func() error { return wantCode(encrypt(), "permission_denied") })
	if _, err := a.PutPolicy(ctx, "enc", client.PutPolicyRequest{Document: allowEncrypt}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a policy changed back on A", encrypt)

	// A key policy set on A.
	if _, err := a.PutKeyPolicy(ctx, "alias/app", `statements:
  - effect: deny
    actions: ["kms:Encrypt"]
    resources: ["*"]
`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a key policy set on A", func() error { return wantCode(encrypt(), "permission_denied") })
	if _, err := a.PutKeyPolicy(ctx, "alias/app", allowAll); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a key policy replaced on A", encrypt)

	// The access key disabled on A.
	if _, err := a.UpdateAccessKey(ctx, ak.ID, client.UpdateAccessKeyRequest{Enabled: new(false)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an access key disabled on A", func() error { return wantCode(encrypt(), "unauthenticated") })

	// A role created, changed and deleted on A.
	role := client.Role{Name: "ci", Policies: []string{"enc"}, TrustPrincipals: []string{"access-key:*"}}
	if _, err := a.CreateRole(ctx, role); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a role created on A", func() error { _, err := b.GetRole(ctx, "ci"); return err })
	role.Description = "changed"
	if _, err := a.UpdateRole(ctx, role); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a role changed on A", func() error {
		r, err := b.GetRole(ctx, "ci")
		if err == nil && r.Description != "changed" {
			err = errors.New("old description")
		}
		return err
	})
	if _, err := a.DeleteRole(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a role deleted on A", func() error { _, err := b.GetRole(ctx, "ci"); return wantCode(err, "not_found") })

	// A cluster registered and deleted on A.
	if _, err := a.RegisterCluster(ctx, client.Cluster{Name: "kind", Mode: "tokenreview", APIServer: "https://127.0.0.1:6443", ReviewerToken: "x"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a cluster registered on A", func() error { _, err := b.GetCluster(ctx, "kind"); return err })
	if err := a.DeleteCluster(ctx, "kind"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a cluster deleted on A", func() error { _, err := b.GetCluster(ctx, "kind"); return wantCode(err, "not_found") })
}

// TestFollowRevocations: a token revoked on A by token, accessor, role,
// principal or leak report is refused on B.
func TestFollowRevocations(t *testing.T) { testFollowRevocations(t, testBound, newInmem(t)) }

func testFollowRevocations(t *testing.T, bound time.Duration, store sharedStore) {
	rs := replicasBound(t, bound, store, store)
	a := rs[0].root
	if _, err := a.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutPolicy(ctx, "enc", client.PutPolicyRequest{Document: allowEncrypt}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateRole(ctx, client.Role{Name: "ci", Policies: []string{"enc"}, TrustPrincipals: []string{"access-key:*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutPolicy(ctx, "assume", client.PutPolicyRequest{Document: strings.ReplaceAll(allowEncrypt, "kms:Encrypt", "auth:AssumeRole")}); err != nil {
		t.Fatal(err)
	}
	ak, err := a.CreateAccessKey(ctx, client.CreateAccessKeyRequest{Policies: []string{"enc", "assume"}})
	if err != nil {
		t.Fatal(err)
	}
	newToken := func(t *testing.T) *client.CreateTokenResponse {
		tok, err := a.CreateToken(ctx, client.CreateTokenRequest{Policies: []string{"enc"}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	roleToken := func(t *testing.T) *client.CreateTokenResponse {
		tok, err := rs[0].withKey(t, ak.ID, ak.SecretAccessKey).AssumeRole(ctx, client.AssumeRoleRequest{Role: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cases := []struct {
		name   string
		token  func(*testing.T) *client.CreateTokenResponse
		revoke func(tok *client.CreateTokenResponse) error
		code   string
	}{
		{"by token", newToken, func(tok *client.CreateTokenResponse) error {
			return a.RevokeToken(ctx, client.RevokeTokenRequest{Token: tok.Token})
		}, "unauthenticated"},
		{"by accessor", newToken, func(tok *client.CreateTokenResponse) error {
			return a.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: tok.Accessor})
		}, "unauthenticated"},
		{"by role", roleToken, func(*client.CreateTokenResponse) error {
			_, err := a.RevokeRoleTokens(ctx, "ci")
			return err
		}, "unauthenticated"},
		{"by principal", roleToken, func(*client.CreateTokenResponse) error {
			_, err := a.RevokePrincipal(ctx, "access-key:"+ak.ID)
			return err
		}, "unauthenticated"},
		{"by leak report", newToken, func(tok *client.CreateTokenResponse) error {
			_, err := a.ReportLeakedTokens(ctx, client.ReportLeakedRequest{Fingerprints: []string{sha256hex(tok.Token)}})
			return err
		}, "unauthenticated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := c.token(t)
			onB := rs[1].as(t, tok.Token)
			use := func() error {
				_, err := onB.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")})
				return err
			}
			eventually(t, "a token issued on A", use)
			if err := c.revoke(tok); err != nil {
				t.Fatal(err)
			}
			eventually(t, "a revocation on A", func() error { return wantCode(use(), c.code) })
		})
	}
}

// TestStaleReplicaRefusesCredentials: while its watch delivers nothing, a
// replica keeps serving as long as the store's revision proves nothing
// changed; once a token is revoked elsewhere that it cannot see, it refuses
// credentials with 503 replica_stale after its freshness bound (seal
// status and health keep answering), and it recovers without a restart
// when the watch delivers again, refusing the revoked token.
func TestStaleReplicaRefusesCredentials(t *testing.T) {
	store := inmem.New()
	store.SetProgressInterval(50 * time.Millisecond)
	t.Cleanup(func() { store.Close() })
	rs := replicas(t, store, 2)
	a := rs[0].root
	if _, err := a.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutPolicy(ctx, "enc", client.PutPolicyRequest{Document: allowEncrypt}); err != nil {
		t.Fatal(err)
	}
	tok, err := a.CreateToken(ctx, client.CreateTokenRequest{Policies: []string{"enc"}})
	if err != nil {
		t.Fatal(err)
	}
	onB := rs[1].as(t, tok.Token)
	use := func() error {
		_, err := onB.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")})
		return err
	}
	eventually(t, "a token issued on A", use)
	// Every write so far (B's encryption reserved uses) delivered first.
	for _, r := range rs {
		if err := r.sys.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}

	store.SetWatchPaused(true)
	time.Sleep(testBound + testBound/2)
	if err := use(); err != nil {
		t.Fatalf("with no change to miss, a replica whose watch is silent still proves itself fresh from the store's revision: %v", err)
	}

	revoked := time.Now()
	if err := a.RevokeToken(ctx, client.RevokeTokenRequest{Token: tok.Token}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a replica that cannot see a revocation", func() error { return wantCode(use(), "replica_stale") })
	t.Logf("B refused the token %s after its revocation (bound %s)", time.Since(revoked).Round(time.Millisecond), testBound)
	err = use()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 503 || !strings.Contains(ae.Message, "freshness bound of 2s") || !strings.Contains(ae.Message, "revocations") {
		t.Fatalf("a stale replica's answer: %v", err)
	}
	if _, err := rs[1].root.DescribeKey(ctx, "alias/app"); wantCode(err, "replica_stale") != nil {
		t.Fatalf("the root token on a stale replica: %v", err)
	}
	if st, err := rs[1].root.SealStatus(ctx); err != nil || st.Sealed {
		t.Fatalf("seal status on a stale replica: %+v %v", st, err)
	}
	if err := rs[1].root.Health(ctx); err != nil {
		t.Fatalf("health on a stale replica: %v", err)
	}

	store.SetWatchPaused(false)
	eventually(t, "a stale replica catching up", func() error { return wantCode(use(), "unauthenticated") })
	if _, err := rs[1].root.DescribeKey(ctx, "alias/app"); err != nil {
		t.Fatalf("a replica that caught up: %v", err)
	}
}

// TestKeyringMismatchRefuses: a stored keyring this replica's root key
// cannot open (another store's, as when two replicas were initialized
// apart) makes it refuse credentials with 503 keyring_mismatch.
func TestKeyringMismatchRefuses(t *testing.T) {
	store := newInmem(t)
	rs := replicas(t, store, 2)
	other := inmem.New()
	if _, err := sys.New(barrier.New(other), nil).Init(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Get(ctx, barrier.KeyringPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Apply(ctx, storage.Put(barrier.KeyringPath, foreign.Value)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a foreign keyring", func() error {
		_, err := rs[1].root.ListKeys(ctx)
		return wantCode(err, "keyring_mismatch")
	})
	if err := rs[1].sys.Fresh(); !errors.Is(err, barrier.ErrKeyringMismatch) {
		t.Fatalf("Fresh: %v", err)
	}
}

// lossyStore delivers its watches through a switch: while lose is on,
// changes are dropped (as a watch whose history was compacted away); when
// it is turned off, the watch sends storage.EventReset at the store's
// revision and goes on after it, as the etcd backend does after a
// compaction.
type lossyStore struct {
	*inmem.Backend
	mu   sync.Mutex
	lose bool
	wake chan struct{}
}

func (l *lossyStore) setLose(on bool) {
	l.mu.Lock()
	l.lose = on
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *lossyStore) Watch(ctx context.Context, prefix string, from int64) <-chan storage.Event {
	in := l.Backend.Watch(ctx, prefix, from)
	out := make(chan storage.Event)
	go func() {
		defer close(out)
		lost := false
		var skipTo int64
		for {
			var ev storage.Event
			var ok bool
			select {
			case ev, ok = <-in:
				if !ok {
					return
				}
			case <-l.wake:
				ev = storage.Event{} // look at the switch
			}
			l.mu.Lock()
			lose := l.lose
			l.mu.Unlock()
			if lose {
				lost = true
				continue
			}
			if lost {
				rev, err := l.Backend.Revision(ctx)
				if err != nil {
					return
				}
				lost, skipTo = false, rev
				select {
				case out <- storage.Event{Kind: storage.EventReset, Revision: rev}:
				case <-ctx.Done():
					return
				}
			}
			if ev.Kind == 0 || (ev.Kind != storage.EventProgress && ev.Revision <= skipTo) {
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// TestFollowAfterLostHistory: changes a replica's watch lost (a compacted
// revision) reach its caches through the resync that EventReset starts: a
// token revoked and a key disabled meanwhile.
func TestFollowAfterLostHistory(t *testing.T) {
	base := inmem.New()
	base.SetProgressInterval(50 * time.Millisecond)
	t.Cleanup(func() { base.Close() })
	lossy := &lossyStore{Backend: base, wake: make(chan struct{}, 1)}
	rs := replicasOn(t, base, lossy)
	a := rs[0].root
	k, err := a.CreateKey(ctx, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.CreateToken(ctx, client.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	onB := rs[1].as(t, tok.Token)
	eventually(t, "a token issued on A", func() error { _, err := onB.LookupSelf(ctx); return err })
	eventually(t, "a key created on A", func() error { _, err := rs[1].root.DescribeKey(ctx, k.ID); return err })

	lossy.setLose(true)
	if err := a.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: tok.Accessor}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DisableKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the watch drop both events
	lossy.setLose(false)
	eventually(t, "a revocation whose event was lost", func() error { _, err := onB.LookupSelf(ctx); return wantCode(err, "unauthenticated") })
	eventually(t, "a key disabled while the watch lost history", func() error {
		d, err := rs[1].root.DescribeKey(ctx, k.ID)
		if err == nil && d.State != client.KeyDisabled {
			err = fmt.Errorf("state %s", d.State)
		}
		return err
	})
}

// TestFollowStopsOnSeal: sealing stops the follow loop and an unseal
// starts it again, from what the store holds then.
func TestFollowStopsOnSeal(t *testing.T) {
	store := newInmem(t)
	rs := replicas(t, store, 2)
	b := rs[1]
	b.sys.Seal()
	if b.sys.Follows() {
		t.Fatal("a sealed replica still follows the store")
	}
	if err := b.sys.Fresh(); err != nil {
		t.Fatalf("Fresh of a sealed replica: %v", err)
	}
	tok, err := rs[0].root.CreateToken(ctx, client.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.sys.Unseal(ctx, b.share); err != nil {
		t.Fatal(err)
	}
	if !b.sys.Follows() {
		t.Fatal("an unsealed replica does not follow the store again")
	}
	onB := b.as(t, tok.Token)
	if _, err := onB.LookupSelf(ctx); err != nil {
		t.Fatalf("a token issued while B was sealed: %v", err)
	}
	if err := rs[0].root.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: tok.Accessor}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a revocation after B unsealed again", func() error { _, err := onB.LookupSelf(ctx); return wantCode(err, "unauthenticated") })
}

// TestRevocationSeesTokensStoredElsewhere: a role revocation on A waits
// until A has seen every token stored before it started, so a role token
// B had just issued (its event still on the way to A) is revoked too.
func TestRevocationSeesTokensStoredElsewhere(t *testing.T) {
	store := inmem.New()
	t.Cleanup(func() { store.Close() })
	rs := replicas(t, store, 2)
	a := rs[0].root
	if _, err := a.PutPolicy(ctx, "assume", client.PutPolicyRequest{Document: strings.ReplaceAll(allowEncrypt, "kms:Encrypt", "auth:AssumeRole")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateRole(ctx, client.Role{Name: "ci", Policies: []string{"assume"}, TrustPrincipals: []string{"access-key:*"}}); err != nil {
		t.Fatal(err)
	}
	ak, err := a.CreateAccessKey(ctx, client.CreateAccessKeyRequest{Policies: []string{"assume"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "an access key created on A", func() error {
		_, err := rs[1].withKey(t, ak.ID, ak.SecretAccessKey).LookupSelf(ctx)
		return err
	})

	store.SetWatchPaused(true)
	tok, err := rs[1].withKey(t, ak.ID, ak.SecretAccessKey).AssumeRole(ctx, client.AssumeRoleRequest{Role: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		store.SetWatchPaused(false)
	}()
	n, err := a.RevokeRoleTokens(ctx, "ci")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("A revoked %d tokens of the role, want the one B issued just before", n)
	}
	onB := rs[1].as(t, tok.Token)
	eventually(t, "a role token revoked on A", func() error { _, err := onB.LookupSelf(ctx); return wantCode(err, "unauthenticated") })
}

// TestFailingRefreshRefuses: a change this replica cannot apply (a record
// it cannot decode) keeps it from proving its caches fresh, so it refuses
// credentials after its bound and a revocation on it refuses to run; once
// the record is repaired it serves again.
func TestFailingRefreshRefuses(t *testing.T) {
	store := newInmem(t)
	rs := replicasBound(t, 500*time.Millisecond, store, store)
	b := rs[1]
	if err := rs[0].sys.Barrier.Apply(ctx, storage.Put("iam/policies/broken", []byte("not a policy record"))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a record B cannot decode", func() error {
		_, err := b.root.LookupSelf(ctx)
		return wantCode(err, "replica_stale")
	})
	if err := b.sys.Sync(ctx); !errors.Is(err, sys.ErrStale) {
		t.Fatalf("Sync with a refresh failing: %v", err)
	}
	if err := rs[0].sys.Barrier.Apply(ctx, storage.Delete("iam/policies/broken")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the record repaired", func() error { _, err := b.root.LookupSelf(ctx); return err })
	if err := b.sys.Sync(ctx); err != nil {
		t.Fatalf("Sync after the repair: %v", err)
	}
}
