package auth

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// issued is a token and its principal.
type issued struct {
	tok string
	p   Principal
}

func issue(t *testing.T, ts *Tokens, spec Spec) issued {
	t.Helper()
	tok, p, err := ts.Issue(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	return issued{tok, p}
}

// family issues a plain token with 299 descendants over two generations
// (100 children, 199 grandchildren): 300 tokens, more than etcd's default
// 128 operations per transaction.
func family(t *testing.T, ts *Tokens) (root issued, all []issued) {
	t.Helper()
	root = issue(t, ts, Spec{DisplayName: "parent", TTL: time.Hour})
	all = append(all, root)
	var kids []issued
	for range 100 {
		k := issue(t, ts, Spec{DisplayName: "child", TTL: time.Hour, Parent: &root.p})
		kids = append(kids, k)
		all = append(all, k)
	}
	for i := range 199 {
		all = append(all, issue(t, ts, Spec{DisplayName: "grandchild", TTL: time.Hour, Parent: &kids[i/2].p}))
	}
	return root, all
}

// bystanders issues tokens a revocation must leave alone: plain ones, a
// role's other than the one revoked, and a child of one.
func bystanders(t *testing.T, ts *Tokens) []issued {
	t.Helper()
	var out []issued
	for range 5 {
		out = append(out, issue(t, ts, Spec{DisplayName: "other", TTL: time.Hour}))
	}
	r := issue(t, ts, Spec{Role: "web", Subject: "access-key:other", TTL: time.Hour})
	out = append(out, r, issue(t, ts, Spec{TTL: time.Hour, Parent: &r.p}))
	return out
}

// checkRevoked: every token of gone is neither stored nor served, every
// token of kept is both.
func checkRevoked(t *testing.T, store storage.Backend, ts *Tokens, gone, kept []issued) {
	t.Helper()
	for _, g := range gone {
		if stored(t, store, g.p.Accessor) {
			t.Fatalf("revoked token %s still stored", g.p.Accessor)
		}
		if _, err := ts.Lookup(g.tok, netip.Addr{}); err == nil {
			t.Fatalf("revoked token %s still served", g.p.Accessor)
		}
	}
	for _, k := range kept {
		if !stored(t, store, k.p.Accessor) {
			t.Fatalf("token %s was not to be revoked but is gone from the store", k.p.Accessor)
		}
		if _, err := ts.Lookup(k.tok, netip.Addr{}); err != nil {
			t.Fatalf("token %s was not to be revoked: %v", k.p.Accessor, err)
		}
	}
}

// TestRevokeManyOverEtcd: revoking a token with 299 descendants, and a
// role with 300 tokens (sessions and tokens made from them), succeeds on a
// real etcd, whose transactions hold at most 128 operations; every other
// token stays.
func TestRevokeManyOverEtcd(t *testing.T) {
	cl := etcdtest.Start(t, 3)
	store, err := etcd.Open(ctx, etcd.Config{Endpoints: cl.Endpoints(), Prefix: "/revoke", RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ts := NewTokens(store, nil)
	others := bystanders(t, ts)

	root, fam := family(t, ts)
	if err := ts.Revoke(ctx, "", root.p.Accessor); err != nil {
		t.Fatalf("revoking a token with 299 descendants on etcd: %v", err)
	}
	checkRevoked(t, store, ts, fam, others)

	var role []issued
	for range 150 {
		s := issue(t, ts, Spec{Role: "app", Subject: "access-key:x", TTL: time.Hour})
		role = append(role, s, issue(t, ts, Spec{TTL: time.Hour, Parent: &s.p}))
	}
	n, err := ts.RevokeWhere(ctx, func(p *Principal) bool { return p.Role == "app" })
	if err != nil || n != 300 {
		t.Fatalf("revoking a role with 300 tokens on etcd: %d, %v", n, err)
	}
	checkRevoked(t, store, ts, role, others)
	if got := ts.Count(); got != len(others) {
		t.Fatalf("%d tokens cached after the revocations; want the %d others", got, len(others))
	}
	// Another replica loading the store sees the same.
	fresh := NewTokens(store, nil)
	if err := fresh.Load(ctx); err != nil {
		t.Fatal(err)
	}
	checkRevoked(t, store, fresh, append(fam, role...), others)
}

// batchStore counts writes, records the largest, and fails the write
// numbered failAt (1-based; 0: none).
type batchStore struct {
	*inmem.Backend
	writes, largest atomic.Int64
	failAt          int64
}

var errInjected = errors.New("injected: etcd unavailable")

func (s *batchStore) Apply(ctx context.Context, ops ...storage.Op) error {
	n := s.writes.Add(1)
	if int64(len(ops)) > s.largest.Load() {
		s.largest.Store(int64(len(ops)))
	}
	if n == s.failAt {
		return errInjected
	}
	return s.Backend.Apply(ctx, ops...)
}

// TestRevokeBatchFailureIsRetryable: a revocation of 300 tokens whose
// second write fails has deleted the descendants of the first write only:
// no token is left stored, or cached, whose parent is gone; the cache
// holds exactly what is stored; and revoking again finishes the job.
func TestRevokeBatchFailureIsRetryable(t *testing.T) {
	store := &batchStore{Backend: inmem.New()}
	ts := NewTokens(store, nil)
	others := bystanders(t, ts)
	root, fam := family(t, ts)

	store.writes.Store(0)
	store.largest.Store(0)
	store.failAt = 2
	err := ts.Revoke(ctx, "", root.p.Accessor)
	if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "revoke again") {
		t.Fatalf("revocation with a failing second write: %v", err)
	}
	if w, l := store.writes.Load(), store.largest.Load(); w != 2 || l > revokeBatch {
		t.Fatalf("%d writes, largest %d deletions; want 2, at most %d", w, l, revokeBatch)
	}
	var deleted, left int
	for _, f := range fam {
		isStored := stored(t, store, f.p.Accessor)
		_, cached := ts.Get(f.p.Accessor)
		if isStored != cached {
			t.Fatalf("token %s: stored %v, cached %v; the cache must drop exactly what was deleted", f.p.Accessor, isStored, cached)
		}
		if !isStored {
			deleted++
			continue
		}
		left++
		if f.p.Parent != "" && !stored(t, store, f.p.Parent) {
			t.Fatalf("token %s is still valid but its parent %s was revoked", f.p.Accessor, f.p.Parent)
		}
	}
	if deleted != revokeBatch || !stored(t, store, root.p.Accessor) {
		t.Fatalf("after the failure: %d deleted, %d left, parent stored %v; want the first batch (%d) deleted and the parent kept",
			deleted, left, stored(t, store, root.p.Accessor), revokeBatch)
	}

	store.failAt = 0
	if err := ts.Revoke(ctx, "", root.p.Accessor); err != nil {
		t.Fatalf("revoking again: %v", err)
	}
	checkRevoked(t, store, ts, fam, others)
}
