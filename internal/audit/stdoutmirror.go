package audit

import (
	"bytes"
	"io"
	"time"
)

// lineQueue hands committed lines to a writer on its own goroutine and
// drops them when the queue is full, so a stalled best-effort mirror
// (stdout next to the file sink, read by a stuck log collector) never
// holds up the commit of records.
type lineQueue struct {
	w      io.Writer
	ch     chan []byte
	done   chan struct{}
	onDrop func(lines int) // may be nil
}

// stdoutQueueLen is how many batches may wait for a slow mirror.
const stdoutQueueLen = 1024

func newLineQueue(w io.Writer, onDrop func(lines int)) *lineQueue {
	q := &lineQueue{w: w, ch: make(chan []byte, stdoutQueueLen), done: make(chan struct{}), onDrop: onDrop}
	go func() {
		defer close(q.done)
		for b := range q.ch {
			q.w.Write(b)
		}
	}()
	return q
}

// send queues a copy of b, or drops it when the queue is full.
func (q *lineQueue) send(b []byte) {
	select {
	case q.ch <- append([]byte(nil), b...):
	default:
		if q.onDrop != nil {
			q.onDrop(bytes.Count(b, []byte{'\n'}))
		}
	}
}

// close stops taking lines and waits up to wait for the queued ones to
// be written. Only the writer goroutine sends, and it has stopped.
func (q *lineQueue) close(wait time.Duration) {
	close(q.ch)
	select {
	case <-q.done:
	case <-time.After(wait):
	}
}
