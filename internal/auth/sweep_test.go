package auth

import (
	"context"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// TestSweepDecidesOnTheStoredRecord: two replicas' token stores share one
// store. A token renewed on A shortly before it expired still looks
// expired in B's cache until B hears of the renewal; B's sweep must not
// delete it, and must still delete the tokens that did expire.
func TestSweepDecidesOnTheStoredRecord(t *testing.T) {
	ctx := context.Background()
	store := inmem.New()
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	nowA, nowB := t0, t0
	a := NewTokens(store, func() time.Time { return nowA })
	b := NewTokens(store, func() time.Time { return nowB })
	_, renewed, err := a.Issue(ctx, Spec{DisplayName: "renewed", Role: "r", TTL: time.Hour, MaxTTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var expiring []string
	for range 250 { // more than one sweep batch
		_, p, err := a.Issue(ctx, Spec{DisplayName: "expiring", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		expiring = append(expiring, p.Accessor)
	}
	if err := b.Load(ctx); err != nil {
		t.Fatal(err)
	}
	nowA = t0.Add(59 * time.Minute)
	if _, err := a.Renew(ctx, renewed.Accessor, time.Hour); err != nil {
		t.Fatal(err)
	}
	nowB = t0.Add(61 * time.Minute) // B still caches the first expiry
	if err := b.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(ctx, tokenPath+renewed.Accessor); err != nil {
		t.Fatalf("the renewed token was swept from a stale cache: %v", err)
	}
	for _, acc := range expiring {
		if _, err := store.Get(ctx, tokenPath+acc); err == nil {
			t.Fatalf("expired token %s not swept", acc)
		}
	}
	if n := b.Count(); n != 1 {
		t.Fatalf("B caches %d tokens after the sweep, want the renewed one", n)
	}
}
