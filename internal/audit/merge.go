package audit

import (
	"bufio"
	"bytes"
	"container/heap"
	"errors"
	"io"
	"os"
	"strings"
)

// DefaultReorderWindow is how many matching records SearchMerged holds
// per source to put a source's records in time order.
const DefaultReorderWindow = 4096

// Source is one stream of records for SearchMerged: a replica's files in
// chain order, or a reader (standard input).
type Source struct {
	// Replica orders the records that name no replica (logs written
	// before replica ids, or a reader).
	Replica string
	Files   []string
	Reader  io.Reader
}

// SearchMerged streams the records of several sources that match q to fn,
// merged by time; records of equal time are ordered by replica id, then
// sequence number. Memory is bounded: the sources are read as streams (a
// k-way merge) and at most window matching records (0: the default) are
// held per source. Within one trail records are in commit order, and a
// record's time is when its request began, so a trail is only nearly in
// time order: a window of W puts it in order as long as no record is
// committed more than W matching records after one with a later time.
func SearchMerged(sources []Source, q Query, window int, fn func(line []byte, rec *Record) error) error {
	if window <= 0 {
		window = DefaultReorderWindow
	}
	match := q.matcher()
	streams := make([]*mergeStream, len(sources))
	for i, s := range sources {
		streams[i] = &mergeStream{src: s, match: match}
	}
	defer func() {
		for _, s := range streams {
			s.close()
		}
	}()
	h := &hitHeap{}
	fill := func(i int) error {
		s := streams[i]
		for s.held < window {
			line, rec, err := s.next()
			if err != nil {
				return err
			}
			if rec == nil {
				return nil
			}
			if rec.Replica == "" {
				rec.Replica = s.src.Replica
			}
			s.n++
			heap.Push(h, &hit{line: line, rec: rec, src: i, n: s.n})
			s.held++
		}
		return nil
	}
	for i := range streams {
		if err := fill(i); err != nil {
			return err
		}
	}
	for h.Len() > 0 {
		x := heap.Pop(h).(*hit)
		streams[x.src].held--
		if err := fn(x.line, x.rec); err != nil {
			return err
		}
		if err := fill(x.src); err != nil {
			return err
		}
	}
	return nil
}

// hit is a matching record waiting in the merge.
type hit struct {
	line []byte
	rec  *Record
	src  int
	n    uint64 // its rank in its source
}

type hitHeap []*hit

func (h hitHeap) Len() int { return len(h) }
func (h hitHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if c := a.rec.Time.Compare(b.rec.Time); c != 0 {
		return c < 0
	}
	if c := strings.Compare(a.rec.Replica, b.rec.Replica); c != 0 {
		return c < 0
	}
	if a.rec.Seq != b.rec.Seq {
		return a.rec.Seq < b.rec.Seq
	}
	if a.src != b.src {
		return a.src < b.src
	}
	return a.n < b.n
}
func (h hitHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *hitHeap) Push(x any)   { *h = append(*h, x.(*hit)) }
func (h *hitHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// mergeStream reads one source's matching records, file after file.
type mergeStream struct {
	src   Source
	match func([]byte) *Record
	file  int // next file to open
	f     *os.File
	br    *bufio.Reader
	done  bool
	held  int    // records in the merge heap
	n     uint64 // records read
}

// next returns the next matching line (a copy, without newline) and its
// record; rec is nil at the end.
func (s *mergeStream) next() ([]byte, *Record, error) {
	for !s.done {
		if s.br == nil {
			switch {
			case s.src.Reader != nil && s.file == 0:
				s.br = bufio.NewReaderSize(s.src.Reader, 1<<20)
			case s.src.Reader == nil && s.file < len(s.src.Files):
				f, err := os.Open(s.src.Files[s.file])
				if err != nil {
					return nil, nil, err
				}
				s.f, s.br = f, bufio.NewReaderSize(f, 1<<20)
			default:
				s.done = true
				return nil, nil, nil
			}
			s.file++
		}
		line, err := readLine(s.br)
		if err == io.EOF {
			s.close()
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if rec := s.match(line); rec != nil {
			return bytes.Clone(bytes.TrimSuffix(line, []byte("\n"))), rec, nil
		}
	}
	return nil, nil, nil
}

func (s *mergeStream) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.br = nil
}

// readLine returns the next line of br with its newline (the last may lack
// one), joining lines longer than br's buffer; io.EOF at the end.
func readLine(br *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if long != nil {
			line = append(long, line...)
		}
		if err == io.EOF && len(line) > 0 {
			return line, nil
		}
		return line, err
	}
}
