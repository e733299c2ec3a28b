package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/rawapi"
)

// ledger is what the server acknowledged (answered 2xx): after any crash,
// all of it must still be there.
type ledger struct {
	mu   sync.Mutex
	keys map[string]uint32 // key id -> highest acknowledged primary version
	ids  []string
	cts  []ackedCiphertext
}

type ackedCiphertext struct {
	keyID   string
	version uint32
	ct, pt  []byte
	ec      map[string]string
}

func (l *ledger) ackKey(k client.Key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.keys[k.ID]
	if !ok {
		l.ids = append(l.ids, k.ID)
	}
	if k.PrimaryVersion > v {
		l.keys[k.ID] = k.PrimaryVersion
	}
}

func (l *ledger) ackCiphertext(c ackedCiphertext) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cts = append(l.cts, c)
	// An encryption acknowledges the key version it used, too.
	if c.version > l.keys[c.keyID] {
		l.keys[c.keyID] = c.version
	}
}

func (l *ledger) randomKey(r *rand.Rand) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids[r.IntN(len(l.ids))]
}

// TestCrashDurability writes from several goroutines, SIGKILLs the server at
// a random moment, restarts it, and checks that every acknowledged key,
// rotation and ciphertext survived. Nothing acknowledged may be lost.
func TestCrashDurability(t *testing.T) {
	const (
		cycles  = 20
		writers = 4
	)
	began := time.Now()
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	srv := StartServer(t, "--config", cfg)
	api := newAPI(srv, "")
	ir := api.Init(t, 3, 2)
	api.Unseal(t, ir.Shares[0], ir.Shares[1])
	api.Token = ir.RootToken

	led := &ledger{keys: map[string]uint32{}}
	for range 3 {
		var k client.Key
		api.Must(t, "POST", "/v1/keys", client.CreateKeyRequest{Description: "crash seed"}, &k)
		led.ackKey(k)
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var attempted, failed int
	var checkedKeys, checkedCts int
	for cycle := range cycles {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var statMu sync.Mutex
		for w := range writers {
			wr := rand.New(rand.NewPCG(seed, uint64(cycle*writers+w+1)))
			wg.Go(func() {
				for ctx.Err() == nil {
					err := writeOnce(ctx, api, led, wr)
					statMu.Lock()
					attempted++
					if err != nil {
						failed++
					}
					statMu.Unlock()
					var se *rawapi.StatusError
					if errors.As(err, &se) {
						// A live server never refuses these writes.
						t.Errorf("cycle %d: %v", cycle, err)
						return
					}
					if err != nil {
						time.Sleep(time.Millisecond) // dying server: connection refused
					}
				}
			})
		}
		time.Sleep(time.Duration(20+rng.IntN(281)) * time.Millisecond)
		srv.Kill()
		cancel()
		wg.Wait()
		if t.Failed() {
			t.Fatalf("cycle %d failed; server output:\n%s", cycle, srv.Output())
		}

		srv.Restart()
		api.HC.CloseIdleConnections()
		st := api.SealStatus(t)
		if !st.Initialized || !st.Sealed || st.Progress != 0 {
			t.Fatalf("cycle %d: after restart seal status %+v, want initialized and sealed", cycle, st)
		}
		api.WantStatus(t, "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: led.randomKey(rng), Plaintext: []byte("x")},
			http.StatusServiceUnavailable, "sealed")
		// A different pair of shares each time.
		i := cycle % 3
		api.Unseal(t, ir.Shares[i], ir.Shares[(i+1)%3])

		nk, nc := verifyLedger(t, api, led)
		checkedKeys += nk
		checkedCts += nc
		if t.Failed() {
			t.Fatalf("cycle %d lost acknowledged data", cycle)
		}
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	rotations := 0
	for _, v := range led.keys {
		rotations += int(v) - 1
	}
	t.Logf("%d cycles in %v: %d writes attempted, %d cut off by kills; ledger holds %d keys (%d acknowledged rotations) and %d ciphertexts; verified %d key and %d ciphertext checks in all",
		cycles, time.Since(began).Round(time.Millisecond), attempted, failed, len(led.keys), rotations, len(led.cts), checkedKeys, checkedCts)
	if len(led.cts) < cycles || len(led.keys) < 2*cycles {
		t.Errorf("too little was acknowledged to prove anything: %d keys, %d ciphertexts", len(led.keys), len(led.cts))
	}
}

// writeOnce does one random write and records it when acknowledged.
func writeOnce(ctx context.Context, api *rawapi.API, led *ledger, r *rand.Rand) error {
	switch n := r.IntN(10); {
	case n < 3:
		var k client.Key
		if err := api.Do(ctx, "POST", "/v1/keys", client.CreateKeyRequest{Tags: map[string]string{"n": hex.EncodeToString(randBytes(r, 4))}}, &k); err != nil {
			return err
		}
		led.ackKey(k)
	case n < 5:
		var k client.Key
		if err := api.Do(ctx, "POST", "/v1/keys/"+led.randomKey(r)+"/rotate", nil, &k); err != nil {
			return err
		}
		led.ackKey(k)
	default:
		req := client.EncryptRequest{KeyID: led.randomKey(r), Plaintext: randBytes(r, 1+r.IntN(64))}
		if r.IntN(4) > 0 {
			req.Context = map[string]string{"tenant": hex.EncodeToString(randBytes(r, 6)), "n": hex.EncodeToString(randBytes(r, 2))}
		}
		var resp client.EncryptResponse
		if err := api.Do(ctx, "POST", "/v1/kms/encrypt", req, &resp); err != nil {
			return err
		}
		led.ackCiphertext(ackedCiphertext{keyID: resp.KeyID, version: resp.KeyVersion, ct: resp.Ciphertext, pt: req.Plaintext, ec: req.Context})
	}
	return nil
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// verifyLedger checks every acknowledged key (GET /v1/keys/{id}), rotation
// (primary_version at least the acknowledged one) and ciphertext (decrypts
// to its plaintext with its context). It returns how many keys and
// ciphertexts it checked.
func verifyLedger(t *testing.T, api *rawapi.API, led *ledger) (int, int) {
	t.Helper()
	led.mu.Lock()
	defer led.mu.Unlock()
	for _, id := range led.ids {
		var k client.Key
		if err := api.Do(context.Background(), "GET", "/v1/keys/"+id, nil, &k); err != nil {
			t.Errorf("acknowledged key %s: %v", id, err)
			continue
		}
		if k.PrimaryVersion < led.keys[id] || len(k.Versions) < int(led.keys[id]) {
			t.Errorf("key %s: primary version %d (%d versions), but version %d was acknowledged", id, k.PrimaryVersion, len(k.Versions), led.keys[id])
		}
	}
	for start := 0; start < len(led.cts); start += 1000 {
		batch := led.cts[start:min(start+1000, len(led.cts))]
		req := client.BatchDecryptRequest{Items: make([]client.DecryptRequest, len(batch))}
		for i, c := range batch {
			req.Items[i] = client.DecryptRequest{Ciphertext: c.ct, Context: c.ec, KeyID: c.keyID}
		}
		var resp client.BatchDecryptResponse
		api.Must(t, "POST", "/v1/kms/decrypt-batch", req, &resp)
		if len(resp.Results) != len(batch) {
			t.Fatalf("decrypt-batch: %d results for %d items", len(resp.Results), len(batch))
		}
		for i, res := range resp.Results {
			c := batch[i]
			if res.Error != nil {
				t.Errorf("acknowledged ciphertext under %s v%d: %s: %s", c.keyID, c.version, res.Error.Code, res.Error.Message)
				continue
			}
			if !bytes.Equal(res.Plaintext, c.pt) || res.KeyID != c.keyID || res.KeyVersion != c.version {
				t.Errorf("ciphertext under %s v%d decrypted to %x (%s v%d), want %x", c.keyID, c.version, res.Plaintext, res.KeyID, res.KeyVersion, c.pt)
			}
		}
	}
	return len(led.ids), len(led.cts)
}
