package auth

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// TestTokenLineage: a token made for a non-root caller stays inside the
// caller: scopes, networks, expiry and renewal limit, subject; revoking the
// caller's token revokes it and its own descendants.
func TestTokenLineage(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	tk := NewTokens(inmem.New(), func() time.Time { return now })
	scope := "statements:\n  - effect: allow\n    actions: [kms:Encrypt, token:Create]\n    resources: [\"*\"]\n"
	ptok, parent, err := tk.Issue(ctx, Spec{Role: "app", Subject: "access-key:cfak_X", TTL: 15 * time.Minute, MaxTTL: time.Hour,
		CIDRs: []string{"10.0.0.0/8"}, Scope: scope})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Minute)

	// A plain token asking for 30 days gets the parent's expiry, scope,
	// network and subject.
	ctok, child, err := tk.Issue(ctx, Spec{TTL: 30 * 24 * time.Hour, Policies: []string{"p"}, Parent: &parent})
	if err != nil {
		t.Fatal(err)
	}
	if !child.ExpiresAt.Equal(parent.ExpiresAt) || len(child.Scopes) != 1 || child.Subject != "access-key:cfak_X" ||
		child.Parent != parent.Accessor || len(child.CIDRs) != 1 || child.CIDRs[0].String() != "10.0.0.0/8" {
		t.Fatalf("child = %+v, want bounded by %+v", child, parent)
	}
	if _, err := tk.Lookup(ctok, netip.MustParseAddr("127.0.0.1")); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("child used outside the parent's network: %v", err)
	}

	// A chained role token asking for its role's own 1h limits: renewable
	// only up to the parent's limit, and its own scope is added.
	own := "statements:\n  - effect: allow\n    actions: [kms:Encrypt]\n    resources: [alias/a]\n"
	gtok, grand, err := tk.Issue(ctx, Spec{Role: "other", Subject: "access-key:cfak_X", TTL: 30 * time.Minute, MaxTTL: time.Hour,
		CIDRs: []string{"10.1.0.0/16", "192.168.0.0/16"}, Scope: own, Parent: &parent})
	if err != nil {
		t.Fatal(err)
	}
	if !grand.ExpiresAt.Equal(parent.ExpiresAt) || !grand.MaxExpiresAt.Equal(parent.MaxExpiresAt) || len(grand.Scopes) != 2 ||
		!slices.Equal(grand.ScopeDocuments, []string{scope, own}) {
		t.Fatalf("chained = %+v", grand)
	}
	if len(grand.CIDRs) != 1 || grand.CIDRs[0].String() != "10.1.0.0/16" {
		t.Fatalf("chained CIDRs %v, want only 10.1.0.0/16 (inside the parent's 10.0.0.0/8)", grand.CIDRs)
	}
	now = now.Add(9 * time.Minute)
	if _, err := tk.Renew(ctx, grand.Accessor, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	renewed, _ := tk.Get(grand.Accessor)
	if !renewed.ExpiresAt.Equal(parent.MaxExpiresAt) {
		t.Fatalf("renewed to %s, want the parent's limit %s", renewed.ExpiresAt, parent.MaxExpiresAt)
	}
	if _, _, err := tk.Issue(ctx, Spec{Role: "x", CIDRs: []string{"192.168.0.0/16"}, Parent: &parent}); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "10.0.0.0/8") {
		t.Fatalf("child with no network in the parent's: %v", err)
	}
	_, great, err := tk.Issue(ctx, Spec{DisplayName: "great", Parent: &grand})
	if err != nil {
		t.Fatal(err)
	}

	// Revoking the parent revokes the whole line, in storage too.
	n, err := tk.RevokeWhere(ctx, func(p *Principal) bool { return p.Accessor == parent.Accessor })
	if err != nil || n != 4 {
		t.Fatalf("revoked %d (%v), want the parent and its 3 descendants", n, err)
	}
	in := netip.MustParseAddr("10.1.2.3")
	for _, tok := range []string{ptok, ctok, gtok} {
		if _, err := tk.Lookup(tok, in); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("token of the revoked line still valid: %v", err)
		}
	}
	if _, ok := tk.Get(great.Accessor); ok {
		t.Error("great-grandchild survived")
	}
	// A revoked parent cannot make tokens any more.
	if _, _, err := tk.Issue(ctx, Spec{DisplayName: "late", Parent: &parent}); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("issue for a revoked parent: %v", err)
	}
	// Root and access-key parents: root bounds nothing; an access key's
	// expiry bounds the token and its id becomes the subject.
	_, fromRoot, err := tk.Issue(ctx, Spec{TTL: 30 * 24 * time.Hour, Parent: &Principal{Kind: KindRoot, Root: true, Accessor: "acc_root"}})
	if err != nil || fromRoot.Parent != "" || !fromRoot.ExpiresAt.Equal(now.Add(30*24*time.Hour)) {
		t.Fatalf("from root: %+v %v", fromRoot, err)
	}
	keyExp := now.Add(2 * time.Hour)
	_, fromKey, err := tk.Issue(ctx, Spec{Parent: &Principal{Kind: KindAccessKey, ID: "cfak_Y", ExpiresAt: keyExp}})
	if err != nil || fromKey.Subject != "access-key:cfak_Y" || !fromKey.ExpiresAt.Equal(keyExp) {
		t.Fatalf("from an access key: %+v %v", fromKey, err)
	}
}

// pausingStore holds the first token write it sees until released.
type pausingStore struct {
	*inmem.Backend
	once           sync.Once
	paused, resume chan struct{}
}

func (s *pausingStore) Apply(ctx context.Context, ops ...storage.Op) error {
	if len(ops) == 1 && ops[0].Kind == storage.OpPut {
		s.once.Do(func() {
			close(s.paused)
			<-s.resume
		})
	}
	return s.Backend.Apply(ctx, ops...)
}

// TestRenewRevokeRace: a revocation that arrives while a renewal is being
// stored is not undone by it (the renewal used to store the token again,
// so it came back after a restart).
func TestRenewRevokeRace(t *testing.T) {
	backend := inmem.New()
	tk := NewTokens(backend, nil)
	_, p, err := tk.Issue(ctx, Spec{Role: "app", TTL: time.Minute, MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	st := &pausingStore{Backend: backend, paused: make(chan struct{}), resume: make(chan struct{})}
	tk.store = st
	renewed := make(chan error, 1)
	go func() { _, err := tk.Renew(ctx, p.Accessor, 0); renewed <- err }()
	<-st.paused
	revoked := make(chan error, 1)
	go func() { revoked <- tk.Revoke(ctx, "", p.Accessor) }()
	select {
	case err := <-revoked:
		t.Fatalf("revoke finished while the renewal was being stored (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(st.resume)
	if err := <-renewed; err != nil {
		t.Fatal(err)
	}
	if err := <-revoked; err != nil {
		t.Fatal(err)
	}
	again := NewTokens(backend, nil)
	if err := again.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := again.Get(p.Accessor); ok {
		t.Fatal("the revoked token is back after a reload")
	}
}
