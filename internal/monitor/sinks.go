package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// LogSink logs alerts.
type LogSink struct{ Log *slog.Logger }

// Send implements Sink.
func (l LogSink) Send(a Alert) {
	l.Log.Warn("alert", "rule", a.Rule, "severity", a.Severity, "subject", a.Subject, "seq", a.Seq, "summary", a.Summary, "response", a.Response)
}

// poster delivers JSON bodies in the background with retries; it drops
// when its queue is full, so a slow receiver never slows requests.
type poster struct {
	url     string
	client  *http.Client
	q       chan Alert
	encode  func([]Alert) ([]byte, error)
	onDrop  func(int)
	retries int
}

func newPoster(ctx context.Context, url string, encode func([]Alert) ([]byte, error), onDrop func(int)) *poster {
	p := &poster{url: url, client: &http.Client{Timeout: 10 * time.Second}, q: make(chan Alert, 1000), encode: encode, onDrop: onDrop, retries: 4}
	go p.run(ctx)
	return p
}

func (p *poster) Send(a Alert) {
	select {
	case p.q <- a:
	default:
		if p.onDrop != nil {
			p.onDrop(1)
		}
	}
}

func (p *poster) run(ctx context.Context) {
	for {
		var batch []Alert
		select {
		case <-ctx.Done():
			return
		case a := <-p.q:
			batch = append(batch, a)
		}
	more:
		for len(batch) < 100 {
			select {
			case a := <-p.q:
				batch = append(batch, a)
			default:
				break more
			}
		}
		body, err := p.encode(batch)
		if err == nil {
			err = p.post(ctx, body)
		}
		if err != nil && p.onDrop != nil {
			p.onDrop(len(batch))
		}
	}
}

func (p *poster) post(ctx context.Context, body []byte) error {
	backoff := 200 * time.Millisecond
	var err error
	for range p.retries + 1 {
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		if resp, err = p.client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return nil
			}
			err = fmt.Errorf("%s answered %s", p.url, resp.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	return err
}

// NewWebhookSink POSTs {"alerts":[...]} to url.
func NewWebhookSink(ctx context.Context, url string, onDrop func(int)) Sink {
	return newPoster(ctx, url, func(as []Alert) ([]byte, error) {
		return json.Marshal(struct {
			Alerts []Alert `json:"alerts"`
		}{as})
	}, onDrop)
}

// amAlert is an alert of the Alertmanager v2 API.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// AlertmanagerName is the alertname label of a rule: CofferSpike, ...
func AlertmanagerName(rule string) string {
	var b strings.Builder
	b.WriteString("Coffer")
	for _, part := range strings.Split(rule, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// NewAlertmanagerSink POSTs to base + /api/v2/alerts. Alerts resolve by
// themselves after the repeat interval (endsAt), as they are events.
func NewAlertmanagerSink(ctx context.Context, base string, resolveAfter time.Duration, onDrop func(int)) Sink {
	url := strings.TrimSuffix(base, "/") + "/api/v2/alerts"
	return newPoster(ctx, url, func(as []Alert) ([]byte, error) {
		out := make([]amAlert, len(as))
		for i, a := range as {
			labels := map[string]string{"alertname": AlertmanagerName(a.Rule), "rule": a.Rule, "severity": a.Severity,
				"subject": a.Subject, "service": "coffer"}
			if a.Accessor != "" {
				labels["accessor"] = a.Accessor
			}
			ann := map[string]string{"summary": a.Summary}
			if a.Seq != 0 {
				ann["audit_seq"] = fmt.Sprint(a.Seq)
			}
			if a.Response != "" {
				ann["response"] = a.Response
			}
			start := a.Time
			if start.IsZero() {
				start = time.Now()
			}
			out[i] = amAlert{Labels: labels, Annotations: ann, StartsAt: start.UTC(), EndsAt: start.Add(resolveAfter).UTC()}
		}
		return json.Marshal(out)
	}, onDrop)
}

// SinksFor builds the sinks a Rules file names.
func SinksFor(ctx context.Context, r Rules, log *slog.Logger, onDrop func(sink string, n int)) []Sink {
	var s []Sink
	if r.Sinks.Log == nil || *r.Sinks.Log {
		s = append(s, LogSink{log})
	}
	drop := func(name string) func(int) {
		return func(n int) {
			if onDrop != nil {
				onDrop(name, n)
			}
		}
	}
	if r.Sinks.Webhook != "" {
		s = append(s, NewWebhookSink(ctx, r.Sinks.Webhook, drop("alert_webhook")))
	}
	if r.Sinks.Alertmanager != "" {
		ri := time.Duration(r.RepeatInterval)
		if ri <= 0 {
			ri = 5 * time.Minute
		}
		s = append(s, NewAlertmanagerSink(ctx, r.Sinks.Alertmanager, ri, drop("alertmanager")))
	}
	return s
}
