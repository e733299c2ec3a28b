package envelope

import (
	"sync"
	"sync/atomic"
)

// batch is a window of segments processed in parallel: sealed or opened in
// place by workers goroutines, which all exit when the batch is done, so
// an abandoned reader or writer leaks nothing.
type batch struct {
	buf  []byte // the window's buffer, when its segments share one
	segs [][]byte
	errs []error
	wg   sync.WaitGroup
}

// run starts f on every segment with workers goroutines and returns at
// once; wait waits for them.
func (b *batch) run(workers int, f func(j int, seg []byte) ([]byte, error)) {
	n := len(b.segs)
	if cap(b.errs) < n {
		b.errs = make([]error, n)
	}
	b.errs = b.errs[:n]
	workers = min(workers, n)
	var next atomic.Int64
	b.wg.Add(workers)
	for range workers {
		go func() {
			defer b.wg.Done()
			for {
				j := int(next.Add(1) - 1)
				if j >= n {
					return
				}
				b.segs[j], b.errs[j] = f(j, b.segs[j])
			}
		}()
	}
}

func (b *batch) wait() { b.wg.Wait() }

// grow returns buf with room for n more bytes, growing it geometrically
// but never beyond limit bytes of capacity.
func grow(buf []byte, n, limit int) []byte {
	if cap(buf)-len(buf) >= n {
		return buf
	}
	c := max(2*cap(buf), len(buf)+n, 4096)
	c = min(c, limit)
	nb := make([]byte, len(buf), c)
	copy(nb, buf)
	return nb
}
