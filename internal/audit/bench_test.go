package audit

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkTrailRecord measures durable records/s with 32 concurrent
// writers sharing group commits.
func BenchmarkTrailRecord(b *testing.B) {
	dir := b.TempDir()
	tr, err := Open(Options{Dir: dir, Keys: testKeys(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := &Record{Time: time.Now(), RequestID: "abcd-1", Door: "rest", Source: "127.0.0.1", Action: "kms:Encrypt",
				Principal: Principal{Kind: "root", Accessor: "acc_0123456789abcdef01234567"}, Token: "cft_x", Resource: "alias/bench", Outcome: "ok"}
			if err := tr.Record(context.Background(), r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendFsync measures what the disk allows a group commit: one
// 9.6 KB append (32 records) and its fsync per iteration, with the fsync's
// median and 99th percentile (docs/benchmarks.md, "What the disk allows").
// It writes in $TMPDIR: on a tmpfs the fsync costs nothing.
func BenchmarkAppendFsync(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "a.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	batch := make([]byte, 32*300)
	var took []time.Duration
	for b.Loop() {
		if _, err := f.Write(batch); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-fsync-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-fsync-µs")
}

// BenchmarkVerify1M verifies a log of one million records and reports
// records/s (target > 200k/s).
func BenchmarkVerify1M(b *testing.B) {
	dir := filepath.Join(os.TempDir(), "coffer-audit-bench-1m")
	files, _ := Files(dir)
	if len(files) == 0 {
		k := testKeys(b)
		writeLog(b, dir, k, 1_000_000, Options{})
		files, _ = Files(dir)
	}
	b.ResetTimer()
	var res VerifyResult
	for b.Loop() {
		var err error
		res, err = Verify(files, VerifyOptions{})
		if err != nil || res.Problem != nil {
			b.Fatal(err, res.Problem)
		}
	}
	b.ReportMetric(float64(res.Records+res.Checkpoints)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// benchRecord is a typical kms:Encrypt record after hashing.
func benchRecord() *Record {
	return &Record{Type: TypeRequest, Time: time.Date(2026, 11, 29, 14, 3, 4, 123456789, time.UTC), RequestID: "abcd-12345",
		Door: "rest", Source: "127.0.0.1", Principal: Principal{Kind: "root", Accessor: "acc_0123456789abcdef01234567"},
		TokenHMAC: "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592", Action: "kms:Encrypt",
		Resource: "alias/bench", KeyID: "b5a54cc2-8ea9-49ec-a694-fa57a971af18", Version: 1,
		Context: map[string]string{"app": "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592"},
		Outcome: "ok", Status: 200, LatencyNS: 183_000}
}

// BenchmarkEncodeRecord compares the record encoder with encoding/json,
// which it replaces on the request path.
func BenchmarkEncodeRecord(b *testing.B) {
	r := benchRecord()
	b.Run("appendRecord", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf, _ = appendRecord(buf[:0], r)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(r)
		}
	})
}

// BenchmarkHMAC compares the pooled HMAC with Keys.HMAC.
func BenchmarkHMAC(b *testing.B) {
	k := testKeys(b)
	p := newHMACPool(k)
	b.Run("pool", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p.sum("cft_0123456789abcdef0123456789abcdef")
		}
	})
	b.Run("Keys.HMAC", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			k.HMAC("cft_0123456789abcdef0123456789abcdef")
		}
	})
}
