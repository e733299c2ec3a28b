package audit

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// Webhook is a best-effort mirror: it POSTs committed lines as JSON lines
// (Content-Type application/x-ndjson) in batches, retrying with backoff. It
// never blocks a request: when its queue is full it drops lines and counts
// them. The file is the record of truth; the webhook ships it off the host.
type Webhook struct {
	URL     string
	Client  *http.Client
	Retries int

	q       chan []byte
	dropped atomic.Uint64
	sent    atomic.Uint64
	OnDrop  func(n int)
}

// NewWebhook starts a webhook mirror with a queue of queueLen lines; it
// stops when ctx ends.
func NewWebhook(ctx context.Context, url string, queueLen int) *Webhook {
	if queueLen <= 0 {
		queueLen = 10000
	}
	w := &Webhook{URL: url, Client: &http.Client{Timeout: 10 * time.Second}, Retries: 5, q: make(chan []byte, queueLen)}
	go w.run(ctx)
	return w
}

// Send implements Mirror.
func (w *Webhook) Send(line []byte) {
	select {
	case w.q <- line:
	default:
		w.dropped.Add(1)
		if w.OnDrop != nil {
			w.OnDrop(1)
		}
	}
}

// Dropped is the number of lines dropped so far.
func (w *Webhook) Dropped() uint64 { return w.dropped.Load() }

// Sent is the number of lines delivered so far.
func (w *Webhook) Sent() uint64 { return w.sent.Load() }

func (w *Webhook) run(ctx context.Context) {
	var buf bytes.Buffer
	for {
		var first []byte
		select {
		case <-ctx.Done():
			return
		case first = <-w.q:
		}
		buf.Reset()
		buf.Write(first)
		buf.WriteByte('\n')
		n := 1
	more:
		for n < 1000 {
			select {
			case l := <-w.q:
				buf.Write(l)
				buf.WriteByte('\n')
				n++
			default:
				break more
			}
		}
		if err := w.post(ctx, buf.Bytes()); err != nil {
			w.dropped.Add(uint64(n))
			if w.OnDrop != nil {
				w.OnDrop(n)
			}
			continue
		}
		w.sent.Add(uint64(n))
	}
}

func (w *Webhook) post(ctx context.Context, body []byte) error {
	backoff := 100 * time.Millisecond
	var err error
	for range w.Retries + 1 {
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-ndjson")
		var resp *http.Response
		resp, err = w.Client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return nil
			}
			err = fmt.Errorf("webhook answered %s", resp.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return err
}
