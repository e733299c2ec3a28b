package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/envelope/internal/format"
)

// tamperFile is a 6-segment file (segments of 64 bytes, the last short),
// read in windows of 4 segments for the duration of the test.
func tamperFile(t *testing.T) (file, pt []byte, hdrSize int, key *LocalKey) {
	t.Helper()
	old := windowBytes
	windowBytes = 64
	t.Cleanup(func() { windowBytes = old })
	key = testKey(t, "tamper")
	pt = data(5*64 + 10)
	file = seal(t, key, pt, &EncryptOptions{SegmentSize: 64, EncryptionContext: map[string]string{"a": "b"}})
	hdr, err := ReadHeader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	return file, pt, int(hdr.Size), key
}

// TestTamperEveryByte flips each bit position of every byte: decryption
// must fail with an error, never succeed or panic, and never release
// plaintext of an altered segment.
func TestTamperEveryByte(t *testing.T) {
	file, pt, hdrSize, key := tamperFile(t)
	for i := range file {
		for _, mask := range []byte{0x01, 0x80} {
			bad := bytes.Clone(file)
			bad[i] ^= mask
			got, err := open(bad, nil, key)
			if err == nil {
				t.Fatalf("byte %d ^ %#x: decrypted", i, mask)
			}
			if !bytes.Equal(got, pt[:len(got)]) {
				t.Fatalf("byte %d: released altered plaintext", i)
			}
			ra, err := NewReaderAt(bytes.NewReader(bad), int64(len(bad)), nil, key)
			if err == nil {
				_, err = io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
			}
			if err == nil {
				t.Fatalf("byte %d ^ %#x: ReaderAt decrypted", i, mask)
			}
			if i >= hdrSize {
				seg := (i - hdrSize) / (64 + tagSize)
				if !errors.Is(err, ErrAuthentication) || len(got) > seg*64 {
					t.Fatalf("body byte %d: err %v, released %d bytes", i, err, len(got))
				}
			}
		}
	}
}

func TestTruncateEveryLength(t *testing.T) {
	file, pt, hdrSize, key := tamperFile(t)
	for n := range len(file) {
		got, err := open(file[:n], nil, key)
		if err == nil {
			t.Fatalf("truncated to %d bytes: decrypted", n)
		}
		if n < hdrSize && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrNotEnvelope) {
			t.Errorf("truncated to %d (in header): %v", n, err)
		}
		if n >= hdrSize && !errors.Is(err, ErrAuthentication) {
			t.Errorf("truncated to %d (in body): %v", n, err)
		}
		if !bytes.Equal(got, pt[:len(got)]) {
			t.Fatalf("truncated to %d: wrong plaintext released", n)
		}
		if n > 0 && n < len(file) {
			ra, err := NewReaderAt(bytes.NewReader(file[:n]), int64(n), nil, key)
			if err == nil {
				_, err = io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
			}
			if err == nil {
				t.Fatalf("ReaderAt of %d bytes: no error", n)
			}
		}
	}
	// A cut at a segment boundary says so.
	_, err := open(file[:hdrSize+64+tagSize], nil, key)
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("cut at a segment boundary: %v", err)
	}
}

func TestAppendAndReorder(t *testing.T) {
	file, _, hdrSize, key := tamperFile(t)
	for name, bad := range map[string][]byte{
		"append byte":    append(bytes.Clone(file), 0),
		"append segment": append(bytes.Clone(file), file[hdrSize:hdrSize+64+tagSize]...),
		"append file":    append(bytes.Clone(file), file...),
		"swap 0 and 1": func() []byte {
			b := bytes.Clone(file)
			s := 64 + tagSize
			copy(b[hdrSize:], file[hdrSize+s:hdrSize+2*s])
			copy(b[hdrSize+s:], file[hdrSize:hdrSize+s])
			return b
		}(),
		"drop segment 1": append(bytes.Clone(file[:hdrSize+64+tagSize]), file[hdrSize+2*(64+tagSize):]...),
	} {
		if _, err := open(bad, nil, key); !errors.Is(err, ErrAuthentication) {
			t.Errorf("%s: %v, want ErrAuthentication", name, err)
		}
	}
}

func TestWrongKeyAndContext(t *testing.T) {
	file, _, _, key := tamperFile(t)
	if _, err := open(file, nil, testKey(t, "someone else")); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong key: %v", err)
	}
	// Same name, other key material: the wrapped key does not open.
	other, _ := NewLocalKey("tamper", 1, bytes.Repeat([]byte{7}, 32))
	if _, err := open(file, nil, other); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "does not authenticate") {
		t.Errorf("wrong key material: %v", err)
	}
	_, err := open(file, &DecryptOptions{EncryptionContext: map[string]string{"a": "c"}}, key)
	if !errors.Is(err, ErrContextMismatch) || !strings.Contains(err.Error(), "{a=b}") {
		t.Errorf("wrong context: %v", err)
	}
	if _, err := open(file, &DecryptOptions{EncryptionContext: map[string]string{}}, key); !errors.Is(err, ErrContextMismatch) {
		t.Errorf("empty expected context: %v", err)
	}
	if _, err := open(file, nil); err == nil {
		t.Error("no unwrapper: no error")
	}
}

// TestKeyCommitment: a header whose wrapped key opens to another data key
// fails on the commitment, even though the wrapper accepts it.
func TestKeyCommitment(t *testing.T) {
	file, _, _, key := tamperFile(t)
	h, body, err := format.Read(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	st, err := key.Wrap(t.Context(), bytes.Repeat([]byte{9}, 32), h.Context)
	if err != nil {
		t.Fatal(err)
	}
	h.Stanzas = []format.Stanza{format.Stanza(st[0])}
	nb, err := format.AppendBody(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	forged := append(nb, file[len(body):]...)
	if _, err := open(forged, nil, key); !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "key commitment") {
		t.Errorf("forged data key: %v", err)
	}
}

// TestHeaderFaults edits header fields to values a parser must refuse.
func TestHeaderFaults(t *testing.T) {
	file, _, _, key := tamperFile(t)
	set := func(off int, b ...byte) []byte {
		f := bytes.Clone(file)
		copy(f[off:], b)
		return f
	}
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	for _, tc := range []struct {
		name string
		file []byte
		is   error
		msg  string
	}{
		{"magic", set(0, 'X'), ErrNotEnvelope, "does not start with"},
		{"version 0", set(4, 0), ErrVersion, "unknown format version 0"},
		{"newer version", set(4, 2), ErrVersion, "newer format version 2"},
		{"algorithm", set(5, 9), ErrMalformed, "unknown algorithm id 9"},
		{"huge segment", set(6, be32(1<<31)...), ErrMalformed, "segment size 2147483648"},
		{"tiny segment", set(6, be32(1)...), ErrMalformed, "segment size 1"},
		{"huge context", set(49, 0xff, 0xff), ErrMalformed, "65535"},
		{"no stanzas", set(49+2+5, 0), ErrMalformed, "0 wrapped keys"},
		{"many stanzas", set(49+2+5, 200), ErrMalformed, "200 wrapped keys"},
		{"empty", nil, ErrTruncated, "ends inside"},
		{"text", []byte("hello world, this is not an envelope file"), ErrNotEnvelope, "does not start with"},
	} {
		_, err := open(tc.file, nil, key)
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v; want %v containing %q", tc.name, err, tc.is, tc.msg)
		}
	}
}

// TestHugeClaimsAllocateLittle: a header claiming the largest sizes costs
// a bounded amount of memory to reject.
func TestHugeClaimsAllocateLittle(t *testing.T) {
	file, _, _, key := tamperFile(t)
	bad := bytes.Clone(file)
	bad[49], bad[50] = 0x3f, 0xff // a 16 KiB context that is not there
	allocs := testing.AllocsPerRun(10, func() {
		_, _ = open(bad, nil, key)
	})
	if allocs > 100 {
		t.Errorf("%v allocations", allocs)
	}
}
