package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the test vectors in testdata/")

type kv struct {
	k string
	v []byte
}

var testTime = time.Date(2026, 12, 5, 12, 0, 0, 123456789, time.UTC)

func testHeader(n int) Header {
	return Header{CofferVersion: "0.14.0", Backend: "bbolt", Revision: 42, Created: testTime, Count: uint64(n)}
}

// encode writes entries with a Writer.
func encode(t testing.TB, h Header, entries []kv) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := w.Add(e.k, e.v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// decode reads a whole snapshot.
func decode(data []byte, opts ReadOptions) (Header, []kv, error) {
	r, err := NewReader(bytes.NewReader(data), opts)
	if err != nil {
		return Header{}, nil, err
	}
	var out []kv
	for {
		k, v, err := r.Next()
		if err == io.EOF {
			return r.Header(), out, nil
		}
		if err != nil {
			return r.Header(), out, err
		}
		out = append(out, kv{k, bytes.Clone(v)})
	}
}

// raw builds a snapshot byte by byte, with a correct checksum unless told
// otherwise, so that each refusal is tested on its own.
type raw struct {
	magic        string
	format       uint16
	version      string
	backend      string
	count        uint64
	records      [][]byte
	trailerCount *uint64
	badSum       bool
	formatZero   bool
	revision     int64
}

func rec(key string, value []byte) []byte {
	b := []byte{tagRecord}
	b = binary.BigEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(value)))
	return append(b, value...)
}

func (r raw) bytes() []byte {
	if r.magic == "" {
		r.magic = Magic
	}
	if r.format == 0 && !r.formatZero {
		r.format = FormatVersion
	}
	if r.revision == 0 {
		r.revision = 7
	}
	if r.version == "" {
		r.version = "0.14.0"
	}
	if r.backend == "" {
		r.backend = "bbolt"
	}
	b := []byte(r.magic)
	b = binary.BigEndian.AppendUint16(b, r.format)
	b = appendStr16(b, r.version)
	b = appendStr16(b, r.backend)
	b = binary.BigEndian.AppendUint64(b, uint64(r.revision))
	b = binary.BigEndian.AppendUint64(b, uint64(testTime.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, r.count)
	for _, x := range r.records {
		b = append(b, x...)
	}
	tc := uint64(len(r.records))
	if r.trailerCount != nil {
		tc = *r.trailerCount
	}
	b = append(b, tagTrailer)
	b = binary.BigEndian.AppendUint64(b, tc)
	s := sha256.Sum256(b)
	if r.badSum {
		s[0] ^= 1
	}
	return append(b, s[:]...)
}

var sample = []kv{
	{"aliases/app", []byte("ciphertext-1")},
	{"core/keyring", bytes.Repeat([]byte{0xC0}, 300)},
	{"core/seal-config", []byte{}},
	{"keys/9f3c", []byte{0, 1, 2, 3, 255}},
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, len(sample)} {
		h := testHeader(n)
		data := encode(t, h, sample[:n])
		gotH, got, err := decode(data, ReadOptions{CofferVersion: "0.14.0"})
		if err != nil {
			t.Fatalf("%d entries: %v", n, err)
		}
		h.Format = FormatVersion
		if gotH != h {
			t.Errorf("header %+v, want %+v", gotH, h)
		}
		if len(got) != n {
			t.Fatalf("read %d entries, want %d", len(got), n)
		}
		for i := range got {
			if got[i].k != sample[i].k || !bytes.Equal(got[i].v, sample[i].v) {
				t.Errorf("entry %d: %q=%x, want %q=%x", i, got[i].k, got[i].v, sample[i].k, sample[i].v)
			}
		}
		sum, err := Verify(bytes.NewReader(data), ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Bytes != int64(len(data)) || sum.Count != uint64(n) {
			t.Errorf("summary %+v for %d bytes", sum, len(data))
		}
		want := fmt.Sprintf("%x", sha256.Sum256(data[:len(data)-32]))
		if sum.Checksum != want {
			t.Errorf("checksum %s, want %s", sum.Checksum, want)
		}
	}
}

// TestVectors pins the format: the committed files must read as the
// entries they were made of, and writing those entries again must give
// the same bytes. A change of layout fails here (bump FormatVersion and
// keep a reader for version 1), and a reader that stops accepting old
// files fails here too.
func TestVectors(t *testing.T) {
	vectors := []struct {
		file    string
		entries []kv
		backend string
	}{
		{"v1-empty.snap", nil, "bbolt"},
		{"v1-four.snap", sample, "etcd"},
	}
	for _, vec := range vectors {
		h := testHeader(len(vec.entries))
		h.Backend = vec.backend
		data := encode(t, h, vec.entries)
		path := filepath.Join("testdata", vec.file)
		if *update {
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		committed, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test -run TestVectors -update writes it)", err)
		}
		if !bytes.Equal(committed, data) {
			t.Errorf("%s: this Writer writes other bytes than the committed vector (the format changed?)", vec.file)
		}
		gotH, got, err := decode(committed, ReadOptions{CofferVersion: "0.14.0"})
		if err != nil {
			t.Fatalf("%s: %v", vec.file, err)
		}
		if gotH.Backend != vec.backend || gotH.Revision != 42 || !gotH.Created.Equal(testTime) || gotH.CofferVersion != "0.14.0" {
			t.Errorf("%s: header %+v", vec.file, gotH)
		}
		if len(got) != len(vec.entries) {
			t.Fatalf("%s: %d entries, want %d", vec.file, len(got), len(vec.entries))
		}
		for i := range got {
			if got[i].k != vec.entries[i].k || !bytes.Equal(got[i].v, vec.entries[i].v) {
				t.Errorf("%s entry %d: %q", vec.file, i, got[i].k)
			}
		}
	}
}

func TestRawBuilderMatchesWriter(t *testing.T) {
	// The refusal tests below craft files with raw; it must agree with
	// the Writer on a good file, or they would test nothing.
	var recs [][]byte
	for _, e := range sample {
		recs = append(recs, rec(e.k, e.v))
	}
	r := raw{count: uint64(len(sample)), records: recs}
	if _, _, err := decode(r.bytes(), ReadOptions{}); err != nil {
		t.Fatalf("a well-formed raw file is refused: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	one := [][]byte{rec("a", []byte("x"))}
	two := [][]byte{rec("a", []byte("x")), rec("b", []byte("y"))}
	three := uint64(3)
	cases := []struct {
		name string
		data []byte
		opts ReadOptions
		want error
		msg  string
	}{
		{"bad magic", raw{magic: "COFFSNAX", count: 1, records: one}.bytes(), ReadOptions{}, ErrNotSnapshot, "COFFSNAX"},
		{"empty file", nil, ReadOptions{}, ErrNotSnapshot, "shorter than the magic"},
		{"a bbolt file", append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0xED, 0xDA, 0x0C, 0xED}, make([]byte, 100)...), ReadOptions{}, ErrNotSnapshot, ""},
		{"newer format", raw{format: FormatVersion + 1, count: 1, records: one}.bytes(), ReadOptions{}, ErrNewerFormat, "format 2"},
		{"format 0xFFFF", raw{format: 0xFFFF, count: 1, records: one}.bytes(), ReadOptions{}, ErrNewerFormat, ""},
		{"format zero", raw{formatZero: true, count: 1, records: one}.bytes(), ReadOptions{}, ErrMalformed, "format version 0"},
		{"negative revision", raw{revision: -1, count: 1, records: one}.bytes(), ReadOptions{}, ErrMalformed, "negative revision"},
		{"newer minor", raw{version: "0.15.0", count: 1, records: one}.bytes(), ReadOptions{CofferVersion: "0.14.9"}, ErrNewerVersion, "Coffer 0.15"},
		{"newer major", raw{version: "1.0.0", count: 1, records: one}.bytes(), ReadOptions{CofferVersion: "0.99.0"}, ErrNewerVersion, "snapshot from a newer version"},
		{"malformed version", raw{version: "banana", count: 1, records: one}.bytes(), ReadOptions{}, ErrMalformed, "MAJOR.MINOR.PATCH"},
		{"checksum", raw{count: 1, records: one, badSum: true}.bytes(), ReadOptions{}, ErrChecksum, "altered or damaged"},
		{"header count above records", raw{count: 3, records: two}.bytes(), ReadOptions{}, ErrCount, "header says 3"},
		{"header count below records", raw{count: 1, records: two}.bytes(), ReadOptions{}, ErrCount, "more entries than the header's 1"},
		{"trailer count", raw{count: 2, records: two, trailerCount: &three}.bytes(), ReadOptions{}, ErrCount, "trailer 3"},
		{"unsorted", raw{count: 2, records: [][]byte{rec("b", nil), rec("a", nil)}}.bytes(), ReadOptions{}, ErrOrder, "out of order key \"a\" after \"b\""},
		{"duplicate", raw{count: 2, records: [][]byte{rec("a", nil), rec("a", nil)}}.bytes(), ReadOptions{}, ErrOrder, "duplicate key"},
		{"empty key", raw{count: 1, records: [][]byte{rec("", nil)}}.bytes(), ReadOptions{}, ErrMalformed, "empty key"},
		{"unknown tag", raw{count: 1, records: [][]byte{{'X'}}}.bytes(), ReadOptions{}, ErrMalformed, "unknown record tag"},
		{"trailing data", append(raw{count: 1, records: one}.bytes(), 0), ReadOptions{}, ErrMalformed, "after the trailer"},
		{"oversized label", func() []byte {
			b := []byte(Magic)
			b = binary.BigEndian.AppendUint16(b, FormatVersion)
			return binary.BigEndian.AppendUint16(b, maxLabel+1)
		}(), ReadOptions{}, ErrTooLarge, "coffer version of 65 bytes"},
		{"oversized key", raw{count: 1, records: [][]byte{{tagRecord, 0, 0, 0x80, 0x01}}}.bytes(), ReadOptions{}, ErrTooLarge, "key of 32769 bytes"},
		{"oversized value", raw{count: 1, records: [][]byte{append(append([]byte{tagRecord}, rec("a", nil)[1:6]...), 0x04, 0, 0, 1)}}.bytes(), ReadOptions{}, ErrTooLarge, "value of 67108865 bytes"},
		{"backend label", raw{backend: "bolt db", count: 1, records: one}.bytes(), ReadOptions{}, ErrMalformed, "printable ASCII"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(bytes.NewReader(c.data), c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not say %q", err, c.msg)
			}
		})
	}
}

// TestSameOrOlderVersionAccepted: the version check refuses only a newer
// major or minor, not a newer patch nor an older writer.
func TestSameOrOlderVersionAccepted(t *testing.T) {
	for _, c := range []struct{ writer, reader string }{
		{"0.14.3", "0.14.0"}, {"0.13.0", "0.14.0"}, {"0.14.0-dev", "0.14.0"}, {"1.2.0", "v1.10.0"}, {"0.1.0-dev", "0.1.0-dev"},
	} {
		data := raw{version: c.writer, count: 0}.bytes()
		if _, err := Verify(bytes.NewReader(data), ReadOptions{CofferVersion: c.reader}); err != nil {
			t.Errorf("written by %s, read by %s: %v", c.writer, c.reader, err)
		}
	}
}

// TestTruncatedAnywhere cuts a good file at every length: each prefix is
// refused, and as a truncation once past the magic.
func TestTruncatedAnywhere(t *testing.T) {
	data := encode(t, testHeader(len(sample)), sample)
	for n := 0; n < len(data); n++ {
		_, err := Verify(bytes.NewReader(data[:n]), ReadOptions{})
		switch {
		case err == nil:
			t.Fatalf("a file cut at %d of %d bytes is accepted", n, len(data))
		case n < len(Magic) && !errors.Is(err, ErrNotSnapshot):
			t.Fatalf("cut at %d: %v, want ErrNotSnapshot", n, err)
		case n >= len(Magic) && !errors.Is(err, ErrTruncated):
			t.Fatalf("cut at %d: %v, want ErrTruncated", n, err)
		}
	}
}

// TestAnyFlippedByteRefused flips each byte of a good file in turn.
func TestAnyFlippedByteRefused(t *testing.T) {
	data := encode(t, testHeader(len(sample)), sample)
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x20
		if _, err := Verify(bytes.NewReader(bad), ReadOptions{}); err == nil {
			t.Fatalf("a file with byte %d flipped is accepted", i)
		}
	}
}

// TestBoundedMemory: a value length claiming the maximum in a short file
// does not allocate it.
func TestBoundedMemory(t *testing.T) {
	r := raw{count: 1, records: [][]byte{append(append([]byte{tagRecord}, rec("a", nil)[1:6]...), 0x04, 0, 0, 0)}}
	data := r.bytes()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Verify(bytes.NewReader(data), ReadOptions{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("error %v, want ErrTruncated", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Errorf("reading a %d-byte file that claims a 64 MiB value allocated %d bytes", len(data), grew)
	}
}

func TestWriterRefusesWhatReadersRefuse(t *testing.T) {
	h := testHeader(2)
	w, err := NewWriter(io.Discard, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add("b", nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Add("a", nil); !errors.Is(err, ErrOrder) {
		t.Errorf("out of order Add: %v", err)
	}
	w, _ = NewWriter(io.Discard, h)
	w.Add("a", nil)
	if err := w.Add("a", nil); !errors.Is(err, ErrOrder) {
		t.Errorf("duplicate Add: %v", err)
	}
	w, _ = NewWriter(io.Discard, h)
	if err := w.Add(strings.Repeat("k", MaxKeySize+1), nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("long key: %v", err)
	}
	w, _ = NewWriter(io.Discard, h)
	w.Add("a", nil)
	if err := w.Close(); !errors.Is(err, ErrCount) {
		t.Errorf("Close with 1 of 2 entries: %v", err)
	}
	w, _ = NewWriter(io.Discard, testHeader(1))
	w.Add("a", nil)
	if err := w.Add("b", nil); !errors.Is(err, ErrCount) {
		t.Errorf("Add past the count: %v", err)
	}
	if _, err := NewWriter(io.Discard, Header{CofferVersion: "dev", Backend: "bbolt"}); err == nil {
		t.Error("a version that a reader cannot compare is written")
	}
	if _, err := NewWriter(io.Discard, Header{CofferVersion: "0.1.0", Backend: ""}); err == nil {
		t.Error("an empty backend is written")
	}
}

// FuzzRead feeds the reader arbitrary bytes: it never panics, and what it
// accepts is exactly what the Writer writes for the same entries (the
// format has one encoding per content).
func FuzzRead(f *testing.F) {
	for _, name := range []string{"v1-empty.snap", "v1-four.snap"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add(raw{count: 2, records: [][]byte{rec("b", nil), rec("a", nil)}}.bytes())
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, entries, err := decode(data, ReadOptions{CofferVersion: "0.14.0"})
		if err != nil {
			return
		}
		again := encode(t, h, entries)
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted %d bytes that the Writer encodes differently (%d bytes)", len(data), len(again))
		}
	})
}
