package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/loadgen"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// doorBench is a dev server over HTTP/2 and TLS on loopback with a key
// (alias/doorbench) and an access key allowed to use it, and the load
// generator of `coffer bench` configured for it: the in-process twin of
// bench/doors.sh.
func doorBench(b *testing.B) loadgen.Config {
	b.Helper()
	ctx := context.Background()
	s := sys.New(barrier.New(inmem.New()), time.Now)
	_, tok, err := s.DevBootstrap(ctx, "", "")
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000})}))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	b.Cleanup(ts.Close)
	cfg := loadgen.Config{Target: ts.URL, Token: tok, InsecureSkipVerify: true}
	if _, err := loadgen.CreateKey(ctx, cfg, client.CreateKeyRequest{Alias: "alias/doorbench"}); err != nil {
		b.Fatal(err)
	}
	ak, err := loadgen.CreateAccessKey(ctx, cfg, "doorbench", []string{"alias/doorbench"})
	if err != nil {
		b.Fatal(err)
	}
	cfg.AWSAccessKeyID, cfg.AWSSecretAccessKey = ak.ID, ak.SecretAccessKey
	cfg.KeyID, cfg.Concurrency = "alias/doorbench", 32 // as bench/doors.sh
	return cfg
}

// benchDoor runs b.N encrypts of 32 bytes through door, 32 in flight. The
// generator shares the process (and its CPUs) with the server, so compare
// the doors with each other, not with bench/doors.sh's numbers.
func benchDoor(b *testing.B, door loadgen.Door, op loadgen.Op) {
	cfg := doorBench(b)
	cfg.Door, cfg.Op, cfg.Warmup = door, op, 0
	cfg.Requests = 500 // warm the connections up
	if _, err := loadgen.Run(context.Background(), cfg); err != nil {
		b.Fatal(err)
	}
	cfg.Requests = int64(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	res, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	if res.Errors > 0 {
		b.Fatalf("%d requests failed, first: %s", res.Errors, res.FirstError)
	}
	b.ReportMetric(res.OpsPerSec, "ops/s")
}

func BenchmarkRESTEncrypt(b *testing.B)  { benchDoor(b, loadgen.DoorREST, loadgen.OpEncrypt) }
func BenchmarkAWSEncrypt(b *testing.B)   { benchDoor(b, loadgen.DoorAWSKMS, loadgen.OpEncrypt) }
func BenchmarkVaultEncrypt(b *testing.B) { benchDoor(b, loadgen.DoorVault, loadgen.OpEncrypt) }
func BenchmarkRESTDecrypt(b *testing.B)  { benchDoor(b, loadgen.DoorREST, loadgen.OpDecrypt) }
func BenchmarkAWSDecrypt(b *testing.B)   { benchDoor(b, loadgen.DoorAWSKMS, loadgen.OpDecrypt) }
