package envelope

import (
	"errors"
	"fmt"
	"io"
)

// Reader is the plaintext of an envelope file, from DecryptWithOptions.
// It reads a window of segments from the source, opens them in parallel
// while the caller consumes the previous window, and serves a segment
// only once its tag has verified.
type Reader struct {
	src     io.Reader
	fk      *fileKeys
	segSize int
	window  int
	workers int

	carry    [1]byte // first byte of the next segment, read to find the end
	hasCarry bool
	srcDone  bool   // the final segment has been read from src
	next     uint64 // counter of the next segment to read from src

	pending  *batch // window being opened
	pendErr  error  // error of the pending window after its segments
	ready    [][]byte
	readyAt  int
	out      []byte
	err      error  // sticky: returned once ready is consumed
	readyBuf []byte // the buffer ready's segments live in
	free     []byte // a window buffer to reuse
}

func newReader(src io.Reader, fk *fileKeys, segSize, workers int) *Reader {
	return &Reader{src: src, fk: fk, segSize: segSize, window: window(workers, segSize), workers: workers}
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.readyAt < len(r.ready) {
			r.out = r.ready[r.readyAt]
			r.readyAt++
			continue
		}
		if r.err != nil {
			return 0, r.err
		}
		r.advance()
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// WriteTo implements io.WriterTo: it writes each segment as it is
// authenticated, without an intermediate copy. io.Copy uses it.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.out) > 0 {
			n, err := w.Write(r.out)
			total += int64(n)
			r.out = r.out[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if r.readyAt < len(r.ready) {
			r.out = r.ready[r.readyAt]
			r.readyAt++
			continue
		}
		if r.err != nil {
			if r.err == io.EOF {
				return total, nil
			}
			return total, r.err
		}
		r.advance()
	}
}

// advance makes the pending window ready (starting one if none is), and
// starts opening the next.
func (r *Reader) advance() {
	if r.pending == nil {
		r.start()
	}
	b := r.pending
	if b == nil {
		r.err = io.EOF
		return
	}
	b.wait()
	r.pending = nil
	// Recycle the buffer of the window just consumed.
	r.free, r.readyBuf = r.readyBuf, b.buf
	r.ready, r.readyAt = b.segs, 0
	for j, err := range b.errs {
		if err != nil {
			r.ready = b.segs[:j]
			r.err = err
			return
		}
	}
	if r.pendErr != nil {
		r.err = r.pendErr
		return
	}
	r.start()
}

// start reads the next window from src into one buffer, with large reads,
// and starts opening its segments in place.
func (r *Reader) start() {
	if r.srcDone {
		return
	}
	stride := r.segSize + tagSize
	// The window's bytes, plus one to learn whether more follow.
	want := r.window*stride + 1
	buf := r.free[:0]
	r.free = nil
	if r.hasCarry {
		buf = append(grow(buf, 1, want), r.carry[0])
		r.hasCarry = false
	}
	buf, err := readUpTo(r.src, buf, want)
	if err == nil && len(buf) == want {
		r.carry[0], r.hasCarry = buf[want-1], true
		buf = buf[:want-1]
	} else {
		r.srcDone = true
	}
	var segs [][]byte
	lastIdx := -1
	for off := 0; off < len(buf); off += stride {
		seg := buf[off:min(off+stride, len(buf))]
		segs = append(segs, seg)
		if len(seg) < stride || (r.srcDone && off+stride >= len(buf)) {
			lastIdx = len(segs) - 1
		}
	}
	if err == nil && r.srcDone {
		switch {
		case r.next == 0 && len(buf) == 0:
			err = fmt.Errorf("%w: the file is truncated: it has no data after the header", ErrAuthentication)
		case len(buf) == 0:
			// The previous window ended exactly at the end of the file:
			// impossible, as a window is read with one byte of lookahead.
			err = fmt.Errorf("%w: the file is truncated", ErrAuthentication)
		case len(segs[len(segs)-1]) < tagSize:
			err = fmt.Errorf("%w: the file is truncated: it ends %d bytes into segment %d, inside its tag",
				ErrAuthentication, len(segs[len(segs)-1]), r.next+uint64(len(segs)-1))
			segs = segs[:len(segs)-1]
			lastIdx = -1
		}
	}
	if r.next+uint64(len(segs)) > maxSegments {
		err = fmt.Errorf("%w: the file has more segments than the format can number", ErrAuthentication)
		segs = nil
	}
	if err != nil {
		r.srcDone = true
	}
	r.pendErr = err
	b := &batch{segs: segs}
	b.buf = buf
	base := r.next
	r.next += uint64(len(segs))
	fk := r.fk
	b.run(r.workers, func(j int, seg []byte) ([]byte, error) {
		return fk.open(seg, base+uint64(j), j == lastIdx)
	})
	r.pending = b
}

// readUpTo reads from src until buf holds n bytes or src ends, growing buf
// as data arrives so that a small file needs a small buffer.
func readUpTo(src io.Reader, buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		buf = grow(buf, min(n-len(buf), 256<<10), n)
		k, err := src.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+k]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, fmt.Errorf("envelope: reading the file: %w", err)
		}
	}
	return buf, nil
}

// ReaderAt decrypts byte ranges of an envelope file held by an
// io.ReaderAt, reading and opening only the segments that hold them.
type ReaderAt struct {
	src     io.ReaderAt
	fk      *fileKeys
	hdr     int64
	segSize int64
	nSegs   uint64
	size    int64
	workers int
}

// NewReaderAt reads and authenticates the header of the size-byte file in
// src, and its final segment (which proves the file's length), and
// returns a ReaderAt of its plaintext. Each ReadAt authenticates the
// segments it reads.
func NewReaderAt(src io.ReaderAt, size int64, opts *DecryptOptions, unwrappers ...Unwrapper) (*ReaderAt, error) {
	h, fk, hdr, err := openHeader(io.NewSectionReader(src, 0, size), opts, unwrappers)
	if err != nil {
		return nil, err
	}
	n, _, psize, err := layout(hdr, int64(h.SegmentSize), size)
	if err != nil {
		return nil, err
	}
	c := 0
	if opts != nil {
		c = opts.Concurrency
	}
	r := &ReaderAt{src: src, fk: fk, hdr: hdr, segSize: int64(h.SegmentSize), nSegs: n, size: psize, workers: concurrency(c)}
	// Open the final segment now: it proves the file's length, so a file
	// truncated or extended by whole segments fails here.
	if _, err := r.segment(n - 1); err != nil {
		return nil, err
	}
	return r, nil
}

// segment reads and opens segment i.
func (r *ReaderAt) segment(i uint64) ([]byte, error) {
	start := r.hdr + int64(i)*(r.segSize+tagSize)
	isLast := i == r.nSegs-1
	n := r.segSize + tagSize
	if isLast {
		n = r.size - int64(i)*r.segSize + tagSize
	}
	buf := make([]byte, n)
	if _, err := r.src.ReadAt(buf, start); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file is shorter than when it was opened", ErrAuthentication)
		}
		return nil, fmt.Errorf("envelope: reading segment %d: %w", i, err)
	}
	return r.fk.open(buf, i, isLast)
}

// Size returns the plaintext size.
func (r *ReaderAt) Size() int64 { return r.size }

// ReadAt implements io.ReaderAt on the plaintext. It is safe for
// concurrent use.
func (r *ReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("envelope: negative offset")
	}
	if off >= r.size {
		if len(p) == 0 && off == r.size {
			return 0, nil
		}
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), r.size)
	first, last := uint64(off/r.segSize), uint64((end-1)/r.segSize)
	if r.size == 0 {
		first, last = 0, 0
	}
	win := uint64(window(r.workers, int(r.segSize)))
	done := 0
	for s := first; s <= last; s += win {
		e := min(s+win-1, last)
		b := &batch{segs: make([][]byte, e-s+1)}
		b.run(r.workers, func(j int, _ []byte) ([]byte, error) {
			return r.segment(s + uint64(j))
		})
		b.wait()
		for j, seg := range b.segs {
			if b.errs[j] != nil {
				return done, b.errs[j]
			}
			i := s + uint64(j)
			segOff := int64(i) * r.segSize
			lo := max(off, segOff) - segOff
			hi := min(end, segOff+int64(len(seg))) - segOff
			done += copy(p[done:], seg[lo:hi])
		}
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}
