package scan

import (
	"bufio"
	"context"
	"errors"
	"io"
)

// chunkSize is how much streamed text is gathered before it is scanned.
const chunkSize = 4 << 20

// lineReader reads lines of at most max bytes: the rest of a longer line
// is read and dropped, so memory stays bounded on a 1 GB single-line input.
type lineReader struct {
	r         *bufio.Reader
	max       int
	buf       []byte
	truncated int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its newline; the slice is valid until
// the following call. It returns io.EOF after the last line.
func (l *lineReader) next() ([]byte, error) {
	l.buf = l.buf[:0]
	cut := false
	for {
		frag, err := l.r.ReadSlice('\n')
		if !cut {
			room := l.max - len(l.buf)
			if len(frag) > room {
				l.buf = append(l.buf, frag[:room]...)
				cut = true
				l.truncated++
			} else {
				l.buf = append(l.buf, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && (len(l.buf) == 0 && !cut) {
			return nil, err
		}
		n := len(l.buf)
		if n > 0 && l.buf[n-1] == '\n' {
			n--
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return l.buf[:n], err
		}
		return l.buf[:n], nil
	}
}

// ScanReader scans a stream (standard input) named name in the findings.
// Lines longer than Options.MaxLineLen are cut and counted; the text is
// scanned in chunks, so memory is bounded whatever the input's size.
func (s *Scanner) ScanReader(ctx context.Context, r io.Reader, name string) (*Result, error) {
	c := s.newCollector()
	lr := newLineReader(r, s.opts.MaxLineLen)
	var chunk []byte
	base := 0  // lines before the chunk
	lines := 0 // lines in the chunk
	first := true
	flush := func(last bool) {
		if len(chunk) == 0 && lines == 0 {
			return
		}
		res := s.scanText(name, chunk, first && last)
		off := base
		c.add(res, func(f *Finding) { f.Line += off })
		c.count(func(sm *Summary) { sm.Bytes += int64(len(chunk)) })
		base += lines
		chunk, lines, first = chunk[:0], 0, false
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		chunk = append(chunk, line...)
		chunk = append(chunk, '\n')
		lines++
		if len(chunk) >= chunkSize {
			flush(false)
		}
	}
	flush(true)
	c.count(func(sm *Summary) { sm.Files = 1; sm.TruncatedLines += lr.truncated })
	return c.result(), nil
}
