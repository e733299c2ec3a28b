package iam

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// storedAccessKey reads an access key's record from the store itself.
func storedAccessKey(t *testing.T, st storage.Backend, id string) accessKeyRecord {
	t.Helper()
	e, err := st.Get(ctx, accessKeyPath+id)
	if err != nil {
		t.Fatal(err)
	}
	var rec accessKeyRecord
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestUsageFlushMergesAcrossReplicas: two replicas' IAM services share one
// store and each flushes the uses it observed. A flush never undoes a
// change the other replica made meanwhile (a key disabled there stays
// disabled), and the stored last use is the later of the two, whichever
// replica flushes last.
func TestUsageFlushMergesAcrossReplicas(t *testing.T) {
	store := inmem.New()
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	nowA, nowB := t0, t0
	newReplica := func(now *time.Time) *Service {
		clock := func() time.Time { return *now }
		return New(store, auth.NewTokens(store, clock), keys.New(store, keys.WithClock(clock)), clock)
	}
	a, b := newReplica(&nowA), newReplica(&nowB)
	var ks []CreatedAccessKey
	for range 3 {
		k, err := a.CreateAccessKey(ctx, CreateAccessKeyRequest{Description: "shared"})
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	if err := b.Load(ctx); err != nil {
		t.Fatal(err)
	}
	srcA, srcB := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	use := func(s *Service, k CreatedAccessKey, src netip.Addr) {
		t.Helper()
		if _, err := s.AuthenticateAccessKey(k.ID, k.SecretAccessKey, src); err != nil {
			t.Fatal(err)
		}
	}

	// Key 0: used on B, then disabled on A before B flushes (B's cache
	// still has it enabled).
	nowB = t0.Add(time.Minute)
	use(b, ks[0], srcB)
	off := false
	if _, err := a.UpdateAccessKey(ctx, ks[0].ID, UpdateAccessKeyRequest{Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	// Key 1: used later on A than on B; A flushes first.
	// Key 2: the same, but B flushes first.
	nowA, nowB = t0.Add(3*time.Minute), t0.Add(2*time.Minute)
	use(a, ks[1], srcA)
	use(b, ks[1], srcB)
	use(a, ks[2], srcA)
	use(b, ks[2], srcB)
	// A flushes key 1 only (key 2's use waits), B flushes both, A the rest.
	a.usageMu.Lock()
	held := a.usage[ks[2].ID]
	delete(a.usage, ks[2].ID)
	a.usageMu.Unlock()
	if err := a.FlushUsage(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.FlushUsage(ctx); err != nil {
		t.Fatal(err)
	}
	a.usageMu.Lock()
	a.usage[ks[2].ID] = held
	a.usageMu.Unlock()
	if err := a.FlushUsage(ctx); err != nil {
		t.Fatal(err)
	}

	if rec := storedAccessKey(t, store, ks[0].ID); !rec.Disabled || !rec.LastUsedAt.Equal(t0.Add(time.Minute)) || rec.LastSource != "10.0.0.2" {
		t.Fatalf("key 0: disabled=%v last use %s from %s; want disabled, used at %s from B", rec.Disabled, rec.LastUsedAt, rec.LastSource, t0.Add(time.Minute))
	}
	for _, k := range ks[1:] {
		if rec := storedAccessKey(t, store, k.ID); !rec.LastUsedAt.Equal(nowA) || rec.LastSource != "10.0.0.1" {
			t.Fatalf("key %s: last use %s from %s; want the later use, %s from A", k.ID, rec.LastUsedAt, rec.LastSource, nowA)
		}
	}
	// B's own view takes the later use too.
	if got, err := b.GetAccessKey(ctx, ks[1].ID); err != nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(nowA) {
		t.Fatalf("B's view of key 1: %+v %v", got, err)
	}
}
