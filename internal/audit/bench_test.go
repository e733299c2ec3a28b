package audit

import (
	"context"
	"os"
	"path/filepath"
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
