package envelope

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// testKey returns a fixed local key, so failures reproduce.
func testKey(t testing.TB, name string) *LocalKey {
	t.Helper()
	sum := sha256.Sum256([]byte(name))
	k, err := NewLocalKey(name, 1, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// data returns n deterministic pseudo-random bytes.
func data(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b
}

func seal(t testing.TB, w Wrapper, pt []byte, opts *EncryptOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	wc, err := Encrypt(&buf, w, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wc.Write(pt); err != nil {
		t.Fatal(err)
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(file []byte, opts *DecryptOptions, us ...Unwrapper) ([]byte, error) {
	r, err := DecryptWithOptions(bytes.NewReader(file), opts, us...)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestRoundTrip(t *testing.T) {
	for _, wb := range []int{1000, windowBytes} {
		t.Run(fmt.Sprintf("window=%d", wb), func(t *testing.T) {
			defer func(old int) { windowBytes = old }(windowBytes)
			windowBytes = wb
			testRoundTrip(t)
		})
	}
}

func testRoundTrip(t *testing.T) {
	key := testKey(t, "rt")
	for _, seg := range []int{MinSegmentSize, 1000, DefaultSegmentSize} {
		for _, n := range []int{0, 1, seg - 1, seg, seg + 1, 2*seg - 1, 2 * seg, 7*seg + 3, 40*seg + 5} {
			if n > 4<<20 {
				continue
			}
			for _, workers := range []int{1, 3} {
				t.Run(fmt.Sprintf("seg=%d/n=%d/workers=%d", seg, n, workers), func(t *testing.T) {
					pt := data(n)
					ec := map[string]string{"bucket": "b1", "object": fmt.Sprint(n)}
					file := seal(t, key, pt, &EncryptOptions{EncryptionContext: ec, SegmentSize: seg, Concurrency: workers})
					nseg := max(1, (n+seg-1)/seg)
					hdr, err := ReadHeader(bytes.NewReader(file))
					if err != nil {
						t.Fatal(err)
					}
					if want := hdr.Size + int64(n) + int64(nseg*tagSize); int64(len(file)) != want {
						t.Errorf("file is %d bytes, want %d", len(file), want)
					}
					if got, err := hdr.PlaintextSize(int64(len(file))); err != nil || got != int64(n) {
						t.Errorf("PlaintextSize = %d, %v; want %d", got, err, n)
					}

					got, err := open(file, &DecryptOptions{Concurrency: workers, EncryptionContext: ec}, key)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, pt) {
						t.Fatal("plaintext differs")
					}
					// Small reads from a slow source.
					r, err := Decrypt(iotest.HalfReader(bytes.NewReader(file)), key)
					if err != nil {
						t.Fatal(err)
					}
					got, err = io.ReadAll(iotest.OneByteReader(r))
					if err != nil || !bytes.Equal(got, pt) {
						t.Fatalf("one-byte reads: err %v, equal %v", err, bytes.Equal(got, pt))
					}
				})
			}
		}
	}
}

// TestWriteChunks writes the plaintext in uneven pieces.
func TestWriteChunks(t *testing.T) {
	key := testKey(t, "chunks")
	pt := data(10*1000 + 17)
	var buf bytes.Buffer
	w, err := Encrypt(&buf, key, &EncryptOptions{SegmentSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for p, i := pt, 1; len(p) > 0; i = i*3 + 1 {
		k := min(i%2501, len(p))
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
	got, err := open(buf.Bytes(), nil, key)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("err %v, equal %v", err, bytes.Equal(got, pt))
	}
}

func TestReaderAt(t *testing.T) {
	key := testKey(t, "ra")
	const seg = 256
	for _, n := range []int{0, 1, seg, seg + 1, 50*seg + 7} {
		pt := data(n)
		file := seal(t, key, pt, &EncryptOptions{SegmentSize: seg})
		ra, err := NewReaderAt(bytes.NewReader(file), int64(len(file)), &DecryptOptions{Concurrency: 2}, key)
		if err != nil {
			t.Fatal(err)
		}
		if ra.Size() != int64(n) {
			t.Fatalf("Size = %d, want %d", ra.Size(), n)
		}
		for _, r := range [][2]int{{0, n}, {0, 1}, {n / 2, n/2 + 3*seg}, {seg - 1, seg + 1}, {n - 1, n}, {n, n + 5}, {3, 3}} {
			off, end := r[0], r[1]
			if off < 0 || off > n || end < off {
				continue
			}
			p := make([]byte, end-off)
			k, err := ra.ReadAt(p, int64(off))
			want := pt[off:min(end, n)]
			if !bytes.Equal(p[:k], want) {
				t.Errorf("n=%d ReadAt(%d..%d): wrong bytes", n, off, end)
			}
			if wantEOF := end > n; wantEOF != errors.Is(err, io.EOF) || (!wantEOF && err != nil) {
				t.Errorf("n=%d ReadAt(%d..%d): err %v", n, off, end, err)
			}
		}
		// io.SectionReader over it reads the whole plaintext.
		got, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("n=%d: section read: %v", n, err)
		}
	}
}

func TestReaderAtTruncated(t *testing.T) {
	key := testKey(t, "ra")
	file := seal(t, key, data(10*256), &EncryptOptions{SegmentSize: 256})
	cut := file[:len(file)-(256+tagSize)] // drop the final segment whole
	_, err := NewReaderAt(bytes.NewReader(cut), int64(len(cut)), nil, key)
	if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("NewReaderAt: %v, want ErrAuthentication saying truncated", err)
	}
}

// TestMultiRecovery: a file wrapped for two keys opens with either.
func TestMultiRecovery(t *testing.T) {
	prod, dr := testKey(t, "prod"), testKey(t, "dr")
	pt := data(5000)
	file := seal(t, Multi(prod, dr), pt, &EncryptOptions{SegmentSize: 1024})
	hdr, err := ReadHeader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(hdr.Stanzas) != 2 || hdr.Stanzas[0].KeyID != "prod" || hdr.Stanzas[1].KeyID != "dr" {
		t.Fatalf("stanzas %+v", hdr.Stanzas)
	}
	for _, u := range []Unwrapper{prod, dr} {
		got, err := open(file, nil, testKey(t, "other"), u)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("%v: %v", u.(*LocalKey).Name(), err)
		}
	}
	_, err = open(file, nil, testKey(t, "other"))
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("other key: %v, want ErrWrongKey", err)
	}
}

// TestStreamReleasesOnlyAuthenticated: with segment 3 altered, the reader
// yields segments 0..2 and then the error, never segment 3's bytes.
func TestStreamReleasesOnlyAuthenticated(t *testing.T) {
	defer func(old int) { windowBytes = old }(windowBytes)
	windowBytes = 300 // windows of 3 segments: the bad one is in the second
	key := testKey(t, "auth")
	const seg = 100
	pt := data(10 * seg)
	file := seal(t, key, pt, &EncryptOptions{SegmentSize: seg})
	hdr, _ := ReadHeader(bytes.NewReader(file))
	file[hdr.Size+3*(seg+tagSize)+5] ^= 1
	got, err := open(file, &DecryptOptions{Concurrency: 4}, key)
	if !errors.Is(err, ErrAuthentication) {
		t.Fatalf("err %v", err)
	}
	if len(got) > 3*seg || !bytes.Equal(got, pt[:len(got)]) {
		t.Fatalf("released %d bytes", len(got))
	}
}

func TestEncryptOptionsErrors(t *testing.T) {
	key := testKey(t, "opts")
	for _, o := range []*EncryptOptions{
		{SegmentSize: MinSegmentSize - 1},
		{SegmentSize: MaxSegmentSize + 1},
		{EncryptionContext: map[string]string{"": "x"}},
	} {
		if _, err := Encrypt(io.Discard, key, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	if _, err := Encrypt(io.Discard, nil, nil); err == nil {
		t.Error("nil wrapper: no error")
	}
}

func BenchmarkEncrypt(b *testing.B) {
	for _, seg := range []int{64 << 10, 1 << 20} {
		pt := data(32 << 20)
		key := testKey(b, "bench")
		b.Run(fmt.Sprintf("seg=%dK", seg>>10), func(b *testing.B) {
			b.SetBytes(int64(len(pt)))
			for b.Loop() {
				w, _ := Encrypt(io.Discard, key, &EncryptOptions{SegmentSize: seg})
				_, _ = w.Write(pt)
				_ = w.Close()
			}
		})
	}
}

func BenchmarkDecrypt(b *testing.B) {
	for _, seg := range []int{64 << 10, 1 << 20} {
		key := testKey(b, "bench")
		file := seal(b, key, data(32<<20), &EncryptOptions{SegmentSize: seg})
		b.Run(fmt.Sprintf("seg=%dK", seg>>10), func(b *testing.B) {
			b.SetBytes(int64(len(file)))
			for b.Loop() {
				r, _ := Decrypt(bytes.NewReader(file), key)
				_, _ = io.Copy(io.Discard, r)
			}
		})
	}
}

func BenchmarkEncrypt1KiBCached(b *testing.B) {
	c, _ := NewCachingWrapper(testKey(b, "bench"), nil, CacheLimits{MaxMessages: 1 << 40, MaxAge: 1 << 60})
	pt := data(1024)
	b.SetBytes(1024)
	for b.Loop() {
		w, _ := Encrypt(io.Discard, c, nil)
		_, _ = w.Write(pt)
		_ = w.Close()
	}
}

// TestReadFromAndWriteTo covers the copy paths io.Copy takes: the writer's
// ReadFrom (with sources that end on and off segment and window
// boundaries) and the reader's WriteTo.
func TestReadFromAndWriteTo(t *testing.T) {
	key := testKey(t, "copy")
	defer func(old int) { windowBytes = old }(windowBytes)
	windowBytes = 1000
	const seg = 100
	win := window(2, seg)
	if win != 10 {
		t.Fatalf("window %d", win)
	}
	for _, n := range []int{0, 1, seg, seg + 1, win * seg, win*seg + 1, 3*win*seg - 1, 3 * win * seg} {
		pt := data(n)
		for _, src := range []io.Reader{bytes.NewReader(pt), iotest.HalfReader(bytes.NewReader(pt)), iotest.DataErrReader(bytes.NewReader(pt))} {
			var buf bytes.Buffer
			w, err := Encrypt(&buf, key, &EncryptOptions{SegmentSize: seg, Concurrency: 2})
			if err != nil {
				t.Fatal(err)
			}
			if k, err := io.Copy(w, src); err != nil || k != int64(n) {
				t.Fatalf("n=%d: copied %d, %v", n, k, err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if want := seal(t, key, pt, &EncryptOptions{SegmentSize: seg}); len(want) != buf.Len() {
				t.Fatalf("n=%d: ReadFrom made %d bytes, Write %d", n, buf.Len(), len(want))
			}
			r, err := Decrypt(bytes.NewReader(buf.Bytes()), key)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if _, err := io.Copy(&out, r); err != nil || !bytes.Equal(out.Bytes(), pt) {
				t.Fatalf("n=%d: WriteTo: %v, equal %v", n, err, bytes.Equal(out.Bytes(), pt))
			}
		}
	}
}
