package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// TestSecretWaitConcurrencyCap: beyond the server's bound on waits in
// flight (MaxSecretWaits; 1 here) a wait is refused with 503 busy and
// Retry-After, and served again once a wait ends.
func TestSecretWaitConcurrencyCap(t *testing.T) {
	ctx := context.Background()
	s := sys.New(barrier.New(inmem.New()), nil)
	res, err := s.Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, res.Shares[0]); err != nil {
		t.Fatal(err)
	}
	api := New(s, Options{Logger: slog.New(slog.DiscardHandler)})
	api.waits.max = 1
	ts := httptest.NewServer(api)
	t.Cleanup(ts.Close)
	post := func(wait string) (int, http.Header, string) {
		b, _ := json.Marshal(client.SecretWaitRequest{Secrets: map[string]uint32{"a": 0}, Wait: wait})
		req, _ := http.NewRequest("POST", ts.URL+"/v1/secrets/wait", strings.NewReader(string(b)))
		req.Header.Set("Authorization", "Bearer "+res.RootToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, nil, ""
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(raw)
	}
	first := make(chan int, 1)
	go func() {
		st, _, _ := post("1s")
		first <- st
	}()
	for deadline := time.Now().Add(5 * time.Second); api.waits.n.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first wait never started")
		}
	}
	st, h, raw := post("1s")
	if st != 503 || h.Get("Retry-After") == "" || !strings.Contains(raw, `"code":"busy"`) {
		t.Fatalf("a wait over the cap: %d %q %s", st, h.Get("Retry-After"), raw)
	}
	if st := <-first; st != 200 {
		t.Fatalf("the first wait: %d", st)
	}
	if st, _, raw := post("10ms"); st != 200 {
		t.Fatalf("a wait after the first ended: %d %s", st, raw)
	}
	if n := api.waits.n.Load(); n != 0 {
		t.Fatalf("%d waits counted after all ended", n)
	}
}

// TestSecretWaitNamesCap: the names held by all waits are bounded too
// (MaxSecretWaitNames; 3 here): a wait that would go beyond is refused
// with 503 busy; one that fits is served.
func TestSecretWaitNamesCap(t *testing.T) {
	ctx := context.Background()
	s := sys.New(barrier.New(inmem.New()), nil)
	res, err := s.Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, res.Shares[0]); err != nil {
		t.Fatal(err)
	}
	api := New(s, Options{Logger: slog.New(slog.DiscardHandler)})
	api.waits.maxNames = 3
	ts := httptest.NewServer(api)
	t.Cleanup(ts.Close)
	post := func(wait string, names ...string) (int, string) {
		known := map[string]uint32{}
		for _, n := range names {
			known[n] = 0
		}
		b, _ := json.Marshal(client.SecretWaitRequest{Secrets: known, Wait: wait})
		req, _ := http.NewRequest("POST", ts.URL+"/v1/secrets/wait", strings.NewReader(string(b)))
		req.Header.Set("Authorization", "Bearer "+res.RootToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	first := make(chan int, 1)
	go func() {
		st, _ := post("1s", "a", "b")
		first <- st
	}()
	for deadline := time.Now().Add(5 * time.Second); api.waits.names.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first wait never started")
		}
	}
	if st, raw := post("1s", "c", "d"); st != 503 || !strings.Contains(raw, `"code":"busy"`) {
		t.Fatalf("a wait over the names cap: %d %s", st, raw)
	}
	if st, raw := post("10ms", "c"); st != 200 {
		t.Fatalf("a wait within the names cap: %d %s", st, raw)
	}
	if st := <-first; st != 200 {
		t.Fatalf("the first wait: %d", st)
	}
	if n := api.waits.names.Load(); n != 0 {
		t.Fatalf("%d names counted after all waits ended", n)
	}
}

// TestSecretWaitUnextendedIsBounded: on a connection whose deadlines
// cannot be extended (a ResponseWriter without deadline support) a wait
// is cut to waitUnextended, below the server's write timeout, so its
// answer is not lost to that timeout.
func TestSecretWaitUnextendedIsBounded(t *testing.T) {
	ctx := context.Background()
	s := sys.New(barrier.New(inmem.New()), nil)
	res, err := s.Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, res.Shares[0]); err != nil {
		t.Fatal(err)
	}
	api := New(s, Options{Logger: slog.New(slog.DiscardHandler)})
	defer func(d time.Duration) { waitUnextended = d }(waitUnextended)
	waitUnextended = 200 * time.Millisecond
	b, _ := json.Marshal(client.SecretWaitRequest{Secrets: map[string]uint32{"a": 0}, Wait: "2m"})
	req := httptest.NewRequest("POST", "/v1/secrets/wait", strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+res.RootToken)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		api.ServeHTTP(rec, req)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a wait on a connection without deadlines was not cut to waitUnextended")
	}
	if rec.Code != 200 || rec.Body.String() != `{"changed":[],"denied":[]}`+"\n" {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
	if d := time.Since(start); d < waitUnextended {
		t.Fatalf("answered after %s", d)
	}
}
