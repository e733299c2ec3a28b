package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	if got, err := tk.Lookup(tok); err != nil || got.Accessor != p.Accessor {
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
	if _, err := tk2.Lookup(tok); err != nil {
		t.Fatalf("after load: %v", err)
	}

	now = now.Add(time.Hour)
	if _, err := tk.Lookup(tok); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
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
		if _, err := tk.Lookup(tok); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("revoked token still works: %v", err)
		}
	}
	if _, err := tk.Lookup(root); err != nil {
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
	if _, err := tk.Lookup(""); !errors.Is(err, ErrUnauthenticated) {
		t.Fatal("empty token accepted")
	}
}

func TestRootOnly(t *testing.T) {
	var a RootOnly
	user := Principal{Accessor: "acc_x"}
	for action, allowed := range map[string]bool{
		"kms:Encrypt": true, "key:Create": true, "token:LookupSelf": true,
		"sys:Seal": false, "token:Create": false, "token:Revoke": false,
	} {
		err := a.Authorize(ctx, user, action, "k")
		if allowed != (err == nil) || (!allowed && !errors.Is(err, ErrForbidden)) {
			t.Errorf("%s: %v", action, err)
		}
		if err := a.Authorize(ctx, Principal{Root: true}, action, "k"); err != nil {
			t.Errorf("root %s: %v", action, err)
		}
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
	_, err = tk.Lookup(leaked)
	var le *LeakedError
	if !errors.As(err, &le) || le.Accessor != p.Accessor || !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, ErrLeaked) {
		t.Fatalf("leaked token lookup: %v", err)
	}
	if _, err := tk.Lookup(kept); err != nil {
		t.Fatal("an unreported token was revoked:", err)
	}
	// The mark survives a restart (a fresh store over the same storage).
	tk2 := NewTokens(store, nil)
	if err := tk2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tk2.Lookup(leaked); !errors.Is(err, ErrLeaked) {
		t.Fatalf("after reload: %v", err)
	}
	for _, bad := range [][]string{nil, {"zz"}, {strings.Repeat("a", 63)}, make([]string, MaxLeakReport+1)} {
		if _, err := tk.ReportLeaked(ctx, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("report %v: %v", len(bad), err)
		}
	}
}
