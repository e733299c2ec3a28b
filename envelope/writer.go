package envelope

import (
	"errors"
	"fmt"
	"io"
)

// writer seals the plaintext written to it a window at a time. A window is
// one contiguous buffer holding up to window segments, each followed by
// room for its tag, so a sealed window is written with one call. While the
// workers seal one window, the caller fills the other; the sealed window is
// written out, in order, before the next one is sealed.
type writer struct {
	dst     io.Writer
	fk      *fileKeys
	segSize int
	window  int
	workers int

	buf     []byte // the window being filled
	cur     int    // index in buf of the segment being filled
	fill    int    // plaintext bytes in segment cur
	spare   []byte // the other window's buffer, once written
	pending *sealed
	base    uint64 // counter of the first segment of buf
	total   int64  // plaintext bytes written
	release func(int64)
	err     error
	closed  bool
}

// sealed is a window being sealed.
type sealed struct {
	batch
	buf []byte
	n   int // bytes of buf to write
}

func newWriter(dst io.Writer, fk *fileKeys, segSize, workers int, release func(int64)) *writer {
	return &writer{dst: dst, fk: fk, segSize: segSize, window: window(workers, segSize), workers: workers, release: release}
}

var errClosed = errors.New("envelope: write after Close")

// stride is the room a segment takes in a window: plaintext and tag.
func (w *writer) stride() int { return w.segSize + tagSize }

// room returns the free part of segment cur, growing buf to hold it.
func (w *writer) room(want int) []byte {
	start := w.cur*w.stride() + w.fill
	end := start + min(want, w.segSize-w.fill)
	if end+tagSize > cap(w.buf) {
		nb := make([]byte, min(max(2*cap(w.buf), end+tagSize, 64<<10), w.window*w.stride()))
		copy(nb, w.buf[:w.cur*w.stride()+w.fill])
		w.buf = nb
	}
	w.buf = w.buf[:cap(w.buf)]
	return w.buf[start:end]
}

// next moves to a new segment once the current one is full and more data
// is known to follow, sealing the window first if it is full.
func (w *writer) next() error {
	if w.cur+1 == w.window {
		return w.flush(false)
	}
	w.cur++
	w.fill = 0
	return nil
}

// Write implements io.Writer.
func (w *writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if w.fill == w.segSize {
			if err := w.next(); err != nil {
				return written, err
			}
		}
		k := copy(w.room(len(p)), p)
		w.fill += k
		p = p[k:]
		written += k
		w.total += int64(k)
	}
	return written, nil
}

// ReadFrom implements io.ReaderFrom: it reads straight into the window,
// saving a copy. io.Copy uses it.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	if w.closed {
		return 0, errClosed
	}
	var total int64
	for w.err == nil {
		if w.fill == w.segSize && w.cur+1 < w.window {
			// Start the next segment; if no data comes, Close steps back.
			w.cur, w.fill = w.cur+1, 0
		}
		if w.fill == w.segSize {
			// The window is full: learn whether more data follows before
			// sealing its last segment as a middle one, by reading a byte.
			var one [1]byte
			n, err := io.ReadFull(r, one[:])
			if n == 0 {
				if err == io.EOF {
					err = nil
				}
				return total, err
			}
			if err := w.next(); err != nil {
				return total, err
			}
			w.room(1)[0] = one[0]
			w.fill++
			w.total++
			total++
		}
		n, err := r.Read(w.room(w.segSize))
		w.fill += n
		w.total += int64(n)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
	return total, w.err
}

// flush waits for the window being sealed and writes it out, then starts
// sealing the current window (its final segment sealed as the file's last
// when last is true).
func (w *writer) flush(last bool) error {
	if err := w.drain(); err != nil {
		return err
	}
	count := w.cur + 1
	if w.base+uint64(count) > maxSegments {
		w.err = fmt.Errorf("envelope: the file exceeds %d segments; use a larger segment size", uint64(maxSegments))
		return w.err
	}
	if w.buf == nil {
		w.room(0)
	}
	s := &sealed{buf: w.buf, n: w.cur*w.stride() + w.fill + tagSize}
	s.segs = make([][]byte, count)
	for j := range count {
		off := j * w.stride()
		s.segs[j] = w.buf[off : off+w.segSize]
	}
	s.segs[w.cur] = s.segs[w.cur][:w.fill]
	base, lastIdx := w.base, -1
	if last {
		lastIdx = count - 1
	}
	fk := w.fk
	s.run(w.workers, func(j int, seg []byte) ([]byte, error) {
		return fk.seal(seg, base+uint64(j), j == lastIdx), nil
	})
	w.pending = s
	w.base += uint64(count)
	w.buf, w.spare = w.spare, nil
	w.cur, w.fill = 0, 0
	return nil
}

// drain waits for the pending window and writes it to dst.
func (w *writer) drain() error {
	s := w.pending
	if s == nil {
		return nil
	}
	s.wait()
	w.pending = nil
	if _, err := w.dst.Write(s.buf[:s.n]); err != nil {
		w.err = err
		return err
	}
	w.spare = s.buf
	return nil
}

// Close seals the final segment and writes the rest of the file. It does
// not close the underlying writer.
func (w *writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.fill == 0 && w.cur > 0 {
		// ReadFrom started a segment that got no data: the one before is
		// the final segment.
		w.cur, w.fill = w.cur-1, w.segSize
	}
	if w.err == nil {
		if err := w.flush(true); err == nil {
			_ = w.drain()
		}
	} else if w.pending != nil {
		w.pending.wait()
	}
	if w.release != nil {
		w.release(w.total)
	}
	return w.err
}
