package etcd_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

// backends runs fn on a 3-member in-process etcd cluster and on a bbolt
// file, for a side-by-side figure (go test -bench . -run ^$).
func backends(b *testing.B, fn func(b *testing.B, s storage.Backend)) {
	b.Run("etcd3", func(b *testing.B) {
		c := etcdtest.Start(b, 3)
		s, err := etcd.Open(context.Background(), etcd.Config{Endpoints: c.Endpoints()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
	b.Run("bolt", func(b *testing.B) {
		s, err := bolt.Open(filepath.Join(b.TempDir(), "coffer.db"), bolt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
}

// value is the size of a typical stored record (a key with a few versions,
// barrier-encrypted).
var value = make([]byte, 512)

// BenchmarkApply: compare-and-swap writes of one key each, from parallel
// goroutines (the shape of key creation and token issue).
func BenchmarkApply(b *testing.B) {
	backends(b, func(b *testing.B, s storage.Backend) {
		ctx := context.Background()
		var n int64
		var mu = make(chan struct{}, 1)
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu <- struct{}{}
				n++
				key := fmt.Sprintf("keys/%d", n)
				<-mu
				if err := s.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: key, Value: value, IfRevision: 0}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkGet: linearizable reads (etcd) and file reads (bbolt) of
// existing keys.
func BenchmarkGet(b *testing.B) {
	backends(b, func(b *testing.B, s storage.Backend) {
		ctx := context.Background()
		const keys = 100
		for i := range keys {
			if err := s.Apply(ctx, storage.Put(fmt.Sprintf("keys/%d", i), value)); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if _, err := s.Get(ctx, fmt.Sprintf("keys/%d", i%keys)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
