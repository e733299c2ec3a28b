package secrets

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
)

// raceStore runs onGet before the first Get of key and onApply before the
// first Apply, to place a concurrent writer exactly between a job's read
// and its write.
type raceStore struct {
	Store
	key            string
	onGet, onApply func()
}

func (r *raceStore) Get(ctx context.Context, key string) (storage.Entry, error) {
	if f := r.onGet; f != nil && key == r.key {
		r.onGet = nil
		f()
	}
	return r.Store.Get(ctx, key)
}

func (r *raceStore) Apply(ctx context.Context, ops ...storage.Op) error {
	if f := r.onApply; f != nil {
		r.onApply = nil
		f()
	}
	return r.Store.Apply(ctx, ops...)
}

// A purge that saw a secret undeleted must not remove the marker of a
// deletion that lands before its write: that secret would stay deleted
// and never be purged.
func TestPurgeKeepsMarkerOfLaterDelete(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"k": "v"})
	if _, err := e.svc.Delete(ctx, "s", MinWindow); err != nil {
		t.Fatal(err)
	}
	rs := &raceStore{Store: e.bar, key: metaPrefix + "s"}
	rs.onGet = func() {
		if _, err := e.svc.Undelete(ctx, "s"); err != nil {
			t.Error(err)
		}
	}
	rs.onApply = func() {
		if _, err := e.svc.Delete(ctx, "s", MinWindow); err != nil {
			t.Error(err)
		}
	}
	if _, err := New(rs, e.keys, WithClock(e.clk.now)).Purge(ctx); err != nil {
		t.Fatal(err)
	}
	e.clk.add(MinWindow + time.Hour)
	if n, err := e.svc.Purge(ctx); err != nil || n != 1 {
		t.Fatalf("a secret deleted after the purge looked is never purged: purged %d (%v)", n, err)
	}
}

// The same for the rotation marker: a rotation disabled and set again
// between the job's read and its write keeps its marker, so it runs.
func TestRotateDueKeepsMarkerOfLaterConfig(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"password": "v"})
	e.rotation(t, "s", "random:length=16")
	rs := &raceStore{Store: e.bar, key: metaPrefix + "s"}
	rs.onGet = func() {
		if _, err := e.svc.DisableRotation(ctx, "s"); err != nil {
			t.Error(err)
		}
	}
	rs.onApply = func() { e.rotation(t, "s", "random:length=16") }
	if _, err := New(rs, e.keys, WithClock(e.clk.now)).RotateDue(ctx); err != nil {
		t.Fatal(err)
	}
	e.clk.add(31 * 24 * time.Hour)
	if n, err := e.svc.RotateDue(ctx); err != nil || n != 1 {
		t.Fatalf("a rotation set again while the job ran never runs: rotated %d (%v)", n, err)
	}
}

// A key named by an alias is recorded by id: pointing the alias at another
// key later does not move the secret's next versions there.
func TestNamedKeyRecordedByID(t *testing.T) {
	e := newEnv(t)
	a, err := e.keys.Create(ctx, keys.CreateRequest{Alias: "alias/team-a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.keys.Create(ctx, keys.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "team-a/db", Fields: map[string]string{"k": "v"}, Key: "alias/team-a"}); err != nil {
		t.Fatal(err)
	}
	if err := e.keys.DeleteAlias(ctx, "alias/team-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.CreateAlias(ctx, "alias/team-a", b.ID); err != nil {
		t.Fatal(err)
	}
	v := e.put(t, "team-a/db", map[string]string{"k": "v2"})
	md := e.meta(t, e.svc, "team-a/db")
	if v.KeyID != a.ID || md.Key != a.ID {
		t.Fatalf("the secret followed the alias: version under %s, metadata key %q, want %s", v.KeyID, md.Key, a.ID)
	}
}

// Field names become file names and Kubernetes Secret keys.
func TestDotFieldNamesRefused(t *testing.T) {
	e := newEnv(t)
	for _, f := range []string{".", ".."} {
		if _, err := e.svc.Put(ctx, PutRequest{Name: "x", Fields: map[string]string{f: "v"}}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("field %q: %v, want invalid argument", f, err)
		}
	}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "x", Fields: map[string]string{".env": "v", "a..b": "v"}}); err != nil {
		t.Errorf("dots inside a name are fine: %v", err)
	}
}

// The default key's id is cached and forgotten by Unload (a seal): the
// store unsealed next may hold another default key.
func TestUnloadForgetsDefaultKey(t *testing.T) {
	e := newEnv(t)
	v := e.put(t, "a", map[string]string{"k": "v"})
	if got, err := e.svc.Get(ctx, "a", 0, ""); err != nil || got.CustomerKey {
		t.Fatalf("a default-key version read as a customer key: %+v %v", got.CustomerKey, err)
	}
	other := "not-" + v.KeyID
	e.svc.defaultID.Store(&other)
	if got, _ := e.svc.Get(ctx, "a", 0, ""); !got.CustomerKey {
		t.Fatal("the cached id is not what Get compares with")
	}
	e.svc.Unload()
	if got, err := e.svc.Get(ctx, "a", 0, ""); err != nil || got.CustomerKey {
		t.Fatalf("after Unload the stored default key is read again: %+v %v", got.CustomerKey, err)
	}
}
