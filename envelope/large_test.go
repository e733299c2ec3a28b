package envelope

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestLargeStream pushes 3 GB through Encrypt, a pipe and Decrypt, and
// checks the plaintext hash and that the heap stays small. It streams 3 GB
// in CI (COFFER_E2E or COFFER_LARGE set, about 5-10 s) and 256 MiB
// otherwise; COFFER_LARGE_BYTES sets another size.
func TestLargeStream(t *testing.T) {
	size := int64(256 << 20)
	if os.Getenv("COFFER_E2E") != "" || os.Getenv("COFFER_LARGE") != "" {
		size = 3_000_000_000
	}
	if s := os.Getenv("COFFER_LARGE_BYTES"); s != "" {
		size, _ = strconv.ParseInt(s, 10, 64)
	}
	key := testKey(t, "large")
	src := io.LimitReader(rand.NewChaCha8([32]byte{3}), size)
	inHash, outHash := sha256.New(), sha256.New()

	pr, pw := io.Pipe()
	go func() {
		w, err := Encrypt(pw, key, nil)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		if _, err := io.Copy(w, io.TeeReader(src, inHash)); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(w.Close())
	}()

	var peak uint64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}()
	start := time.Now()
	r, err := Decrypt(pr, key)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(outHash, r)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	if n != size || string(inHash.Sum(nil)) != string(outHash.Sum(nil)) {
		t.Fatalf("got %d bytes, hash equal %v", n, string(inHash.Sum(nil)) == string(outHash.Sum(nil)))
	}
	t.Logf("%d bytes in %v, peak heap in use %.1f MiB", n, time.Since(start), float64(peak)/(1<<20))
	if peak > 32<<20 {
		t.Errorf("peak heap %d MiB, want < 32 MiB", peak>>20)
	}
}
