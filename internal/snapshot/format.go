// Package snapshot writes and reads Coffer storage snapshots, and copies a
// store into another: `coffer operator snapshot save|restore` and `coffer
// operator migrate`.
//
// A snapshot is every storage entry of one consistent view of a store, in
// key order, with the values copied verbatim. The values are barrier
// ciphertexts, so a snapshot holds no plaintext and is useless without the
// unseal shares of the installation that wrote it. The file format is
// documented in docs/snapshot-format.md; in short:
//
//	header:  "COFFSNAP" | format u16 | version str16 | backend str16 |
//	         revision i64 | created i64 (Unix ns) | count u64
//	records: 'R' | key length u32 | key | value length u32 | value   (count times, keys strictly increasing)
//	trailer: 'E' | count u64 | SHA-256 of every byte before it
//
// All integers are big-endian. A reader streams: it holds one record at a
// time, and refuses a file that is truncated, altered, out of order, too
// large in any field, or written by a newer format or a newer Coffer.
package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Format constants.
const (
	// Magic opens every snapshot file.
	Magic = "COFFSNAP"
	// FormatVersion is the layout this package writes, and the newest it
	// reads.
	FormatVersion = 1
	// MaxKeySize bounds a key (bbolt's own limit).
	MaxKeySize = 32 << 10
	// MaxValueSize bounds a value. A reader holds one value at a time, so
	// this bounds its memory.
	MaxValueSize = 64 << 20
	// maxLabel bounds the version and backend strings of the header.
	maxLabel = 64
)

const (
	tagRecord  = 'R'
	tagTrailer = 'E'
)

// Errors a reader returns, wrapped with what it found. Test with errors.Is.
var (
	ErrNotSnapshot   = errors.New("not a Coffer snapshot (bad magic)")
	ErrNewerFormat   = errors.New("snapshot format is newer than this Coffer reads")
	ErrNewerVersion  = errors.New("snapshot from a newer version")
	ErrTruncated     = errors.New("snapshot is truncated")
	ErrChecksum      = errors.New("snapshot checksum mismatch")
	ErrCount         = errors.New("snapshot entry count mismatch")
	ErrOrder         = errors.New("snapshot keys are not in strictly increasing order")
	ErrTooLarge      = errors.New("snapshot field too large")
	ErrMalformed     = errors.New("malformed snapshot")
	errTrailingBytes = fmt.Errorf("%w: data after the trailer", ErrMalformed)
)

// Header describes a snapshot.
type Header struct {
	// Format is the file format version.
	Format uint16 `json:"format"`
	// CofferVersion is the version of the Coffer that wrote the file.
	CofferVersion string `json:"coffer_version"`
	// Backend is the kind of store the snapshot was taken from: "bbolt",
	// "etcd" (or "inmem" in tests).
	Backend string `json:"backend"`
	// Revision is the store revision of the view the snapshot holds.
	Revision int64 `json:"revision"`
	// Created is when the snapshot was taken (UTC).
	Created time.Time `json:"created"`
	// Count is the number of entries.
	Count uint64 `json:"count"`
}

// Writer writes a snapshot: the header when it is made, then one record
// per Add, then the trailer on Close. It checks as it goes what a reader
// will check, so it never produces a file that a reader refuses.
type Writer struct {
	w       *bufio.Writer
	sum     hash.Hash // over every byte written
	digest  *Digest
	count   uint64
	want    uint64
	lastKey string
	err     error
	closed  bool
	final   [32]byte // the trailer's checksum
}

// NewWriter writes h's header to w and returns a Writer for the records.
// h.Format is ignored (FormatVersion is written).
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if err := checkLabel("coffer version", h.CofferVersion); err != nil {
		return nil, err
	}
	if _, _, err := parseVersion(h.CofferVersion); err != nil {
		return nil, err
	}
	if err := checkLabel("backend", h.Backend); err != nil {
		return nil, err
	}
	if h.Revision < 0 {
		return nil, fmt.Errorf("snapshot: negative revision %d", h.Revision)
	}
	sw := &Writer{sum: sha256.New(), digest: NewDigest(), want: h.Count}
	sw.w = bufio.NewWriterSize(io.MultiWriter(w, sw.sum), 64<<10)
	b := make([]byte, 0, 64)
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint16(b, FormatVersion)
	b = appendStr16(b, h.CofferVersion)
	b = appendStr16(b, h.Backend)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Revision))
	b = binary.BigEndian.AppendUint64(b, uint64(h.Created.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, h.Count)
	if _, err := sw.w.Write(b); err != nil {
		return nil, err
	}
	return sw, nil
}

// Add writes one entry. Keys must come in strictly increasing byte order,
// and there must be exactly the header's count of them.
func (w *Writer) Add(key string, value []byte) error {
	if w.err != nil {
		return w.err
	}
	switch {
	case w.closed:
		return errors.New("snapshot: Add after Close")
	case key == "":
		return w.fail(fmt.Errorf("snapshot: %w: empty key", ErrMalformed))
	case len(key) > MaxKeySize:
		return w.fail(fmt.Errorf("snapshot: %w: key of %d bytes (limit %d)", ErrTooLarge, len(key), MaxKeySize))
	case len(value) > MaxValueSize:
		return w.fail(fmt.Errorf("snapshot: %w: value of key %q is %d bytes (limit %d)", ErrTooLarge, key, len(value), MaxValueSize))
	case w.count > 0 && key <= w.lastKey:
		return w.fail(fmt.Errorf("snapshot: %w: key %q after %q", ErrOrder, key, w.lastKey))
	case w.count == w.want:
		return w.fail(fmt.Errorf("snapshot: %w: more entries than the header's %d", ErrCount, w.want))
	}
	w.count++
	w.lastKey = key
	w.digest.Add(key, value)
	var hdr [5]byte
	hdr[0] = tagRecord
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(key)))
	w.w.Write(hdr[:])
	w.w.WriteString(key)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(value)))
	w.w.Write(hdr[1:])
	if _, err := w.w.Write(value); err != nil {
		return w.fail(err)
	}
	return nil
}

// Close writes the trailer and flushes. It fails if fewer entries than the
// header's count were added. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	w.closed = true
	if w.count != w.want {
		return w.fail(fmt.Errorf("snapshot: %w: %d entries written, the header says %d", ErrCount, w.count, w.want))
	}
	var t [9]byte
	t[0] = tagTrailer
	binary.BigEndian.PutUint64(t[1:], w.count)
	w.w.Write(t[:])
	if err := w.w.Flush(); err != nil {
		return w.fail(err)
	}
	// The checksum itself is not part of what it covers.
	copy(w.final[:], w.sum.Sum(nil))
	if _, err := w.w.Write(w.final[:]); err != nil {
		return w.fail(err)
	}
	return w.fail(w.w.Flush())
}

// Checksum returns the SHA-256 the trailer holds; valid after Close.
func (w *Writer) Checksum() [32]byte { return w.final }

// Digest returns the content digest of the entries written so far.
func (w *Writer) Digest() [32]byte { return w.digest.Sum() }

func (w *Writer) fail(err error) error {
	if err != nil && w.err == nil {
		w.err = err
	}
	return err
}

// ReadOptions tune a Reader.
type ReadOptions struct {
	// CofferVersion is the version of the reading Coffer: a snapshot
	// written by a newer major or minor version is refused. Empty skips
	// the check (tools that only inspect a file).
	CofferVersion string
}

// Reader reads a snapshot record by record. Records are only known good
// once Next has returned io.EOF, which it does after checking the count
// and the checksum: a caller that acts on records (a restore) reads the
// file once with Verify before acting.
type Reader struct {
	r      *bufio.Reader
	sum    hash.Hash
	digest *Digest
	h      Header
	n      uint64
	last   string
	done   bool
	err    error
	buf    []byte
}

// NewReader reads and checks the header.
func NewReader(r io.Reader, opts ReadOptions) (*Reader, error) {
	sr := &Reader{sum: sha256.New(), digest: NewDigest()}
	sr.r = bufio.NewReaderSize(r, 64<<10)
	magic, err := sr.read(len(Magic), "magic")
	if err != nil {
		if errors.Is(err, ErrTruncated) {
			return nil, fmt.Errorf("%w (%d bytes, shorter than the magic)", ErrNotSnapshot, len(magic))
		}
		return nil, err
	}
	if string(magic) != Magic {
		return nil, fmt.Errorf("%w: starts with %q, want %q", ErrNotSnapshot, printable(magic), Magic)
	}
	f, err := sr.read(2, "format version")
	if err != nil {
		return nil, err
	}
	sr.h.Format = binary.BigEndian.Uint16(f)
	switch {
	case sr.h.Format == 0:
		return nil, fmt.Errorf("%w: format version 0", ErrMalformed)
	case sr.h.Format > FormatVersion:
		return nil, fmt.Errorf("%w: format %d, this Coffer reads up to %d; restore it with a newer Coffer", ErrNewerFormat, sr.h.Format, FormatVersion)
	}
	if sr.h.CofferVersion, err = sr.str16("coffer version"); err != nil {
		return nil, err
	}
	if sr.h.Backend, err = sr.str16("backend"); err != nil {
		return nil, err
	}
	for _, l := range [][2]string{{"coffer version", sr.h.CofferVersion}, {"backend", sr.h.Backend}} {
		if err := checkLabel(l[0], l[1]); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	fixed, err := sr.read(24, "header")
	if err != nil {
		return nil, err
	}
	rev := int64(binary.BigEndian.Uint64(fixed))
	if rev < 0 {
		return nil, fmt.Errorf("%w: negative revision %d", ErrMalformed, rev)
	}
	sr.h.Revision = rev
	sr.h.Created = time.Unix(0, int64(binary.BigEndian.Uint64(fixed[8:]))).UTC()
	sr.h.Count = binary.BigEndian.Uint64(fixed[16:])

	if _, _, err := parseVersion(sr.h.CofferVersion); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if opts.CofferVersion != "" {
		if err := Compatible(sr.h.CofferVersion, opts.CofferVersion); err != nil {
			return nil, err
		}
	}
	return sr, nil
}

// Compatible reports whether a snapshot written by Coffer writer can be
// restored by Coffer reader: not when writer has a newer major or minor
// version (its entries may be in a layout reader does not know). The error
// matches ErrNewerVersion.
func Compatible(writer, reader string) error {
	wmaj, wmin, err := parseVersion(writer)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	maj, min, err := parseVersion(reader)
	if err != nil {
		return err
	}
	if wmaj > maj || wmaj == maj && wmin > min {
		return fmt.Errorf("%w: written by Coffer %s, this is %s; restore it with Coffer %d.%d or newer",
			ErrNewerVersion, writer, reader, wmaj, wmin)
	}
	return nil
}

// Header returns the snapshot's header.
func (r *Reader) Header() Header { return r.h }

// Next returns the next entry, or io.EOF once the trailer has been read and
// the count and checksum hold. The value is valid until the next call.
// Every other error is final.
func (r *Reader) Next() (key string, value []byte, err error) {
	if r.err != nil {
		return "", nil, r.err
	}
	if r.done {
		return "", nil, io.EOF
	}
	key, value, err = r.next()
	if err != nil {
		if err != io.EOF {
			r.err = err
		} else {
			r.done = true
		}
		return "", nil, err
	}
	return key, value, nil
}

func (r *Reader) next() (string, []byte, error) {
	tag, err := r.read(1, "record tag")
	if err != nil {
		return "", nil, r.truncated(err)
	}
	switch tag[0] {
	case tagRecord:
	case tagTrailer:
		return "", nil, r.trailer()
	default:
		return "", nil, fmt.Errorf("%w: unknown record tag %#x after %d entries", ErrMalformed, tag[0], r.n)
	}
	if r.n == r.h.Count {
		return "", nil, fmt.Errorf("%w: more entries than the header's %d", ErrCount, r.h.Count)
	}
	kl, err := r.read(4, "key length")
	if err != nil {
		return "", nil, r.truncated(err)
	}
	klen := binary.BigEndian.Uint32(kl)
	switch {
	case klen == 0:
		return "", nil, fmt.Errorf("%w: empty key at entry %d", ErrMalformed, r.n+1)
	case klen > MaxKeySize:
		return "", nil, fmt.Errorf("%w: key of %d bytes at entry %d (limit %d)", ErrTooLarge, klen, r.n+1, MaxKeySize)
	}
	kb, err := r.read(int(klen), "key")
	if err != nil {
		return "", nil, r.truncated(err)
	}
	key := string(kb)
	if r.n > 0 && key <= r.last {
		what := "out of order"
		if key == r.last {
			what = "duplicate"
		}
		return "", nil, fmt.Errorf("%w: %s key %q after %q", ErrOrder, what, key, r.last)
	}
	vl, err := r.read(4, "value length")
	if err != nil {
		return "", nil, r.truncated(err)
	}
	vlen := binary.BigEndian.Uint32(vl)
	if vlen > MaxValueSize {
		return "", nil, fmt.Errorf("%w: value of %d bytes for key %q (limit %d)", ErrTooLarge, vlen, key, MaxValueSize)
	}
	value, err := r.read(int(vlen), "value")
	if err != nil {
		return "", nil, r.truncated(err)
	}
	r.n++
	r.last = key
	r.digest.Add(key, value)
	return key, value, nil
}

// trailer checks the trailer after its tag; io.EOF when it holds.
func (r *Reader) trailer() error {
	c, err := r.read(8, "trailer")
	if err != nil {
		return r.truncated(err)
	}
	if n := binary.BigEndian.Uint64(c); n != r.n || n != r.h.Count {
		return fmt.Errorf("%w: the header says %d entries, the trailer %d, the file holds %d", ErrCount, r.h.Count, n, r.n)
	}
	want := r.sum.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r.r, got); err == io.EOF || err == io.ErrUnexpectedEOF {
		return r.truncated(fmt.Errorf("%w: end of file in the checksum", ErrTruncated))
	} else if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: the file says %x, its content hashes to %x (altered or damaged)", ErrChecksum, got, want)
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		if err == nil {
			return errTrailingBytes
		}
		return err
	}
	return io.EOF
}

// read returns the next n bytes, hashed; ErrTruncated at the end of input.
// The slice is valid until the next read. The buffer grows as bytes
// arrive, so a length field claiming 64 MiB in a short file costs no more
// memory than the bytes that are there.
func (r *Reader) read(n int, what string) ([]byte, error) {
	r.buf = r.buf[:0]
	for len(r.buf) < n {
		step := min(n-len(r.buf), max(64<<10, len(r.buf)))
		r.buf = slices.Grow(r.buf, step)
		m, err := io.ReadFull(r.r, r.buf[len(r.buf):len(r.buf)+step])
		r.buf = r.buf[:len(r.buf)+m]
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return r.buf, fmt.Errorf("%w: end of file in the %s", ErrTruncated, what)
		case err != nil:
			return r.buf, err
		}
	}
	r.sum.Write(r.buf)
	return r.buf, nil
}

// truncated passes errors through; it exists to name the entry count in a
// truncation.
func (r *Reader) truncated(err error) error {
	if errors.Is(err, ErrTruncated) {
		return fmt.Errorf("%w after %d of %d entries (an interrupted copy or a full disk?)", err, r.n, r.h.Count)
	}
	return err
}

// str16 reads a length-prefixed label.
func (r *Reader) str16(what string) (string, error) {
	l, err := r.read(2, what)
	if err != nil {
		return "", err
	}
	n := binary.BigEndian.Uint16(l)
	if n > maxLabel {
		return "", fmt.Errorf("%w: %s of %d bytes (limit %d)", ErrTooLarge, what, n, maxLabel)
	}
	b, err := r.read(int(n), what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// Digest returns the content digest of the entries read so far; after
// io.EOF, of the whole snapshot.
func (r *Reader) Digest() [32]byte { return r.digest.Sum() }

// Summary is what a verified snapshot holds.
type Summary struct {
	Header
	// Checksum is the SHA-256 of the file, as its trailer holds it.
	Checksum string `json:"checksum"`
	// Digest is the content digest (see Digest) of its entries.
	Digest string `json:"digest"`
	// Bytes is the size of the file.
	Bytes int64 `json:"bytes"`
}

// Verify reads a whole snapshot and checks it. It holds one record at a
// time.
func Verify(r io.Reader, opts ReadOptions) (Summary, error) {
	cr := &countReader{r: r}
	sr, err := NewReader(cr, opts)
	if err != nil {
		return Summary{}, err
	}
	for {
		_, _, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Summary{}, err
		}
	}
	d := sr.Digest()
	return Summary{Header: sr.h, Checksum: fmt.Sprintf("%x", sr.sum.Sum(nil)), Digest: fmt.Sprintf("%x", d[:]), Bytes: cr.n}, nil
}

// Digest is the content digest of a sequence of entries: a SHA-256 over
// each entry's key and value, each length-prefixed, in order. Two stores
// with the same entries have the same digest whatever their revisions, so
// it compares a source with its copy.
type Digest struct {
	h hash.Hash
	n uint64
}

// NewDigest returns an empty digest.
func NewDigest() *Digest { return &Digest{h: sha256.New()} }

// Add adds one entry.
func (d *Digest) Add(key string, value []byte) {
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], uint64(len(key)))
	d.h.Write(l[:])
	io.WriteString(d.h, key)
	binary.BigEndian.PutUint64(l[:], uint64(len(value)))
	d.h.Write(l[:])
	d.h.Write(value)
	d.n++
}

// Count returns the number of entries added.
func (d *Digest) Count() uint64 { return d.n }

// Sum returns the digest of the entries added so far.
func (d *Digest) Sum() [32]byte {
	var s [32]byte
	copy(s[:], d.h.Sum(nil))
	return s
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func appendStr16(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// checkLabel bounds a header string to printable ASCII.
func checkLabel(what, s string) error {
	if s == "" || len(s) > maxLabel {
		return fmt.Errorf("snapshot: %s %q: want 1 to %d characters", what, s, maxLabel)
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("snapshot: %s %q: want printable ASCII without spaces", what, printable([]byte(s)))
		}
	}
	return nil
}

// parseVersion returns the major and minor number of a version such as
// "0.14.2", "v1.2.0" or "0.1.0-dev".
func parseVersion(v string) (major, minor int, err error) {
	s := strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return 0, 0, fmt.Errorf("snapshot: version %q: want MAJOR.MINOR.PATCH", printable([]byte(v)))
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 || p == "" || p[0] == '+' {
			return 0, 0, fmt.Errorf("snapshot: version %q: want MAJOR.MINOR.PATCH", printable([]byte(v)))
		}
		n[i] = x
	}
	return n[0], n[1], nil
}

// printable quotes at most 32 bytes of untrusted input for a message.
func printable(b []byte) string {
	if len(b) > 32 {
		b = b[:32]
	}
	return strings.ToValidUTF8(string(b), "?")
}
