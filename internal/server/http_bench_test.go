package server_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// benchServer starts the full REST stack on loopback (TLS when tls is set)
// and returns a client holding a root token and a key id.
func benchServer(b *testing.B, tls bool) (*client.Client, string) {
	b.Helper()
	ctx := context.Background()
	bar := barrier.New(inmem.New())
	s := sys.New(bar, nil)
	_, tok, err := s.DevBootstrap(ctx, "", "")
	if err != nil {
		b.Fatal(err)
	}
	h := server.New(s, server.Options{})
	var ts *httptest.Server
	if tls {
		ts = httptest.NewUnstartedServer(h)
		ts.EnableHTTP2 = true
		ts.StartTLS()
	} else {
		ts = httptest.NewServer(h)
	}
	b.Cleanup(ts.Close)
	opts := []client.Option{client.WithToken(tok)}
	if tls {
		opts = append(opts, client.WithHTTPClient(ts.Client()))
	}
	c, err := client.New(ts.URL, opts...)
	if err != nil {
		b.Fatal(err)
	}
	k, err := c.CreateKey(ctx, client.CreateKeyRequest{})
	if err != nil {
		b.Fatal(err)
	}
	return c, k.ID
}

func benchHTTPEncrypt(b *testing.B, tls bool, size int) {
	c, id := benchServer(b, tls)
	req := client.EncryptRequest{KeyID: id, Plaintext: make([]byte, size), Context: map[string]string{"app": "bench"}}
	b.SetBytes(int64(size))
	b.SetParallelism(16) // 32 in-flight requests on 2 cores, as in bench/http-floor.sh
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Encrypt(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkHTTPEncrypt32B(b *testing.B)   { benchHTTPEncrypt(b, false, 32) }
func BenchmarkHTTPEncrypt4KiB(b *testing.B)  { benchHTTPEncrypt(b, false, 4096) }
func BenchmarkHTTPSEncrypt32B(b *testing.B)  { benchHTTPEncrypt(b, true, 32) }
func BenchmarkHTTPSEncrypt4KiB(b *testing.B) { benchHTTPEncrypt(b, true, 4096) }

func BenchmarkHTTPDecrypt32B(b *testing.B) {
	c, id := benchServer(b, false)
	ctx := context.Background()
	enc, err := c.Encrypt(ctx, client.EncryptRequest{KeyID: id, Plaintext: make([]byte, 32)})
	if err != nil {
		b.Fatal(err)
	}
	req := client.DecryptRequest{Ciphertext: enc.Ciphertext}
	b.SetBytes(32)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Decrypt(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkHTTPEncryptBatch100x32B(b *testing.B) {
	c, id := benchServer(b, false)
	items := make([]client.EncryptRequest, 100)
	for i := range items {
		items[i].Plaintext = make([]byte, 32)
	}
	req := client.BatchEncryptRequest{KeyID: id, Items: items}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.EncryptBatch(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "items/s")
}
