package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

var ctx = context.Background()

func TestTokenLifecycle(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := inmem.New()
	tk := NewTokens(store, clock)

	tok, p, err := tk.Create(ctx, "ci", false, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	if !credential.Valid(credential.TokenPrefix, tok) || !strings.HasPrefix(p.Accessor, "acc_") || p.Root {
		t.Fatalf("token %q principal %+v", tok, p)
	}
	if got, err := tk.Lookup(tok, netip.Addr{}); err != nil || got.Accessor != p.Accessor {
		t.Fatalf("lookup: %+v %v", got, err)
	}
	// Only the hash is stored.
	keys, _ := store.List(ctx, "")
	for _, k := range keys {
		e, _ := store.Get(ctx, k)
		if strings.Contains(string(e.Value), tok) || strings.Contains(k, tok) {
			t.Fatal("the token itself reached storage")
		}
	}
	// A fresh store over the same storage knows the token.
	tk2 := NewTokens(store, clock)
	if err := tk2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tk2.Lookup(tok, netip.Addr{}); err != nil {
		t.Fatalf("after load: %v", err)
	}

	now = now.Add(time.Hour)
	if _, err := tk.Lookup(tok, netip.Addr{}); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	if err := tk.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if keys, _ := store.List(ctx, tokenPath); len(keys) != 0 {
		t.Fatalf("sweep left %v", keys)
	}
}

func TestRevoke(t *testing.T) {
	tk := NewTokens(inmem.New(), nil)
	a, pa, _ := tk.Create(ctx, "a", false, 0, "")
	b, _, _ := tk.Create(ctx, "b", false, 0, "")
	root, pr, _ := tk.Create(ctx, "root", true, 0, "")
	if !pr.ExpiresAt.IsZero() {
		t.Fatal("root token expires")
	}
	if err := tk.Revoke(ctx, "", pa.Accessor); err != nil {
		t.Fatal(err)
	}
	if err := tk.Revoke(ctx, b, ""); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{a, b} {
		if _, err := tk.Lookup(tok, netip.Addr{}); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("revoked token still works: %v", err)
		}
	}
	if _, err := tk.Lookup(root, netip.Addr{}); err != nil {
		t.Fatal("revoking others touched root:", err)
	}
	if err := tk.Revoke(ctx, "", pa.Accessor); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	if err := tk.Revoke(ctx, "", ""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty revoke: %v", err)
	}
	for _, ttl := range []time.Duration{-time.Second, MaxTTL + time.Second} {
		if _, _, err := tk.Create(ctx, "x", false, ttl, ""); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ttl %v: %v", ttl, err)
		}
	}
	if _, err := tk.Lookup("", netip.Addr{}); !errors.Is(err, ErrUnauthenticated) {
		t.Fatal("empty token accepted")
	}
}

func TestRoleTokenLifecycle(t *testing.T) {
	store := inmem.New()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tk := NewTokens(store, clock)
	scope := "statements:\n  - effect: allow\n    actions: [kms:Decrypt]\n    resources: [\"*\"]\n"
	tok, p, err := tk.Issue(ctx, Spec{Role: "app", Subject: "access-key:cfak_X", TTL: 15 * time.Minute, MaxTTL: time.Hour,
		CIDRs: []string{"10.0.0.0/8", "192.168.1.7"}, Scope: scope, Namespace: "pay"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != KindRole || p.Name() != "role:app" || len(p.Scopes) != 1 || len(p.CIDRs) != 2 || !p.ExpiresAt.Equal(now.Add(15*time.Minute)) {
		t.Fatalf("issued principal = %+v", p)
	}
	in, out := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("127.0.0.1")
	if _, err := tk.Lookup(tok, in); err != nil {
		t.Fatalf("lookup from inside the bound network: %v", err)
	}
	if _, err := tk.Lookup(tok, netip.MustParseAddr("192.168.1.7")); err != nil {
		t.Fatalf("lookup from the bound address: %v", err)
	}
	if _, err := tk.Lookup(tok, out); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "bound to 10.0.0.0/8") {
		t.Fatalf("lookup from outside: %v", err)
	}

	// Renewal extends, but never past MaxExpiresAt.
	now = now.Add(10 * time.Minute)
	if p, err = tk.Renew(ctx, p.Accessor, 30*time.Minute); err != nil || !p.ExpiresAt.Equal(now.Add(30*time.Minute)) {
		t.Fatalf("renew: %v %v", p.ExpiresAt, err)
	}
	now = now.Add(25 * time.Minute)
	if p, err = tk.Renew(ctx, p.Accessor, time.Hour); err != nil || !p.ExpiresAt.Equal(p.MaxExpiresAt) {
		t.Fatalf("renew past max: expires %v max %v err %v", p.ExpiresAt, p.MaxExpiresAt, err)
	}

	// The renewed state survives a reload.
	tk2 := NewTokens(store, clock)
	if err := tk2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	p2, err := tk2.Lookup(tok, in)
	if err != nil || !p2.ExpiresAt.Equal(p.ExpiresAt) || len(p2.Scopes) != 1 || p2.Subject != "access-key:cfak_X" || p2.Namespace != "pay" {
		t.Fatalf("after reload: %+v %v", p2, err)
	}

	now = p.MaxExpiresAt
	if _, err := tk.Lookup(tok, in); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("lookup at max expiry: %v", err)
	}
	if _, err := tk.Renew(ctx, p.Accessor, time.Minute); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("renewing an expired token: %v", err)
	}

	// Plain tokens are not renewable.
	_, plain, _ := tk.Create(ctx, "ci", false, time.Hour, "")
	if _, err := tk.Renew(ctx, plain.Accessor, time.Minute); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("renewing a plain token: %v", err)
	}

	// A bad scope or CIDR is refused at issue.
	if _, _, err := tk.Issue(ctx, Spec{Role: "app", Scope: "statements: [}"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad scope: %v", err)
	}
	if _, _, err := tk.Issue(ctx, Spec{Role: "app", CIDRs: []string{"10.0.0.0/33"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad cidr: %v", err)
	}
}

func TestRevokeWhere(t *testing.T) {
	tk := NewTokens(inmem.New(), nil)
	var toks []string
	for i, spec := range []Spec{
		{Role: "a", Subject: "access-key:K1"}, {Role: "a", Subject: "access-key:K2"}, {Role: "b", Subject: "access-key:K1"}, {DisplayName: "plain"},
	} {
		tok, _, err := tk.Issue(ctx, spec)
		if err != nil {
			t.Fatal(i, err)
		}
		toks = append(toks, tok)
	}
	n, err := tk.RevokeWhere(ctx, func(p *Principal) bool { return p.Role == "a" })
	if err != nil || n != 2 {
		t.Fatalf("revoke role a: %d %v", n, err)
	}
	n, _ = tk.RevokeWhere(ctx, func(p *Principal) bool { return p.Subject == "access-key:K1" })
	if n != 1 {
		t.Fatalf("revoke subject K1: %d, want 1 (one was already revoked)", n)
	}
	for i, tok := range toks[:3] {
		if _, err := tk.Lookup(tok, netip.Addr{}); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("token %d still valid: %v", i, err)
		}
	}
	if _, err := tk.Lookup(toks[3], netip.Addr{}); err != nil {
		t.Errorf("unrelated token revoked: %v", err)
	}
}

func TestReportLeaked(t *testing.T) {
	store := inmem.New()
	tk := NewTokens(store, nil)
	leaked, p, _ := tk.Create(ctx, "ci", false, time.Hour, "")
	kept, _, _ := tk.Create(ctx, "other", false, time.Hour, "")
	fp := func(tok string) string { s := sha256.Sum256([]byte(tok)); return hex.EncodeToString(s[:]) }

	rep, err := tk.ReportLeaked(ctx, []string{fp(leaked), fp("cft_not-ours"), strings.ToUpper(fp(leaked))})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Revoked) != 1 || rep.Revoked[0] != p.Accessor || rep.Unknown != 1 || rep.AlreadyRevoked != 1 {
		t.Fatalf("report %+v", rep)
	}
	_, err = tk.Lookup(leaked, netip.Addr{})
	var le *LeakedError
	if !errors.As(err, &le) || le.Accessor != p.Accessor || !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, ErrLeaked) {
		t.Fatalf("leaked token lookup: %v", err)
	}
	if _, err := tk.Lookup(kept, netip.Addr{}); err != nil {
		t.Fatal("an unreported token was revoked:", err)
	}
	// The mark survives a restart (a fresh store over the same storage).
	tk2 := NewTokens(store, nil)
	if err := tk2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tk2.Lookup(leaked, netip.Addr{}); !errors.Is(err, ErrLeaked) {
		t.Fatalf("after reload: %v", err)
	}
	for _, bad := range [][]string{nil, {"zz"}, {strings.Repeat("a", 63)}, make([]string, MaxLeakReport+1)} {
		if _, err := tk.ReportLeaked(ctx, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("report %v: %v", len(bad), err)
		}
	}
}

// TestChildOfExpiredParent: a token cannot be made for a caller whose
// credential has expired (as of the store's clock), even when the caller's
// principal was looked up before it expired.
func TestChildOfExpiredParent(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tk := NewTokens(inmem.New(), func() time.Time { return now })
	_, parent, err := tk.Issue(ctx, Spec{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	for _, ttl := range []time.Duration{0, time.Minute, 30 * 24 * time.Hour} {
		if _, _, err := tk.Issue(ctx, Spec{TTL: ttl, Parent: &parent}); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("child (ttl %s) of an expired parent: %v", ttl, err)
		}
	}
	// An access key (no token: no accessor) that expired is refused too.
	key := Principal{Kind: KindAccessKey, ID: "cfak_X", ExpiresAt: now.Add(-time.Second)}
	if _, _, err := tk.Issue(ctx, Spec{Parent: &key}); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("child of an expired access key: %v", err)
	}
}

// TestBoundTokenUnknownSource: a token bound to networks is refused when
// the request's source is unknown (the zero address: a Unix socket), and
// for an address outside every network, including one that shares the
// network's first address but not its prefix length.
func TestBoundTokenUnknownSource(t *testing.T) {
	tk := NewTokens(inmem.New(), nil)
	tok, _, err := tk.Issue(ctx, Spec{CIDRs: []string{"10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Lookup(tok, netip.MustParseAddr("10.1.2.3")); err != nil {
		t.Fatalf("from inside: %v", err)
	}
	for _, src := range []netip.Addr{{}, netip.MustParseAddr("11.0.0.1"), netip.MustParseAddr("::ffff:11.0.0.1")} {
		if _, err := tk.Lookup(tok, src); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("from %v: %v, want refused", src, err)
		}
	}
	free, _, _ := tk.Issue(ctx, Spec{})
	if _, err := tk.Lookup(free, netip.Addr{}); err != nil {
		t.Errorf("an unbound token from an unknown source: %v", err)
	}
}

// TestPrefixWithin: containment compares prefix lengths, not only the
// first address.
func TestPrefixWithin(t *testing.T) {
	p := netip.MustParsePrefix
	cases := []struct {
		inner, outer string
		want         bool
	}{
		{"10.1.0.0/16", "10.0.0.0/8", true},
		{"10.0.0.0/8", "10.0.0.0/8", true},
		{"10.0.0.0/7", "10.0.0.0/8", false},
		{"0.0.0.0/0", "0.0.0.0/8", false},
		{"11.0.0.0/8", "10.0.0.0/8", false},
	}
	for _, c := range cases {
		if got := PrefixWithin(p(c.inner), p(c.outer)); got != c.want {
			t.Errorf("PrefixWithin(%s, %s) = %v", c.inner, c.outer, got)
		}
	}
	// A child asking for 10.0.0.0/8 inside a parent's 10.0.0.0/7 gets /8,
	// and one asking for /7 inside a parent's /8 gets /8.
	for _, c := range [][3]string{{"10.0.0.0/7", "10.0.0.0/8", "10.0.0.0/8"}, {"10.0.0.0/8", "10.0.0.0/7", "10.0.0.0/8"}} {
		got := intersectCIDRs([]netip.Prefix{p(c[0])}, []netip.Prefix{p(c[1])})
		if len(got) != 1 || got[0] != p(c[2]) {
			t.Errorf("parent %s, child %s: %v, want %s", c[0], c[1], got, c[2])
		}
	}
}
