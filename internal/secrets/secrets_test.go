package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

var ctx = context.Background()

type clock struct{ t atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time      { return time.Unix(0, c.t.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.t.Add(int64(d)) }

type env struct {
	mem   *inmem.Backend
	bar   *barrier.Barrier
	share string
	keys  *keys.Service
	svc   *Service
	clk   *clock
}

func newEnv(t testing.TB) *env {
	t.Helper()
	mem := inmem.New()
	b := barrier.New(mem)
	shares, err := b.Initialize(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	k := keys.New(b, keys.WithClock(clk.now))
	return &env{mem: mem, bar: b, share: shares[0], keys: k, svc: New(b, k, WithClock(clk.now)), clk: clk}
}

// replica is a second service instance on the same store, as another
// replica on one etcd would be.
func (e *env) replica(t testing.TB) *Service {
	t.Helper()
	b := barrier.New(e.mem)
	if _, err := b.Unseal(ctx, e.share); err != nil {
		t.Fatal(err)
	}
	k := keys.New(b, keys.WithClock(e.clk.now))
	if err := k.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return New(b, k, WithClock(e.clk.now))
}

func cas(n uint32) *uint32 { return &n }

func (e *env) put(t testing.TB, name string, f map[string]string) VersionInfo {
	t.Helper()
	v, err := e.svc.Put(ctx, PutRequest{Name: name, Fields: f})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPutGetVersionsAndStages(t *testing.T) {
	e := newEnv(t)
	v1 := e.put(t, "team-a/web/db", map[string]string{"password": "one", "user": "app"})
	if v1.Version != 1 || v1.KeyID == "" {
		t.Fatalf("first put: %+v", v1)
	}
	e.put(t, "team-a/web/db", map[string]string{"password": "two"})
	got, err := e.svc.Get(ctx, "team-a/web/db", 0, "")
	if err != nil || got.Version != 2 || got.Fields["password"] != "two" || len(got.Fields) != 1 {
		t.Fatalf("current: %+v %v", got, err)
	}
	prev, err := e.svc.Get(ctx, "team-a/web/db", 0, StagePrevious)
	if err != nil || prev.Version != 1 || prev.Fields["user"] != "app" {
		t.Fatalf("previous: %+v %v", prev, err)
	}
	if _, err := e.svc.Get(ctx, "team-a/web/db", 0, StagePending); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("pending with none: %v", err)
	}
	if _, err := e.svc.Get(ctx, "team-a/web/db", 3, ""); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("version 3: %v", err)
	}
	if _, err := e.svc.Get(ctx, "team-a/web/db", 0, "bogus"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad stage: %v", err)
	}
	if _, err := e.svc.Get(ctx, "nope", 0, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	// The default key was made on first use, and is the secret's key.
	md, err := e.svc.Describe(ctx, "team-a/web/db")
	if err != nil || md.Key != v1.KeyID {
		t.Fatalf("default key %s: %v (version under %s)", md.Key, err, v1.KeyID)
	}
	// Another secret gets the same default key.
	if v := e.put(t, "other", map[string]string{"k": "v"}); v.KeyID != v1.KeyID {
		t.Fatalf("second default key %s, want %s", v.KeyID, v1.KeyID)
	}
	// A key named in the request is used and kept.
	k, err := e.keys.Create(ctx, keys.CreateRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	v3, err := e.svc.Put(ctx, PutRequest{Name: "team-a/web/db", Fields: map[string]string{"k": "v"}, Key: "alias/app"})
	if err != nil || v3.KeyID != k.ID {
		t.Fatalf("named key: %+v %v", v3, err)
	}
	if v4 := e.put(t, "team-a/web/db", map[string]string{"k": "v"}); v4.KeyID != k.ID {
		t.Fatalf("later version under %s, want the secret's key %s", v4.KeyID, k.ID)
	}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "x", Fields: map[string]string{"k": "v"}, Key: "alias/nope"}); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
}

func TestNames(t *testing.T) {
	e := newEnv(t)
	bad := []string{"", "/a", "a/", "a//b", "a/../b", "..", "a/./b", "a b", "a@1", "é", strings.Repeat("a", MaxNameBytes+1)}
	for _, n := range bad {
		if _, err := e.svc.Put(ctx, PutRequest{Name: n, Fields: map[string]string{"k": "v"}}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("name %q: %v", n, err)
		}
	}
	for _, n := range []string{"a", "a.b/c_d-e/F9", strings.Repeat("a", MaxNameBytes)} {
		if err := CheckName(n); err != nil {
			t.Errorf("name %q refused: %v", n, err)
		}
	}
	for _, f := range []map[string]string{nil, {"": "v"}, {"a/b": "v"}, {strings.Repeat("k", MaxFieldName+1): "v"}, {"a b": "v"}} {
		if _, err := e.svc.Put(ctx, PutRequest{Name: "x", Fields: f}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("fields %v: %v", f, err)
		}
	}
}

func TestSizeLimit(t *testing.T) {
	e := newEnv(t)
	ok := map[string]string{"k": strings.Repeat("x", MaxVersionBytes-1)}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "big", Fields: ok}); err != nil {
		t.Fatalf("exactly 64 KiB: %v", err)
	}
	got, err := e.svc.Get(ctx, "big", 0, "")
	if err != nil || len(got.Fields["k"]) != MaxVersionBytes-1 {
		t.Fatalf("read back: %v", err)
	}
	over := map[string]string{"k": strings.Repeat("x", MaxVersionBytes)}
	_, err = e.svc.Put(ctx, PutRequest{Name: "big", Fields: over})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "65536") {
		t.Fatalf("one byte over: %v", err)
	}
}

func TestCheckAndSet(t *testing.T) {
	e := newEnv(t)
	f := map[string]string{"k": "v"}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "s", Fields: f, CAS: cas(1)}); !errors.Is(err, ErrConflict) {
		t.Fatalf("cas 1 on a missing secret: %v", err)
	}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "s", Fields: f, CAS: cas(0)}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Put(ctx, PutRequest{Name: "s", Fields: f, CAS: cas(0)})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Current != 1 {
		t.Fatalf("cas 0 on an existing secret: %v", err)
	}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "s", Fields: f, CAS: cas(1)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Put(ctx, PutRequest{Name: "s", Fields: f, CAS: cas(1)})
	if !errors.As(err, &ce) || ce.Current != 2 || !strings.Contains(err.Error(), "current version 2") {
		t.Fatalf("stale cas: %v", err)
	}
}

// Two replicas on one store race to create and to extend one secret:
// exactly one creation wins, and every version number is made once.
func TestReplicasRace(t *testing.T) {
	e := newEnv(t)
	svcs := []*Service{e.svc, e.replica(t)}
	const n = 8
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svcs[i%2].Put(ctx, PutRequest{Name: "race", Fields: map[string]string{"i": fmt.Sprint(i)}, CAS: cas(0)})
			if err == nil {
				wins.Add(1)
			} else if !errors.Is(err, ErrConflict) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d creations won, want 1", wins.Load())
	}
	seen := make(chan uint32, 2*n)
	for i := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := svcs[i%2].Put(ctx, PutRequest{Name: "race", Fields: map[string]string{"i": fmt.Sprint(i)}})
			if err != nil {
				t.Error(err)
				return
			}
			seen <- v.Version
		}()
	}
	wg.Wait()
	close(seen)
	got := map[uint32]bool{}
	for v := range seen {
		if got[v] {
			t.Fatalf("version %d made twice", v)
		}
		got[v] = true
	}
	md, err := svcs[1].Describe(ctx, "race")
	if err != nil || md.LatestVersion != 2*n+1 || md.CurrentVersion != 2*n+1 {
		t.Fatalf("after the race: %+v %v", md, err)
	}
	if _, err := svcs[1].Get(ctx, "race", 0, ""); err != nil {
		t.Fatal(err)
	}
}

// The default key made by one replica is found by another that lost the
// race to make it.
func TestDefaultKeyMadeElsewhere(t *testing.T) {
	e := newEnv(t)
	other := e.replica(t) // loaded before the key exists
	e.put(t, "a", map[string]string{"k": "v"})
	if _, err := other.Put(ctx, PutRequest{Name: "b", Fields: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Get(ctx, "a", 0, ""); err != nil {
		t.Fatal(err)
	}
}

func TestMaxVersionsDestroysOldest(t *testing.T) {
	e := newEnv(t)
	for i := range 12 {
		e.put(t, "s", map[string]string{"i": fmt.Sprint(i)})
	}
	md, err := e.svc.Describe(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range md.Versions {
		if v.Destroyed != (v.Version <= 2) {
			t.Fatalf("version %d destroyed=%v", v.Version, v.Destroyed)
		}
	}
	if _, err := e.svc.Get(ctx, "s", 1, ""); !errors.Is(err, ErrDestroyed) {
		t.Fatalf("read of a version beyond max_versions: %v", err)
	}
	if _, err := e.bar.Get(ctx, dataPath("s", 1)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("data of a destroyed version still stored: %v", err)
	}
	one := 1
	md, err = e.svc.UpdateMetadata(ctx, "s", MetadataUpdate{MaxVersions: &one, Set: map[string]string{"owner": "team-a"}})
	if err != nil || md.MaxVersions != 1 || md.Custom["owner"] != "team-a" {
		t.Fatalf("update: %+v %v", md, err)
	}
	// current and previous hold stages: both are kept.
	live := 0
	for _, v := range md.Versions {
		if !v.Destroyed {
			live++
		}
	}
	if live != 2 {
		t.Fatalf("%d live versions after max_versions 1, want the 2 staged ones", live)
	}
	if _, err := e.svc.Get(ctx, "s", 0, StagePrevious); err != nil {
		t.Fatal(err)
	}
	zero := 0
	if _, err := e.svc.UpdateMetadata(ctx, "s", MetadataUpdate{MaxVersions: &zero}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("max_versions 0: %v", err)
	}
	md, err = e.svc.UpdateMetadata(ctx, "s", MetadataUpdate{Unset: []string{"owner"}})
	if err != nil || len(md.Custom) != 0 {
		t.Fatalf("unset: %+v %v", md.Custom, err)
	}
	big := map[string]string{}
	for i := range MaxCustom + 1 {
		big[fmt.Sprint("k", i)] = "v"
	}
	if _, err := e.svc.UpdateMetadata(ctx, "s", MetadataUpdate{Set: big}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("too much custom metadata: %v", err)
	}
}

func TestDestroy(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"k": "1"})
	e.put(t, "s", map[string]string{"k": "2"})
	if _, err := e.svc.Destroy(ctx, "s", []uint32{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, "s", 1, ""); !errors.Is(err, ErrDestroyed) {
		t.Fatalf("destroyed read: %v", err)
	}
	if _, err := e.svc.Get(ctx, "s", 0, StagePrevious); !errors.Is(err, ErrDestroyed) {
		t.Fatalf("destroyed previous: %v", err)
	}
	if _, err := e.bar.Get(ctx, dataPath("s", 1)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("destroyed data still stored: %v", err)
	}
	if _, err := e.svc.Destroy(ctx, "s", []uint32{9}); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("destroy of a missing version: %v", err)
	}
	if got, err := e.svc.Get(ctx, "s", 2, ""); err != nil || got.Fields["k"] != "2" {
		t.Fatalf("other version: %v", err)
	}
}

func TestDeleteUndeletePurge(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"k": "v"})
	e.put(t, "keep", map[string]string{"k": "v"})
	if _, err := e.svc.Delete(ctx, "s", time.Hour); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("window under a day: %v", err)
	}
	md, err := e.svc.Delete(ctx, "s", 0)
	if err != nil || !md.PurgeAt.Equal(md.DeletedAt.Add(DefaultWindow)) {
		t.Fatalf("delete: %+v %v", md, err)
	}
	if _, err := e.svc.Get(ctx, "s", 0, ""); !errors.Is(err, ErrDeleted) {
		t.Fatalf("read of a deleted secret: %v", err)
	}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "s", Fields: map[string]string{"k": "v"}}); !errors.Is(err, ErrDeleted) {
		t.Fatalf("write of a deleted secret: %v", err)
	}
	if _, err := e.svc.Delete(ctx, "s", 0); !errors.Is(err, ErrDeleted) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := e.svc.Undelete(ctx, "keep"); !errors.Is(err, ErrNotDeleted) {
		t.Fatalf("undelete of a live secret: %v", err)
	}
	if _, err := e.svc.Undelete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, "s", 0, ""); err != nil {
		t.Fatalf("read after undelete: %v", err)
	}
	if _, err := e.svc.Delete(ctx, "s", 2*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	e.clk.add(24 * time.Hour)
	if n, err := e.svc.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("purge within the window: %d %v", n, err)
	}
	e.clk.add(24 * time.Hour)
	if _, err := e.svc.Undelete(ctx, "s"); !errors.Is(err, ErrWindowEnded) {
		t.Fatalf("undelete after the window: %v", err)
	}
	if n, err := e.svc.Purge(ctx); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := e.svc.Describe(ctx, "s"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after purge: %v", err)
	}
	left, _ := e.bar.List(ctx, "secrets/")
	for _, p := range left {
		if strings.Contains(p, "/s@") || strings.HasSuffix(p, "/s") {
			t.Fatalf("purge left %s", p)
		}
	}
	if _, err := e.svc.Get(ctx, "keep", 0, ""); err != nil {
		t.Fatalf("purge took another secret: %v", err)
	}
	// The name is free again and starts at version 1.
	if v := e.put(t, "s", map[string]string{"k": "new"}); v.Version != 1 {
		t.Fatalf("recreated at version %d", v.Version)
	}
}

// A version record copied to another name or version does not decrypt:
// the encryption context and the AAD bind both.
func TestRecordBoundToNameAndVersion(t *testing.T) {
	e := newEnv(t)
	e.put(t, "a", map[string]string{"k": "secret-a"})
	e.put(t, "b", map[string]string{"k": "b1"})
	e.put(t, "b", map[string]string{"k": "b2"})
	a, err := e.bar.Get(ctx, dataPath("a", 1))
	if err != nil {
		t.Fatal(err)
	}
	// The data key alone is bound too: it unwraps only under its own
	// secret's name and version.
	ra, err := parseRecord(a.Value)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.Decrypt(ctx, ra.Wrapped, encryptionContext("a", 1), ""); err != nil {
		t.Fatalf("own context: %v", err)
	}
	for _, ec := range []map[string]string{encryptionContext("b", 1), encryptionContext("a", 2), nil} {
		if _, err := e.keys.Decrypt(ctx, ra.Wrapped, ec, ""); err == nil {
			t.Fatalf("a's data key unwrapped under %v", ec)
		}
	}
	if err := e.bar.Apply(ctx, storage.Put(dataPath("b", 1), a.Value)); err != nil {
		t.Fatal(err)
	}
	if got, err := e.svc.Get(ctx, "b", 1, ""); err == nil {
		t.Fatalf("a's record read as b: %v", got.Fields)
	}
	b1, _ := e.svc.store.Get(ctx, dataPath("b", 2))
	if err := e.bar.Apply(ctx, storage.Put(dataPath("b", 1), b1.Value)); err != nil {
		t.Fatal(err)
	}
	if got, err := e.svc.Get(ctx, "b", 1, ""); err == nil {
		t.Fatalf("version 2's record read as version 1: %v", got.Fields)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"team-a/x", "team-a/y", "team-a/z", "team-b/x", "team-ab"} {
		e.put(t, n, map[string]string{"k": "v"})
	}
	p, err := e.svc.List(ctx, "team-a/", "", 2)
	if err != nil || len(p.Secrets) != 2 || p.Next != "team-a/y" || p.Secrets[0].Name != "team-a/x" {
		t.Fatalf("page 1: %+v %v", p, err)
	}
	p, err = e.svc.List(ctx, "team-a/", p.Next, 2)
	if err != nil || len(p.Secrets) != 1 || p.Next != "" || p.Secrets[0].Name != "team-a/z" {
		t.Fatalf("page 2: %+v %v", p, err)
	}
	if _, err := e.svc.List(ctx, "", "", MaxListLimit+1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("limit: %v", err)
	}
	if _, err := e.svc.List(ctx, "a b", "", 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("prefix: %v", err)
	}
}

func TestSealed(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"k": "v"})
	e.bar.Seal()
	if _, err := e.svc.Get(ctx, "s", 0, ""); !errors.Is(err, barrier.ErrSealed) {
		t.Fatalf("sealed read: %v", err)
	}
}

// BenchmarkGet reads the current version of a secret of one 1 KiB field
// (in-memory store under the barrier); BenchmarkEncrypt1KiB is the key
// service's Encrypt of 1 KiB on the same setup, for comparison.
func BenchmarkGet(b *testing.B) {
	e := newEnv(b)
	e.put(b, "bench/s", map[string]string{"value": strings.Repeat("x", 1024)})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.svc.Get(ctx, "bench/s", 0, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncrypt1KiB(b *testing.B) {
	e := newEnv(b)
	k, err := e.keys.Create(ctx, keys.CreateRequest{})
	if err != nil {
		b.Fatal(err)
	}
	pt := []byte(strings.Repeat("x", 1024))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.keys.Encrypt(ctx, k.ID, pt, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// hookStore runs before once, just before the first Apply it forwards.
type hookStore struct {
	Store
	before func()
}

func (h *hookStore) Apply(ctx context.Context, ops ...storage.Op) error {
	if f := h.before; f != nil {
		h.before = nil
		f()
	}
	return h.Store.Apply(ctx, ops...)
}

// An undelete that lands between the purge's read and its write keeps the
// secret: the purge is conditional on the metadata's revision.
func TestPurgeLosesToUndelete(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"k": "v"})
	if _, err := e.svc.Delete(ctx, "s", MinWindow); err != nil {
		t.Fatal(err)
	}
	e.clk.add(MinWindow)
	hs := &hookStore{Store: e.bar}
	purger := New(hs, e.keys, WithClock(e.clk.now))
	hs.before = func() {
		// Within the window by the undeleter's clock.
		u := New(e.bar, e.keys, WithClock(func() time.Time { return e.clk.now().Add(-time.Minute) }))
		if _, err := u.Undelete(ctx, "s"); err != nil {
			t.Error(err)
		}
	}
	if n, err := purger.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if got, err := e.svc.Get(ctx, "s", 0, ""); err != nil || got.Fields["k"] != "v" {
		t.Fatalf("after the lost purge: %v", err)
	}
}
