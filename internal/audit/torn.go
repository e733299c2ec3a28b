package audit

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// tornScan is how much of the end of the newest file is searched for a
// torn tail: more than BatchedSync's longest window of records at any
// rate this server reaches.
const tornScan = 32 << 20

// tornBlock is the smallest unit a file system leaves zeroed after a
// crash (a sector): a torn tail's first NUL starts a run of NULs that
// reaches a multiple of it, or the end of the file.
const tornBlock = 512

// cutTornTail cuts the newest log file name at the start of the first line
// that holds a NUL byte within its last tornScan bytes, and returns how
// many bytes it cut. A line Coffer writes never holds one (JSON escapes
// control characters), but a machine crash can leave zeroed blocks where
// writes that were not yet fsynced had gone: with Options.BatchedSync the
// records of the window before the crash, in any mode a batch that was
// never acknowledged. Everything from there on was never durable, so it is
// dropped and the chain goes on from the line before; the start record
// the trail writes next marks the place.
func cutTornTail(name string) (int64, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	from := max(size-tornScan, 0)
	nul := int64(-1)
	buf := make([]byte, 1<<20)
	for off := from; off < size && nul < 0; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if i := bytes.IndexByte(buf[:n], 0); i >= 0 {
			nul = off + int64(i)
		}
		off += int64(n)
		if err != nil && err != io.EOF {
			return 0, err
		}
		if n == 0 {
			break
		}
	}
	if nul < 0 {
		return 0, nil
	}
	// One NUL amid written bytes is damage, not blocks a crash left
	// unwritten: cutting there would drop durable records after it.
	run := min((nul/tornBlock+1)*tornBlock, size) - nul
	n, err := f.ReadAt(buf[:run], nul)
	if err != nil && err != io.EOF {
		return 0, err
	}
	if int64(n) < run || bytes.Count(buf[:n], []byte{0}) != n {
		return 0, fmt.Errorf("audit file %s: a NUL byte at offset %d that does not start zeroed blocks (a torn tail): the file is damaged, not torn; check it with 'coffer audit verify'", name, nul)
	}
	// The line holding it starts after the '\n' before it.
	cut := int64(0)
	for end := nul; end > 0; {
		start := max(end-int64(len(buf)), 0)
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			cut = start + int64(i) + 1
			break
		}
		end = start
	}
	if err := f.Truncate(cut); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return size - cut, nil
}
