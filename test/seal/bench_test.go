package seal

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// benchTarget is one initialized, unsealed server of a seal type with the
// shares that unseal it after a manual seal (unseal shares under Shamir,
// recovery shares under an auto-unseal).
type benchTarget struct {
	typ    string
	s      *server
	root   *client.Client
	shares []string
}

// BenchmarkSeal measures, in one run and under the same load, for each
// seal type (shamir, pkcs11 on SoftHSM2, tpm2 on swtpm bound to PCR 16,
// transit to a second coffer over TLS on loopback):
//
//   - unseal/TYPE: one manual seal and a quorum unseal through the API
//     (POST /v1/sys/seal, then 2 shares to /v1/sys/unseal). Under Shamir
//     the shares rebuild the key-encryption key; under an auto-unseal they
//     are recovery shares: the server asks the device to unwrap the root
//     key, then checks the shares against it. So it is the device's unwrap
//     plus the fixed cost of the HTTP calls and reloading the keyring.
//   - restart/TYPE: SIGKILL and a restart of the server process until
//     /readyz answers 200 (Shamir: with the 2 unseal shares submitted by
//     the benchmark as soon as the server listens). unseal_s is the
//     server's own figure for its last auto-unseal (seal-status
//     unseal_seconds: the unwrap and loading the keyring and caches).
//   - encrypt: Encrypt of 32 bytes with 16 concurrent clients, TYPE_ops/s,
//     interleaved: SEAL_BENCH_ROUNDS (default 10) rounds of 300 ms per
//     type, the order rotating. The seal is not on the crypto path: the
//     ratio to shamir should be 1 within noise.
//
// bench/unseal.sh runs it and prints the table.
func BenchmarkSeal(b *testing.B) {
	requireE2E(b)
	targets := []*benchTarget{benchShamir(b), benchPKCS11(b), benchTPM(b), benchTransit(b)}
	for _, tg := range targets {
		tg.root = tg.s.client(tg.root.Token())
		must[*client.Key](b, "CreateKey")(tg.root.CreateKey(testCtx(b), client.CreateKeyRequest{Alias: "alias/bench"}))
	}
	for _, tg := range targets {
		b.Run("unseal/"+tg.typ, func(b *testing.B) {
			ctx := testCtx(b)
			c := tg.s.client("")
			for b.Loop() {
				if err := tg.root.Seal(ctx); err != nil {
					b.Fatal(err)
				}
				var st *client.SealStatus
				for _, sh := range tg.shares[:2] {
					st = must[*client.SealStatus](b, "Unseal")(c.Unseal(ctx, client.UnsealRequest{Share: sh}))
				}
				if st.Sealed {
					b.Fatalf("still sealed: %s", describe(st))
				}
			}
		})
	}
	for _, tg := range targets {
		b.Run("restart/"+tg.typ, func(b *testing.B) {
			c := tg.s.client("")
			var unsealSecs float64
			for b.Loop() {
				tg.s.restart()
				if tg.typ == "shamir" {
					unsealShares(b, c, tg.shares[:2]...)
				} else {
					waitUnsealed(b, c, patience())
					unsealSecs += status(b, c).Seal.UnsealSeconds
				}
			}
			if tg.typ != "shamir" {
				b.ReportMetric(unsealSecs/float64(b.N), "unseal_s")
			}
		})
	}
	// The encrypt rates are measured interleaved: rounds of a short slice
	// per type, the order rotating each round, so that the load of a
	// shared machine drifting over the run falls on every type alike.
	b.Run("encrypt", func(b *testing.B) {
		rounds := 10
		if n, err := strconv.Atoi(os.Getenv("SEAL_BENCH_ROUNDS")); err == nil && n > 0 {
			rounds = n
		}
		ops := make([]int64, len(targets))
		spent := make([]time.Duration, len(targets))
		for r := range rounds {
			for k := range targets {
				i := (r + k) % len(targets)
				n, d := encryptFor(b, targets[i].root, 300*time.Millisecond, 16)
				ops[i] += n
				spent[i] += d
			}
		}
		for i, tg := range targets {
			b.ReportMetric(float64(ops[i])/spent[i].Seconds(), tg.typ+"_ops/s")
		}
	})
}

// encryptFor runs workers concurrent Encrypt calls of 32 bytes for d and
// returns how many completed and how long it took.
func encryptFor(b *testing.B, c *client.Client, d time.Duration, workers int) (int64, time.Duration) {
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pt := make([]byte, 32)
			ctx := context.Background()
			for time.Now().Before(stop) {
				if _, err := c.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/bench", Plaintext: pt}); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), time.Since(start)
}

func benchShamir(b *testing.B) *benchTarget {
	s := newServer(b, "bench-shamir")
	s.mustStart()
	c := s.client("")
	ir := must[*client.InitResponse](b, "Init")(c.Init(testCtx(b), client.InitRequest{Shares: 3, Threshold: 2}))
	unsealShares(b, c, ir.Shares[:2]...)
	return &benchTarget{typ: "shamir", s: s, root: s.client(ir.RootToken), shares: ir.Shares}
}

func benchAuto(b *testing.B, typ string, s *server) *benchTarget {
	s.mustStart()
	ir := initAuto(b, s, typ, 3, 2)
	return &benchTarget{typ: typ, s: s, root: s.client(ir.RootToken), shares: ir.RecoveryShares}
}

func benchPKCS11(b *testing.B) *benchTarget {
	h := newHSM(b, "bench")
	s := newServer(b, "bench-pkcs11", h.env()...)
	s.seal = h.seal("bench", "root-wrap", true).yaml()
	return benchAuto(b, "pkcs11", s)
}

func benchTPM(b *testing.B) *benchTarget {
	sw := newSwtpm(b)
	s := newServer(b, "bench-tpm")
	s.seal = tpmSeal(sw)
	return benchAuto(b, "tpm2", s)
}

func benchTransit(b *testing.B) *benchTarget {
	u := newUnsealer(b)
	s := newServer(b, "bench-transit")
	s.seal = u.seal(b)
	return benchAuto(b, "transit", s)
}
