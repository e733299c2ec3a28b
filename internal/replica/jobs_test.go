package replica_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

var ctx = context.Background()

// clock is a fake clock shared by the replicas of a test.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// replicas opens n barriers over one shared backend (initialized by the
// first, unsealed with the same share by all) and a key service on each.
func replicas(t *testing.T, backend storage.Backend, n int, now func() time.Time) ([]*keys.Service, *barrier.Barrier) {
	t.Helper()
	var svcs []*keys.Service
	var first *barrier.Barrier
	var share string
	for i := range n {
		b := barrier.New(backend)
		if i == 0 {
			shares, err := b.Initialize(ctx, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			share, first = shares[0], b
		}
		if _, err := b.Unseal(ctx, share); err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, keys.New(b, keys.WithClock(now)))
	}
	return svcs, first
}

// storedVersions reads a key's stored record and returns its version
// numbers and their material.
func storedVersions(t *testing.T, b *barrier.Barrier, id string) ([]uint32, [][]byte, keys.State) {
	t.Helper()
	e, err := b.Get(ctx, "keys/"+id)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		State    keys.State `json:"state"`
		Versions []struct {
			Version  uint32 `json:"version"`
			Material []byte `json:"material"`
		} `json:"versions"`
	}
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		t.Fatal(err)
	}
	var vs []uint32
	var ms [][]byte
	for _, v := range rec.Versions {
		vs = append(vs, v.Version)
		ms = append(ms, v.Material)
	}
	return vs, ms, rec.State
}

// backends are the shared stores the exactly-once tests run on.
func backends(t *testing.T) map[string]func(t *testing.T) storage.Backend {
	return map[string]func(t *testing.T) storage.Backend{
		"inmem": func(*testing.T) storage.Backend { return inmem.New() },
		"etcd": func(t *testing.T) storage.Backend {
			c := etcdtest.Start(t, 3)
			b, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints(), Prefix: "/coffer"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
	}
}

// TestTickExactlyOnceAcrossReplicas: replicas' key services share one
// store, each caching the keys, and call Tick at the same time, round
// after round, for many due keys. Each due rotation must make exactly one
// version (one replica's rotation wins compare-and-swap; the others find
// the stored record rotated and not due), and each due deletion must be
// counted once.
func TestTickExactlyOnceAcrossReplicas(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			const nKeys, nReplicas, rounds = 40, 3, 4
			var c clock
			c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
			svcs, bar := replicas(t, open(t), nReplicas, c.now)
			var ids, doomed []string
			for i := range nKeys {
				k, err := svcs[0].Create(ctx, keys.CreateRequest{RotationPeriod: "1m", Alias: fmt.Sprintf("alias/k%d", i)})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, k.ID)
				d, err := svcs[0].Create(ctx, keys.CreateRequest{Alias: fmt.Sprintf("alias/d%d", i)})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := svcs[0].ScheduleDeletion(ctx, d.ID, 7); err != nil {
					t.Fatal(err)
				}
				doomed = append(doomed, d.ID)
			}
			for _, s := range svcs[1:] {
				if err := s.Load(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var rotated, destroyed atomic.Int64
			for round := range rounds {
				c.advance(2 * time.Minute)
				if round == rounds-1 {
					c.advance(8 * 24 * time.Hour) // the deletions fall due
				}
				var wg sync.WaitGroup
				for _, s := range svcs {
					wg.Go(func() {
						r, d, err := s.Tick(ctx)
						if err != nil {
							t.Errorf("tick: %v", err)
						}
						rotated.Add(int64(r))
						destroyed.Add(int64(d))
					})
				}
				wg.Wait()
			}
			t.Logf("%d replicas, %d rounds: %d rotations, %d destructions reported", nReplicas, rounds, rotated.Load(), destroyed.Load())
			if n := rotated.Load(); n != nKeys*rounds {
				t.Fatalf("%d rotations reported for %d due rotations", n, nKeys*rounds)
			}
			if n := destroyed.Load(); n != nKeys {
				t.Fatalf("%d destructions reported for %d due deletions", n, nKeys)
			}
			for _, id := range ids {
				vs, _, _ := storedVersions(t, bar, id)
				if len(vs) != 1+rounds {
					t.Fatalf("key %s has versions %v after %d due rotations", id, vs, rounds)
				}
			}
			for _, id := range doomed {
				if _, _, st := storedVersions(t, bar, id); st != keys.StateDeleted {
					t.Fatalf("key %s is %s", id, st)
				}
			}
			if left, err := bar.List(ctx, "aliases/d"); err != nil || len(left) != 0 {
				t.Fatalf("aliases of destroyed keys left: %v %v", left, err)
			}
		})
	}
}

// TestConcurrentRotationsAcrossReplicas: 50 rotations of one key at the
// same time, spread over 3 replicas' key services, make exactly 50 new
// versions numbered 2..51 with 50 different keys.
func TestConcurrentRotationsAcrossReplicas(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			const n = 50
			svcs, bar := replicas(t, open(t), 3, time.Now)
			k, err := svcs[0].Create(ctx, keys.CreateRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range svcs[1:] {
				if err := s.Load(ctx); err != nil {
					t.Fatal(err)
				}
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			var failed atomic.Int64
			for i := range n {
				s := svcs[i%len(svcs)]
				wg.Go(func() {
					<-start
					time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
					if _, err := s.Rotate(ctx, k.ID); err != nil {
						failed.Add(1)
						t.Errorf("rotation: %v", err)
					}
				})
			}
			close(start)
			wg.Wait()
			vs, ms, _ := storedVersions(t, bar, k.ID)
			t.Logf("%d rotations over 3 replicas: versions 1..%d stored", n, len(vs))
			if len(vs) != n+1 {
				t.Fatalf("%d versions after %d rotations (%d failed): %v", len(vs), n, failed.Load(), vs)
			}
			for i, v := range vs {
				if v != uint32(i+1) {
					t.Fatalf("versions have a gap or a duplicate: %v", vs)
				}
				for j := range i {
					if bytes.Equal(ms[i], ms[j]) {
						t.Fatalf("versions %d and %d have the same material", vs[j], v)
					}
				}
			}
		})
	}
}

// TestUsedUpRotationExactlyOnce: a key whose primary version has used up
// its encryptions is due on every replica that counted them (a replica
// that loads the key counts every reserved use as spent). Replicas
// ticking together make one new version: the others find the version
// they saw used up no longer primary.
func TestUsedUpRotationExactlyOnce(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			const limit = 10
			backend := open(t)
			var svcs []*keys.Service
			var bar *barrier.Barrier
			var share string
			for i := range 3 {
				b := barrier.New(backend)
				if i == 0 {
					shares, err := b.Initialize(ctx, 1, 1)
					if err != nil {
						t.Fatal(err)
					}
					share, bar = shares[0], b
				}
				if _, err := b.Unseal(ctx, share); err != nil {
					t.Fatal(err)
				}
				svcs = append(svcs, keys.New(b, keys.WithUseLimits(limit, 4)))
			}
			k, err := svcs[0].Create(ctx, keys.CreateRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for range limit {
				if _, err := svcs[0].Encrypt(ctx, k.ID, []byte("p"), nil); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range svcs[1:] {
				if err := s.Load(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			var rotated atomic.Int64
			for _, s := range svcs {
				wg.Go(func() {
					r, _, err := s.Tick(ctx)
					if err != nil {
						t.Errorf("tick: %v", err)
					}
					rotated.Add(int64(r))
				})
			}
			wg.Wait()
			if vs, _, _ := storedVersions(t, bar, k.ID); len(vs) != 2 || rotated.Load() != 1 {
				t.Fatalf("versions %v, %d rotations reported, after one used-up primary", vs, rotated.Load())
			}
		})
	}
}

// TestSweepManyExpiredTokens: a sweep of more expired tokens than etcd
// takes in one transaction (128 ops by default) deletes them all.
func TestSweepManyExpiredTokens(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			var c clock
			c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
			backend := open(t)
			toks := auth.NewTokens(backend, c.now)
			for range 300 {
				if _, _, err := toks.Issue(ctx, auth.Spec{DisplayName: "short", TTL: time.Minute}); err != nil {
					t.Fatal(err)
				}
			}
			c.advance(2 * time.Minute)
			if err := toks.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if left, err := backend.List(ctx, "auth/tokens/"); err != nil || len(left) != 0 {
				t.Fatalf("%d token records left after the sweep (%v)", len(left), err)
			}
		})
	}
}
