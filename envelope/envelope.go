package envelope

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"

	"github.com/cofferkms/coffer/envelope/internal/format"
)

// DefaultSegmentSize is the plaintext size of a segment unless
// EncryptOptions.SegmentSize says otherwise. docs/benchmarks.md has the
// measurements behind it.
const DefaultSegmentSize = 64 << 10

// Limits of EncryptOptions.SegmentSize.
const (
	MinSegmentSize = format.MinSegmentSize
	MaxSegmentSize = format.MaxSegmentSize
)

// A window is the segments sealed or opened together; a reader or writer
// holds two (one being processed, one being filled or consumed), so its
// memory is about 2 × windowBytes whatever the file size.
var windowBytes = 4 << 20 // a variable so that tests can make windows small

const maxWindowBytes = 8 << 20

// Errors of Decrypt, NewReaderAt and ReadHeader, for errors.Is. Every
// error names the problem in its message as well.
var (
	// ErrNotEnvelope: the input is not an envelope file.
	ErrNotEnvelope = format.ErrNotEnvelope
	// ErrVersion: the file's format version is unknown or newer than this
	// package.
	ErrVersion = format.ErrVersion
	// ErrMalformed: the header breaks the format's rules or limits.
	ErrMalformed = format.ErrMalformed
	// ErrTruncated: the file ends inside its header.
	ErrTruncated = format.ErrTruncated
	// ErrContextMismatch: the file's encryption context is not the one
	// DecryptOptions.EncryptionContext requires.
	ErrContextMismatch = errors.New("encryption context mismatch")
)

// EncryptOptions tune Encrypt. The zero value is valid.
type EncryptOptions struct {
	// Context bounds the wrapper's calls (to Coffer); nil means
	// context.Background().
	Context context.Context
	// EncryptionContext is non-secret data bound to the file and to its
	// wrapped keys: decryption checks it. It is stored in the header in the
	// clear. At most 64 pairs and 8 KiB.
	EncryptionContext map[string]string
	// SegmentSize is the plaintext bytes per segment, MinSegmentSize to
	// MaxSegmentSize; 0 means DefaultSegmentSize.
	SegmentSize int
	// Concurrency is the number of segments sealed at once; 0 means
	// GOMAXPROCS.
	Concurrency int
}

// DecryptOptions tune Decrypt and NewReaderAt. The zero value is valid.
type DecryptOptions struct {
	// Context bounds the unwrappers' calls; nil means context.Background().
	Context context.Context
	// EncryptionContext, when not nil, must equal the file's encryption
	// context exactly, or decryption fails with ErrContextMismatch before
	// any key is unwrapped.
	EncryptionContext map[string]string
	// Concurrency is the number of segments opened at once; 0 means
	// GOMAXPROCS.
	Concurrency int
}

// Header describes an envelope file; ReadHeader returns it without any key.
type Header struct {
	// Version is the format version.
	Version int
	// Algorithm names the AEAD construction.
	Algorithm string
	// SegmentSize is the plaintext bytes per segment.
	SegmentSize int
	// EncryptionContext is the file's encryption context.
	EncryptionContext map[string]string
	// Stanzas are the wrapped copies of the data key.
	Stanzas []Stanza
	// Size is the header's size in bytes: where the first segment starts.
	Size int64
}

// AlgorithmName is the name of format algorithm 1.
const AlgorithmName = "AES-256-GCM-HKDF-SHA256-STREAM"

// PlaintextSize returns the size of the plaintext of a file of fileSize
// bytes with this header, or an error if no file of that size is valid.
func (h *Header) PlaintextSize(fileSize int64) (int64, error) {
	_, _, size, err := layout(h.Size, int64(h.SegmentSize), fileSize)
	return size, err
}

// layout returns the number of segments of a file, the ciphertext size of
// its last segment and its plaintext size.
func layout(hdrSize, segSize, fileSize int64) (n uint64, lastCT int64, size int64, err error) {
	body := fileSize - hdrSize
	chunk := segSize + tagSize
	if body < tagSize {
		return 0, 0, 0, fmt.Errorf("%w: the file is truncated: %d bytes of data after the header, want at least %d", ErrAuthentication, max(body, 0), tagSize)
	}
	full := body / chunk
	rem := body % chunk
	switch {
	case rem == 0:
		n, lastCT = uint64(full), chunk
	case rem < tagSize:
		return 0, 0, 0, fmt.Errorf("%w: the file is truncated: its final segment has %d bytes, fewer than the %d-byte tag", ErrAuthentication, rem, tagSize)
	default:
		n, lastCT = uint64(full)+1, rem
	}
	if n > maxSegments {
		return 0, 0, 0, fmt.Errorf("%w: %d segments is more than the format can number", ErrMalformed, n)
	}
	return n, lastCT, int64(n-1)*segSize + lastCT - tagSize, nil
}

func publicHeader(h *format.Header, size int) *Header {
	out := &Header{
		Version:           format.Version,
		Algorithm:         AlgorithmName,
		SegmentSize:       int(h.SegmentSize),
		EncryptionContext: h.Context,
		Size:              int64(size),
	}
	for _, s := range h.Stanzas {
		out.Stanzas = append(out.Stanzas, Stanza(s))
	}
	return out
}

// ReadHeader reads and parses the header at the start of src, checking its
// structure and limits but nothing cryptographic: it needs no key.
func ReadHeader(src io.Reader) (*Header, error) {
	h, body, err := format.Read(src)
	if err != nil {
		return nil, err
	}
	return publicHeader(h, len(body)+format.CommitmentSize+format.MACSize), nil
}

// Encrypt writes the header of a new envelope file to dst, with the data
// key wrapped by w, and returns a writer of the plaintext. Close must be
// called: it seals the final segment; without it the file is truncated
// and will not decrypt. Close does not close dst.
func Encrypt(dst io.Writer, w Wrapper, opts *EncryptOptions) (io.WriteCloser, error) {
	if opts == nil {
		opts = &EncryptOptions{}
	}
	if w == nil {
		return nil, errors.New("envelope: no wrapper given")
	}
	ctx := opts.Context
	if ctx == nil {
		ctx = context.Background()
	}
	segSize := opts.SegmentSize
	if segSize == 0 {
		segSize = DefaultSegmentSize
	}
	if segSize < MinSegmentSize || segSize > MaxSegmentSize {
		return nil, fmt.Errorf("envelope: segment size %d is outside %d..%d", segSize, MinSegmentSize, MaxSegmentSize)
	}
	ec := maps.Clone(opts.EncryptionContext)
	if _, err := format.AppendContext(nil, ec); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}

	var key []byte
	var stanzas []Stanza
	var release func(int64)
	var err error
	if cw, ok := w.(*CachingWrapper); ok {
		key, stanzas, release, err = cw.acquire(ctx, ec)
	} else {
		key, stanzas, err = generate(ctx, w, ec)
	}
	if err != nil {
		return nil, fmt.Errorf("envelope: wrapping the data key: %w", err)
	}
	defer clear(key)

	h := &format.Header{
		Algorithm:   format.AlgAES256GCMHKDFStream,
		SegmentSize: uint32(segSize),
		Context:     ec,
	}
	for _, s := range stanzas {
		h.Stanzas = append(h.Stanzas, format.Stanza(s))
	}
	if _, err := rand.Read(h.Salt[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(h.NoncePrefix[:]); err != nil {
		return nil, err
	}
	hdr, err := format.AppendBody(nil, h)
	if err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	fk, err := deriveKeys(key, h, hdr)
	if err != nil {
		return nil, err
	}
	hdr = append(hdr, fk.commitment[:]...)
	hdr = append(hdr, fk.headerMAC(hdr[:len(hdr)-format.CommitmentSize])...)
	if _, err := dst.Write(hdr); err != nil {
		return nil, err
	}
	return newWriter(dst, fk, segSize, concurrency(opts.Concurrency), release), nil
}

func concurrency(n int) int {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return n
}

// window returns the number of segments per window: two per worker, and
// at least windowBytes of them so that the workers synchronize once per
// few MiB rather than per segment; at most maxWindowBytes.
func window(workers, segSize int) int {
	n := max(2*workers, windowBytes/segSize)
	return max(1, min(n, maxWindowBytes/segSize))
}

// openHeader reads the header from src and returns the file's keys once
// the header authenticates.
func openHeader(src io.Reader, opts *DecryptOptions, us []Unwrapper) (*format.Header, *fileKeys, int64, error) {
	if opts == nil {
		opts = &DecryptOptions{}
	}
	ctx := opts.Context
	if ctx == nil {
		ctx = context.Background()
	}
	h, body, err := format.Read(src)
	if err != nil {
		return nil, nil, 0, err
	}
	if opts.EncryptionContext != nil && !maps.Equal(opts.EncryptionContext, h.Context) {
		return nil, nil, 0, fmt.Errorf("%w: the file's encryption context is %s, not the expected %s",
			ErrContextMismatch, FormatContext(h.Context), FormatContext(opts.EncryptionContext))
	}
	stanzas := make([]Stanza, len(h.Stanzas))
	for i, s := range h.Stanzas {
		stanzas[i] = Stanza(s)
	}
	key, err := unwrap(ctx, us, stanzas, h.Context)
	if err != nil {
		return nil, nil, 0, err
	}
	defer clear(key)
	fk, err := deriveKeys(key, h, body)
	if err != nil {
		return nil, nil, 0, err
	}
	if err := fk.verifyHeader(h, body); err != nil {
		return nil, nil, 0, err
	}
	return h, fk, int64(len(body) + format.CommitmentSize + format.MACSize), nil
}

// Decrypt reads the header of an envelope file from src, unwraps its data
// key with the first of unwrappers that can, and returns a reader of the
// plaintext. See DecryptWithOptions.
func Decrypt(src io.Reader, unwrappers ...Unwrapper) (io.Reader, error) {
	r, err := DecryptWithOptions(src, nil, unwrappers...)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// DecryptWithOptions is Decrypt with options. The header is read and
// authenticated before it returns. The returned reader yields a segment's
// plaintext only after the segment authenticates, and fails (with an error
// wrapping ErrAuthentication) on a truncated, altered or extended file: a
// caller that stops at the first error never uses unauthenticated data,
// but may have consumed a prefix of the plaintext before learning that the
// file is bad, so write to a temporary place and keep it only on io.EOF.
func DecryptWithOptions(src io.Reader, opts *DecryptOptions, unwrappers ...Unwrapper) (*Reader, error) {
	h, fk, _, err := openHeader(src, opts, unwrappers)
	if err != nil {
		return nil, err
	}
	c := 0
	if opts != nil {
		c = opts.Concurrency
	}
	return newReader(src, fk, int(h.SegmentSize), concurrency(c)), nil
}

// FormatContext formats an encryption context as {k=v, k2=v2}, sorted.
func FormatContext(ec map[string]string) string {
	s := "{"
	for i, k := range sortedKeys(ec) {
		if i > 0 {
			s += ", "
		}
		s += k + "=" + ec[k]
	}
	return s + "}"
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
