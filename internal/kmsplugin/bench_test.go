package kmsplugin

// KMS v2 gRPC latency over the unix socket, plugin -> real Coffer server on
// loopback (HTTP/1.1 keep-alive, bbolt storage), one call at a time like the
// apiserver's seed wrap/unwrap. Reports p50 and p99 per call in µs.
//
//	go test -run '^$' -bench BenchmarkGRPC -benchtime 5000x ./internal/kmsplugin/

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	kmsapi "k8s.io/kms/apis/v2"

	"github.com/cofferkms/coffer/client"
)

func benchPlugin(b *testing.B) kmsapi.KeyManagementServiceClient {
	b.Helper()
	srv := startCoffer(b, shortTempDir(b), "127.0.0.1:0", "")
	c := newCofferClient(b, srv)
	if _, err := c.CreateKey(context.Background(), client.CreateKeyRequest{Alias: "alias/k8s"}); err != nil {
		b.Fatal(err)
	}
	sp := servePlugin(b, Config{Coffer: c, Key: "alias/k8s", HealthInterval: 10 * time.Second})
	kms := dialKMS(b, sp.Socket)
	// Warm up the gRPC connection and Coffer's HTTP connection.
	for range 50 {
		if _, err := kms.Encrypt(context.Background(), &kmsapi.EncryptRequest{Plaintext: make([]byte, 32)}); err != nil {
			b.Fatal(err)
		}
	}
	return kms
}

// measure runs op b.N times and reports the p50 and p99 latencies.
func measure(b *testing.B, op func() error) {
	b.Helper()
	lat := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

func BenchmarkGRPCStatus(b *testing.B) {
	kms := benchPlugin(b)
	ctx := context.Background()
	measure(b, func() error {
		_, err := kms.Status(ctx, &kmsapi.StatusRequest{})
		return err
	})
}

func BenchmarkGRPCEncrypt(b *testing.B) {
	kms := benchPlugin(b)
	ctx := context.Background()
	seed := make([]byte, 32) // the apiserver wraps 32-byte seeds
	rand.Read(seed)
	measure(b, func() error {
		_, err := kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: seed, Uid: "bench"})
		return err
	})
}

func BenchmarkGRPCDecrypt(b *testing.B) {
	kms := benchPlugin(b)
	ctx := context.Background()
	seed := make([]byte, 32)
	rand.Read(seed)
	enc, err := kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: seed})
	if err != nil {
		b.Fatal(err)
	}
	req := &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations, Uid: "bench"}
	measure(b, func() error {
		_, err := kms.Decrypt(ctx, req)
		return err
	})
}
