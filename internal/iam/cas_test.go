package iam

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// Replicas whose caches lag the store. Each test makes two IAM services
// over one store, loads both, then changes something through A that B
// does not hear of (no Refresh): B's next write must be decided on the
// stored record, never on its stale cache.

// hookStore runs a hook after each Get of a path, once per path (then
// forgets it): a write of another replica landing between a change's
// read and its write.
type hookStore struct {
	storage.Backend
	mu    sync.Mutex
	hooks map[string]func()
	// always, when set, runs after every Get of its path.
	always map[string]func()
}

func newHookStore(b storage.Backend) *hookStore {
	return &hookStore{Backend: b, hooks: map[string]func(){}, always: map[string]func(){}}
}

func (h *hookStore) Get(ctx context.Context, key string) (storage.Entry, error) {
	e, err := h.Backend.Get(ctx, key)
	h.mu.Lock()
	f := h.hooks[key]
	delete(h.hooks, key)
	g := h.always[key]
	h.mu.Unlock()
	if f != nil {
		f()
	}
	if g != nil {
		g()
	}
	return e, err
}

func (h *hookStore) after(key string, f func()) {
	h.mu.Lock()
	h.hooks[key] = f
	h.mu.Unlock()
}

// casPair is two replicas' IAM services over one store, with their own
// clocks.
type casPair struct {
	store      storage.Backend
	a, b       *Service
	nowA, nowB time.Time
}

func newCASPair(t *testing.T, store storage.Backend) *casPair {
	t.Helper()
	p := &casPair{store: store, nowA: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	p.nowB = p.nowA
	mk := func(now *time.Time) *Service {
		clock := func() time.Time { return *now }
		return New(store, auth.NewTokens(store, clock), keys.New(store, keys.WithClock(clock)), clock)
	}
	p.a, p.b = mk(&p.nowA), mk(&p.nowB)
	return p
}

// sync brings both caches up to the store (Load), as after a refresh.
func (p *casPair) sync(t *testing.T) {
	t.Helper()
	for _, s := range []*Service{p.a, p.b} {
		if err := s.Load(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func mustPolicy(t *testing.T, s *Service, name string) {
	t.Helper()
	if _, err := s.PutPolicy(ctx, name, PutPolicyRequest{Document: allowEncryptApp}); err != nil {
		t.Fatal(err)
	}
}

// staleReplicaScenarios runs every stale-replica case over store.
func staleReplicaScenarios(t *testing.T, store func(t *testing.T) storage.Backend) {
	// B updating an access key A disabled keeps it disabled, and B's
	// answer says so.
	t.Run("access key disabled elsewhere", func(t *testing.T) {
		p := newCASPair(t, store(t))
		k, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{Description: "v1"})
		if err != nil {
			t.Fatal(err)
		}
		p.sync(t)
		f := false
		if _, err := p.a.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Enabled: &f}); err != nil {
			t.Fatal(err)
		}
		d := "v2"
		got, err := p.b.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Description: &d})
		if err != nil {
			t.Fatal(err)
		}
		rec := storedAccessKey(t, p.store, k.ID)
		if !rec.Disabled || rec.Description != "v2" || got.Enabled {
			t.Fatalf("after a stale replica's update: stored disabled=%v description=%q, answered enabled=%v; want the disable kept and v2",
				rec.Disabled, rec.Description, got.Enabled)
		}
		// B's cache took the stored record: the key is refused on B too.
		if _, err := p.b.AuthenticateAccessKey(k.ID, k.SecretAccessKey, srcAddr); err == nil || !strings.Contains(err.Error(), "disabled") {
			t.Fatalf("B after its update: %v; want disabled", err)
		}
	})

	// An access key may not re-enable itself, nor attach a policy it no
	// longer holds, on a replica that has not heard it was disabled or
	// the policy detached.
	t.Run("self-update decided on the stored key", func(t *testing.T) {
		p := newCASPair(t, store(t))
		mustPolicy(t, p.a, "p1")
		mustPolicy(t, p.a, "p2")
		k, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{Policies: []string{"p1", "p2"}})
		if err != nil {
			t.Fatal(err)
		}
		p.sync(t)
		caller, err := p.b.AuthenticateAccessKey(k.ID, k.SecretAccessKey, srcAddr)
		if err != nil {
			t.Fatal(err)
		}
		only1 := []string{"p1"}
		f := false
		if _, err := p.a.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Policies: &only1, Enabled: &f}); err != nil {
			t.Fatal(err)
		}
		both := []string{"p1", "p2"}
		if _, err := p.b.UpdateAccessKeyBy(ctx, &caller, k.ID, UpdateAccessKeyRequest{Policies: &both}); !errors.Is(err, auth.ErrForbidden) {
			t.Fatalf("key re-attaching a policy detached elsewhere, on a stale replica: %v; want forbidden", err)
		}
		tr := true
		if _, err := p.b.UpdateAccessKeyBy(ctx, &caller, k.ID, UpdateAccessKeyRequest{Enabled: &tr}); !errors.Is(err, auth.ErrForbidden) {
			t.Fatalf("key re-enabling itself, disabled elsewhere, on a stale replica: %v; want forbidden", err)
		}
		if rec := storedAccessKey(t, p.store, k.ID); !rec.Disabled || !slices.Equal(rec.Policies, only1) {
			t.Fatalf("stored after refused self-updates: %+v", rec)
		}
	})

	t.Run("access key deleted elsewhere", func(t *testing.T) {
		p := newCASPair(t, store(t))
		k, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		p.sync(t)
		if err := p.a.DeleteAccessKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		d := "resurrected?"
		if _, err := p.b.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Description: &d}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("updating a key deleted elsewhere: %v; want not found", err)
		}
		if _, err := p.store.Get(ctx, accessKeyPath+k.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a stale update stored a deleted key again: %v", err)
		}
		if err := p.b.DeleteAccessKey(ctx, k.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleting a key deleted elsewhere: %v; want not found", err)
		}
	})

	t.Run("role created twice", func(t *testing.T) {
		p := newCASPair(t, store(t))
		mustPolicy(t, p.a, "p1")
		p.sync(t)
		if _, err := p.a.CreateRole(ctx, Role{Name: "app", Description: "A's"}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.b.CreateRole(ctx, Role{Name: "app", Description: "B's", Policies: []string{"p1"}}); !errors.Is(err, ErrExists) {
			t.Fatalf("creating on B a role A created: %v; want exists", err)
		}
		e, err := p.store.Get(ctx, rolePath+"app")
		if err != nil {
			t.Fatal(err)
		}
		var r Role
		json.Unmarshal(e.Value, &r)
		if r.Description != "A's" || len(r.Policies) != 0 {
			t.Fatalf("stored role after a second create: %+v; want A's", r)
		}
		// B updating it keeps A's creation time.
		p.nowB = p.nowA.Add(time.Hour)
		got, err := p.b.UpdateRole(ctx, "app", Role{Description: "B's"})
		if err != nil {
			t.Fatal(err)
		}
		if !got.CreatedAt.Equal(p.nowA) {
			t.Fatalf("created_at after B's update: %s; want A's %s", got.CreatedAt, p.nowA)
		}
	})

	t.Run("role self-update decided on the stored role", func(t *testing.T) {
		p := newCASPair(t, store(t))
		mustPolicy(t, p.a, "p1")
		mustPolicy(t, p.a, "p2")
		if _, err := p.a.CreateRole(ctx, Role{Name: "app", Policies: []string{"p1", "p2"}}); err != nil {
			t.Fatal(err)
		}
		p.sync(t)
		if _, err := p.a.UpdateRole(ctx, "app", Role{Policies: []string{"p1"}}); err != nil {
			t.Fatal(err)
		}
		caller := &auth.Principal{Kind: auth.KindRole, Role: "app", ID: "acc_x", Subject: "access-key:AK"}
		_, err := p.b.UpdateRoleBy(ctx, caller, "app", Role{Policies: []string{"p1", "p2"}})
		if !errors.Is(err, auth.ErrForbidden) {
			t.Fatalf("a session of role app re-attaching to it a policy detached elsewhere, on a stale replica: %v; want forbidden", err)
		}
	})

	t.Run("role deleted elsewhere", func(t *testing.T) {
		p := newCASPair(t, store(t))
		if _, err := p.a.CreateRole(ctx, Role{Name: "app"}); err != nil {
			t.Fatal(err)
		}
		p.sync(t)
		if _, err := p.a.DeleteRole(ctx, "app"); err != nil {
			t.Fatal(err)
		}
		if _, err := p.b.UpdateRole(ctx, "app", Role{Description: "back?"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("updating on B a role A deleted: %v; want not found", err)
		}
		if _, err := p.store.Get(ctx, rolePath+"app"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a stale update stored a deleted role again: %v", err)
		}
		if _, err := p.b.DeleteRole(ctx, "app"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleting on B a role A deleted: %v; want not found", err)
		}
	})

	// A delete is of the name, as stored when it is deleted: B deletes
	// the policy A re-created (and one A created that B never saw), and
	// answers not found for one A deleted, whatever B's cache says.
	t.Run("policy delete decided on the store", func(t *testing.T) {
		p := newCASPair(t, store(t))
		mustPolicy(t, p.a, "pol")
		p.sync(t)
		if err := p.a.DeletePolicy(ctx, "pol"); err != nil {
			t.Fatal(err)
		}
		if err := p.b.DeletePolicy(ctx, "pol"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleting on B a policy A deleted: %v; want not found", err)
		}
		p.nowA = p.nowA.Add(time.Minute)
		mustPolicy(t, p.a, "pol") // re-created; B still has the old one
		mustPolicy(t, p.a, "new") // B never saw it
		for _, n := range []string{"pol", "new"} {
			if err := p.b.DeletePolicy(ctx, n); err != nil {
				t.Fatalf("deleting on B policy %s as stored: %v", n, err)
			}
			if _, err := p.store.Get(ctx, policyPath+n); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("policy %s still stored after B deleted it: %v", n, err)
			}
			if _, err := p.b.GetPolicy(ctx, n); !errors.Is(err, ErrNotFound) {
				t.Fatalf("B still knows policy %s after deleting it: %v", n, err)
			}
		}
	})

	// A report of 250 keys, none yet known to B, disables them all (in
	// writes etcd accepts: at most 128 operations each).
	t.Run("leak report of many keys", func(t *testing.T) {
		p := newCASPair(t, store(t))
		p.sync(t)
		var fps, ids []string
		for range 250 {
			k, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{})
			if err != nil {
				t.Fatal(err)
			}
			fps, ids = append(fps, fp(k.SecretAccessKey)), append(ids, k.ID)
		}
		off, already, err := p.b.ReportLeaked(ctx, fps)
		if err != nil || len(off) != 250 || already != 0 {
			t.Fatalf("report of 250 keys on B: %d disabled, %d already, %v", len(off), already, err)
		}
		for _, id := range ids {
			if rec := storedAccessKey(t, p.store, id); !rec.Leaked || !rec.Disabled {
				t.Fatalf("key %s after the report: %+v", id, rec)
			}
		}
		if _, already, err := p.b.ReportLeaked(ctx, fps); err != nil || already != 250 {
			t.Fatalf("second report: %d already, %v", already, err)
		}
	})

	// Attaching is decided on the stored policies: one deleted elsewhere
	// (still in B's cache) is refused, one created elsewhere (not yet in
	// B's cache) is accepted.
	t.Run("attach decided on the stored policies", func(t *testing.T) {
		p := newCASPair(t, store(t))
		mustPolicy(t, p.a, "gone")
		k, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		p.sync(t)
		if err := p.a.DeletePolicy(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		mustPolicy(t, p.a, "new")
		if _, err := p.b.CreateRole(ctx, Role{Name: "app", Policies: []string{"gone"}}); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), `"gone" does not exist`) {
			t.Fatalf("attaching to a role on B a policy A deleted: %v; want invalid argument", err)
		}
		if _, err := p.store.Get(ctx, rolePath+"app"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a role naming a deleted policy was stored: %v", err)
		}
		gone := []string{"gone"}
		if _, err := p.b.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Policies: &gone}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("attaching to a key on B a policy A deleted: %v; want invalid argument", err)
		}
		if _, err := p.b.CreateAccessKey(ctx, CreateAccessKeyRequest{Policies: gone}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("creating on B a key with a policy A deleted: %v; want invalid argument", err)
		}
		if _, err := p.b.CreateRole(ctx, Role{Name: "app", Policies: []string{"new"}}); err != nil {
			t.Fatalf("attaching on B a policy A created: %v", err)
		}
	})

	t.Run("policy put keeps the stored creation time", func(t *testing.T) {
		p := newCASPair(t, store(t))
		p.sync(t)
		mustPolicy(t, p.a, "pol")
		p.nowB = p.nowA.Add(time.Hour)
		got, err := p.b.PutPolicy(ctx, "pol", PutPolicyRequest{Document: allowEncryptApp, Description: "B's"})
		if err != nil {
			t.Fatal(err)
		}
		if !got.CreatedAt.Equal(p.nowA) || !got.UpdatedAt.Equal(p.nowB) {
			t.Fatalf("policy put on B over A's: created %s updated %s; want created %s (A's)", got.CreatedAt, got.UpdatedAt, p.nowA)
		}
	})

	// A replica whose clock is behind does not move back the revocation
	// mark another replica set.
	t.Run("revocation mark keeps the later time", func(t *testing.T) {
		p := newCASPair(t, store(t))
		p.sync(t)
		p.nowB = p.nowA.Add(-time.Minute)
		if _, err := p.a.RevokePrincipal(ctx, "role:app"); err != nil {
			t.Fatal(err)
		}
		if _, err := p.b.RevokePrincipal(ctx, "role:app"); err != nil {
			t.Fatal(err)
		}
		e, err := p.store.Get(ctx, revokedPath+escape("role:app"))
		if err != nil {
			t.Fatal(err)
		}
		var at time.Time
		at.UnmarshalText(e.Value)
		if !at.Equal(p.nowA) {
			t.Fatalf("stored revocation mark %s; want the later %s", at, p.nowA)
		}
		if got, _ := p.b.state.Load().revokedAt("role:app"); !got.Equal(p.nowA) {
			t.Fatalf("B's cached mark %s; want %s", got, p.nowA)
		}
	})

	// A key reported leaked on a replica that has not heard of it yet is
	// found in the store and disabled there; a policy change made
	// elsewhere is kept.
	t.Run("leak report on a stale replica", func(t *testing.T) {
		p := newCASPair(t, store(t))
		mustPolicy(t, p.a, "p1")
		old, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		p.sync(t)
		fresh, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		pols := []string{"p1"}
		if _, err := p.a.UpdateAccessKey(ctx, old.ID, UpdateAccessKeyRequest{Policies: &pols}); err != nil {
			t.Fatal(err)
		}
		off, _, err := p.b.ReportLeaked(ctx, []string{fp(old.SecretAccessKey), fp(fresh.SecretAccessKey)})
		if err != nil || len(off) != 2 {
			t.Fatalf("report on B: %v %v; want both keys disabled", off, err)
		}
		for _, id := range []string{old.ID, fresh.ID} {
			rec := storedAccessKey(t, p.store, id)
			if !rec.Leaked || !rec.Disabled {
				t.Fatalf("key %s after the report: %+v", id, rec)
			}
		}
		if rec := storedAccessKey(t, p.store, old.ID); !slices.Equal(rec.Policies, pols) {
			t.Fatalf("the report undid A's policy change: %v", rec.Policies)
		}
	})
}

var srcAddr = netip.MustParseAddr("10.0.0.9")

func fp(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// TestStaleReplicaWritesInmem runs the stale-replica cases over one
// in-memory store.
func TestStaleReplicaWritesInmem(t *testing.T) {
	staleReplicaScenarios(t, func(*testing.T) storage.Backend { return inmem.New() })
}

// TestStaleReplicaWritesOverEtcd runs them over a real 3-member etcd
// cluster, each replica pair under its own prefix.
func TestStaleReplicaWritesOverEtcd(t *testing.T) {
	cl := etcdtest.Start(t, 3)
	n := 0
	staleReplicaScenarios(t, func(t *testing.T) storage.Backend {
		n++
		b, err := etcd.Open(ctx, etcd.Config{Endpoints: cl.Endpoints(), Prefix: "/cas" + string(rune('a'+n)), RequestTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	})
}

// TestWriteRacesAnotherReplica: another replica's write landing between a
// change's read and its write fails the compare-and-swap; the change is
// decided again on the new record and keeps the other write. Without the
// compare-and-swap the second write would undo the first.
func TestWriteRacesAnotherReplica(t *testing.T) {
	hs := newHookStore(inmem.New())
	p := newCASPair(t, hs)
	mustPolicy(t, p.a, "p1")
	k, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{Description: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.a.CreateRole(ctx, Role{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	p.sync(t)

	// An access key disabled while B updates its description.
	f := false
	hs.after(accessKeyPath+k.ID, func() {
		if _, err := p.a.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Enabled: &f}); err != nil {
			t.Error(err)
		}
	})
	d := "v2"
	if _, err := p.b.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Description: &d}); err != nil {
		t.Fatal(err)
	}
	if rec := storedAccessKey(t, hs, k.ID); !rec.Disabled || rec.Description != "v2" {
		t.Fatalf("racing updates: %+v; want disabled and v2", rec)
	}

	// A role created by A while B creates it: B hears it exists.
	hs.after(rolePath+"web", func() {
		if _, err := p.a.CreateRole(ctx, Role{Name: "web", Description: "A's"}); err != nil {
			t.Error(err)
		}
	})
	if _, err := p.b.CreateRole(ctx, Role{Name: "web", Description: "B's"}); !errors.Is(err, ErrExists) {
		t.Fatalf("racing creates: %v; want exists", err)
	}

	// A role deleted by A while B updates it: not found, not re-created.
	hs.after(rolePath+"app", func() {
		if _, err := p.a.DeleteRole(ctx, "app"); err != nil {
			t.Error(err)
		}
	})
	if _, err := p.b.UpdateRole(ctx, "app", Role{Description: "B's"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update racing a delete: %v; want not found", err)
	}
	if _, err := hs.Get(ctx, rolePath+"app"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("update racing a delete stored the role again: %v", err)
	}

	// A leak report racing a policy change keeps the change.
	k2, err := p.a.CreateAccessKey(ctx, CreateAccessKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p.sync(t)
	pols := []string{"p1"}
	hs.after(accessKeyPath+k2.ID, func() {
		if _, err := p.a.UpdateAccessKey(ctx, k2.ID, UpdateAccessKeyRequest{Policies: &pols}); err != nil {
			t.Error(err)
		}
	})
	if _, _, err := p.b.ReportLeaked(ctx, []string{fp(k2.SecretAccessKey)}); err != nil {
		t.Fatal(err)
	}
	if rec := storedAccessKey(t, hs, k2.ID); !rec.Leaked || !slices.Equal(rec.Policies, pols) {
		t.Fatalf("leak report racing an update: %+v", rec)
	}

	// A policy deleted between its read and the write of a role naming it:
	// the role is refused, not stored naming a deleted policy.
	mustPolicy(t, p.a, "p9")
	p.sync(t)
	hs.after(policyPath+"p9", func() {
		if err := p.a.DeletePolicy(ctx, "p9"); err != nil {
			t.Error(err)
		}
	})
	if _, err := p.b.CreateRole(ctx, Role{Name: "p9-role", Policies: []string{"p9"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("role create racing the deletion of its policy: %v; want invalid argument", err)
	}
	if _, err := hs.Get(ctx, rolePath+"p9-role"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a role naming a policy deleted meanwhile was stored: %v", err)
	}

	// A record that changes at every attempt: the retries are bounded and
	// the answer is a conflict (HTTP 409 conflict).
	n, busy := 0, false
	hs.mu.Lock()
	hs.always[accessKeyPath+k.ID] = func() {
		if busy {
			return // A's own read
		}
		busy = true
		defer func() { busy = false }()
		n++
		d := strings.Repeat("x", n)
		if _, err := p.a.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Description: &d}); err != nil {
			t.Error(err)
		}
	}
	hs.mu.Unlock()
	d = "B's"
	_, err = p.b.UpdateAccessKey(ctx, k.ID, UpdateAccessKeyRequest{Description: &d})
	if !errors.Is(err, storage.ErrConflict) || !strings.Contains(err.Error(), "retry") {
		t.Fatalf("update of a record changing at every attempt: %v; want a conflict", err)
	}
	if n != maxWriteAttempts {
		t.Fatalf("%d reads; want the attempts bounded by %d", n, maxWriteAttempts)
	}
}
