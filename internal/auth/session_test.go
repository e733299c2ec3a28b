package auth

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// TestSessionTokenOnlyForSigV4: a session token (SigV4Only) is refused by
// Lookup, every bearer path, and taken by LookupSession, which refuses
// every other token; both still refuse it from outside its networks.
func TestSessionTokenOnlyForSigV4(t *testing.T) {
	tk := NewTokens(inmem.New(), nil)
	sess, sp, err := tk.Issue(ctx, Spec{Role: "r", TTL: time.Hour, SigV4Only: true, CIDRs: []string{"10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	plain, _, err := tk.Issue(ctx, Spec{Role: "r", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	in, out := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.0.2.1")
	if _, err := tk.Lookup(sess, in); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "X-Amz-Security-Token") {
		t.Errorf("Lookup of a session token: %v", err)
	}
	if p, err := tk.LookupSession(sess, in); err != nil || p.Accessor != sp.Accessor {
		t.Errorf("LookupSession: %+v %v", p, err)
	}
	if _, err := tk.LookupSession(sess, out); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("LookupSession from outside the token's networks: %v", err)
	}
	if _, err := tk.LookupSession(plain, in); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("LookupSession of a bearer token: %v", err)
	}
	if _, err := tk.Lookup(plain, in); err != nil {
		t.Errorf("Lookup of a bearer token: %v", err)
	}
	// The mark survives storage: another replica loads it.
	again := NewTokens(tk.store, nil)
	if err := again.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Lookup(sess, in); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Lookup of a loaded session token: %v", err)
	}
	if err := tk.Revoke(ctx, "", sp.Accessor); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.LookupSession(sess, in); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("LookupSession of a revoked token: %v", err)
	}
}

// TestSessionSecret: the secret is a function of the token under one key
// per store: the same on every replica and after a reload, different per
// token and per store, and made once even when replicas race to make it.
func TestSessionSecret(t *testing.T) {
	store := inmem.New()
	replicas := make([]*Tokens, 8)
	for i := range replicas {
		replicas[i] = NewTokens(store, nil)
	}
	secrets := make([][]byte, len(replicas))
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Go(func() {
			s, err := r.SessionSecret(context.Background(), "cft_token-a")
			if err != nil {
				t.Error(err)
			}
			secrets[i] = s
		})
	}
	wg.Wait()
	for i := range secrets {
		if !bytes.Equal(secrets[i], secrets[0]) || len(secrets[i]) < 40 {
			t.Fatalf("replica %d derived %q, replica 0 %q", i, secrets[i], secrets[0])
		}
	}
	if e, err := store.Get(ctx, sessionKeyPath); err != nil || e.Revision == 0 {
		t.Fatalf("the session key is not stored: %v", err)
	}
	b, _ := replicas[0].SessionSecret(ctx, "cft_token-b")
	if bytes.Equal(b, secrets[0]) {
		t.Error("two tokens have the same secret")
	}
	replicas[1].Unload()
	if err := replicas[1].Load(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := replicas[1].SessionSecret(ctx, "cft_token-a"); !bytes.Equal(s, secrets[0]) {
		t.Error("the secret changed after sealing and loading again")
	}
	other, _ := NewTokens(inmem.New(), nil).SessionSecret(ctx, "cft_token-a")
	if bytes.Equal(other, secrets[0]) {
		t.Error("two stores derive the same secret: the key is not random per store")
	}
}

// TestSessionKeyID: the access key id names the accessor, and only its
// own accessor matches.
func TestSessionKeyID(t *testing.T) {
	id := SessionKeyID("acc_00112233445566778899aabb")
	if id != "cfst_00112233445566778899AABB" {
		t.Fatalf("id %q", id)
	}
	if !SessionKeyIDMatches(id, "acc_00112233445566778899aabb") || SessionKeyIDMatches(id, "acc_00112233445566778899aabc") ||
		SessionKeyIDMatches("cfak_00112233445566778899AABB", "acc_00112233445566778899aabb") {
		t.Error("SessionKeyIDMatches")
	}
}

// TestSessionKeyWipedOnlyWhenUnused: sealing (Unload) wipes the cached
// session key, but never under a derivation that is reading it: a secret
// derived while the server seals is the real one or an error, never one
// under a wiped (zero) key, which anyone holding the session token could
// compute. go test -race also reports the unsynchronized wipe.
func TestSessionKeyWipedOnlyWhenUnused(t *testing.T) {
	tk := NewTokens(inmem.New(), nil)
	want, err := tk.SessionSecret(ctx, "cft_token-a")
	if err != nil {
		t.Fatal(err)
	}
	var bad atomic.Int32
	for range 200 {
		var wg sync.WaitGroup
		var stop atomic.Bool
		for range 3 {
			wg.Go(func() {
				for !stop.Load() {
					if s, err := tk.SessionSecret(ctx, "cft_token-a"); err == nil && !bytes.Equal(s, want) {
						bad.Add(1)
					}
				}
			})
		}
		time.Sleep(50 * time.Microsecond)
		tk.Unload()
		stop.Store(true)
		wg.Wait()
	}
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d secrets were derived from a wiped session key", n)
	}
}

// TestSessionMakesNoTokens: a session token of temporary credentials is
// no parent: a token made for its principal would be a bearer token that
// escapes SigV4Only.
func TestSessionMakesNoTokens(t *testing.T) {
	tk := NewTokens(inmem.New(), nil)
	_, sp, err := tk.Issue(ctx, Spec{Role: "r", TTL: time.Hour, SigV4Only: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tk.Issue(ctx, Spec{DisplayName: "child", Parent: &sp}); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a token made for a session: %v", err)
	}
	if _, _, err := tk.Issue(ctx, Spec{Role: "r", TTL: time.Minute, Parent: &sp}); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a role token made for a session: %v", err)
	}
	_, bp, err := tk.Issue(ctx, Spec{Role: "r", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tk.Issue(ctx, Spec{DisplayName: "child", Parent: &bp}); err != nil {
		t.Errorf("a token made for a bearer role token: %v", err)
	}
}

// TestSessionKeyWipedOnLoad: loading the tokens again (after a restore,
// or a watch that lost history) drops the cached session key, to read it
// again, and wipes the copy it drops, as sealing does.
func TestSessionKeyWipedOnLoad(t *testing.T) {
	tk := NewTokens(inmem.New(), nil)
	want, err := tk.SessionSecret(ctx, "cft_token-a")
	if err != nil {
		t.Fatal(err)
	}
	old := tk.sessKey.Load()
	if err := tk.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if tk.sessKey.Load() != nil || !bytes.Equal(*old, make([]byte, len(*old))) {
		t.Error("Load kept the session key or did not wipe it")
	}
	if s, err := tk.SessionSecret(ctx, "cft_token-a"); err != nil || !bytes.Equal(s, want) {
		t.Errorf("the secret after Load: %v", err)
	}
}
