package secrets

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateHook is a webhook whose apply calls wait until want of them are in
// flight at once (or until patience runs out), and that records the most
// it saw in flight.
type gateHook struct {
	srv      *httptest.Server
	want     int
	patience time.Duration
	mu       sync.Mutex
	inflight int
	most     int
	opened   chan struct{}
	once     sync.Once
}

func newGateHook(t *testing.T, want int, patience time.Duration) *gateHook {
	g := &gateHook{want: want, patience: patience, opened: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"step":"apply"`) {
			g.mu.Lock()
			g.inflight++
			g.most = max(g.most, g.inflight)
			if g.inflight >= g.want {
				g.once.Do(func() { close(g.opened) })
			}
			g.mu.Unlock()
			select {
			case <-g.opened:
			case <-time.After(g.patience):
			}
			g.mu.Lock()
			g.inflight--
			g.mu.Unlock()
		}
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateHook) maxInFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.most
}

// dueWebhookSecrets makes n secrets rotated by url, all due.
func (e *env) dueWebhookSecrets(t *testing.T, n int, url string) []string {
	var names []string
	for i := range n {
		name := fmt.Sprintf("app/s%d", i)
		e.put(t, name, map[string]string{"password": "old"})
		e.rotation(t, name, "webhook:"+url)
		names = append(names, name)
	}
	e.clk.add(31 * 24 * time.Hour)
	return names
}

// Due rotations run at once: four webhooks that each wait for the others
// all answer (one after the other, the first would wait out its patience
// alone).
func TestRotateDueConcurrent(t *testing.T) {
	e := newEnv(t)
	g := newGateHook(t, 4, 3*time.Second)
	names := e.dueWebhookSecrets(t, 4, g.srv.URL)
	start := time.Now()
	n, err := e.svc.RotateDue(ctx)
	if err != nil || n != 4 {
		t.Fatalf("job: %d rotations, %v", n, err)
	}
	if m := g.maxInFlight(); m != 4 {
		t.Fatalf("at most %d webhook calls in flight, want 4 (took %s)", m, time.Since(start))
	}
	for _, name := range names {
		if md := e.meta(t, e.svc, name); md.CurrentVersion != 2 || md.LatestVersion != 2 {
			t.Fatalf("%s: current %d latest %d", name, md.CurrentVersion, md.LatestVersion)
		}
	}
}

// The concurrency is bounded: with a bound of 2, two calls are in flight
// at once but never three (the hook would open its gate at 3, so an
// unbounded job would reach it), and every secret is rotated once.
func TestRotateDueBounded(t *testing.T) {
	e := newEnv(t)
	e.svc.rot.concurrency = 2
	g := newGateHook(t, 3, 400*time.Millisecond)
	names := e.dueWebhookSecrets(t, 5, g.srv.URL)
	if n, err := e.svc.RotateDue(ctx); err != nil || n != 5 {
		t.Fatalf("job: %d rotations, %v", n, err)
	}
	if m := g.maxInFlight(); m != 2 {
		t.Fatalf("at most %d webhook calls in flight, want 2", m)
	}
	for _, name := range names {
		if md := e.meta(t, e.svc, name); md.CurrentVersion != 2 || md.LatestVersion != 2 {
			t.Fatalf("%s: current %d latest %d", name, md.CurrentVersion, md.LatestVersion)
		}
	}
}

func TestRotationConcurrencyOption(t *testing.T) {
	if w := New(nil, nil).rot.workers(); w != DefaultRotationConcurrency {
		t.Fatalf("default workers %d", w)
	}
	if w := New(nil, nil, WithRotationConcurrency(3)).rot.workers(); w != 3 {
		t.Fatalf("workers %d", w)
	}
}

// Two replicas running the concurrent job at once over the same due
// secrets: each secret gets exactly one apply and one test call and one
// new version, whichever replica wins it.
func TestRotateDueTwoReplicasExactlyOnce(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	names := e.dueWebhookSecrets(t, 12, h.srv.URL)
	other := e.replica(t)
	other.rot.concurrency = 3
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i, svc := range []*Service{e.svc, other} {
		wg.Go(func() {
			n, _ := svc.RotateDue(ctx)
			counts[i] = n
		})
	}
	wg.Wait()
	if counts[0]+counts[1] != len(names) {
		t.Fatalf("rotations completed %v, want %d in all", counts, len(names))
	}
	per := map[string]int{}
	for _, c := range h.got() {
		per[c.Secret+"/"+c.Step]++
	}
	for _, name := range names {
		if per[name+"/apply"] != 1 || per[name+"/test"] != 1 {
			t.Errorf("%s: %d apply and %d test calls", name, per[name+"/apply"], per[name+"/test"])
		}
		if md := e.meta(t, e.svc, name); md.CurrentVersion != 2 || md.LatestVersion != 2 {
			t.Errorf("%s: current %d latest %d", name, md.CurrentVersion, md.LatestVersion)
		}
	}
}
