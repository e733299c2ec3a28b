package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// waitServer answers POST /v1/secrets/wait after hold with one change;
// hijack, when set, instead drops the connection once the request is read
// (an ambiguous failure: the request reached the server).
func waitServer(t *testing.T, hold time.Duration, hijack bool, calls *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != "/v1/secrets/wait" {
			http.NotFound(w, r)
			return
		}
		var req client.SecretWaitRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if hijack {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		select {
		case <-time.After(hold):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"changed":[{"name":"app/db","current_version":2}],"denied":[]}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestSecretWaitOutlivesTheAttemptTimeout: a wait is answered only after
// it waits, so the attempt timeout of a multi-endpoint client is extended
// by the wait; otherwise every wait longer than the attempt timeout would
// be cut and sent to the next endpoint.
func TestSecretWaitOutlivesTheAttemptTimeout(t *testing.T) {
	var first, second atomic.Int64
	a := waitServer(t, 700*time.Millisecond, false, &first)
	b := waitServer(t, 0, false, &second)
	c, err := client.NewEndpoints([]string{a.URL, b.URL}, client.WithAttemptTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.SecretWait(context.Background(), map[string]uint32{"app/db": 1}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 1 || res.Changed[0].CurrentVersion != 2 {
		t.Fatalf("result %+v", res)
	}
	if first.Load() != 1 || second.Load() != 0 {
		t.Fatalf("calls: first endpoint %d, second %d; want the wait held on the first only", first.Load(), second.Load())
	}
}

// TestSecretWaitMovesOnAfterAnAmbiguousFailure: a wait changes nothing, so
// after a connection dropped with the request sent, a multi-endpoint
// client asks the next endpoint (a write would be left unknown instead).
func TestSecretWaitMovesOnAfterAnAmbiguousFailure(t *testing.T) {
	var first, second atomic.Int64
	a := waitServer(t, 0, true, &first)
	b := waitServer(t, 0, false, &second)
	c, err := client.NewEndpoints([]string{a.URL, b.URL})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.SecretWait(context.Background(), map[string]uint32{"app/db": 1}, time.Second)
	if err != nil {
		t.Fatalf("the wait was not sent to the second endpoint: %v", err)
	}
	if len(res.Changed) != 1 || res.Denied == nil || first.Load() != 1 || second.Load() != 1 {
		t.Fatalf("result %+v, calls %d/%d", res, first.Load(), second.Load())
	}
}
