package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// cancellingRecorder cancels the request (as a client that hangs up does)
// when the outcome record of a change arrives, that is after the change
// ran, and, like the real trail, refuses records whose context is done.
type cancellingRecorder struct {
	mu       sync.Mutex
	cancel   context.CancelFunc
	outcomes []audit.Record
}

func (c *cancellingRecorder) Record(ctx context.Context, r *audit.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Phase == audit.PhaseDone && r.Action == "key:Create" && c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.Phase == audit.PhaseDone {
		c.outcomes = append(c.outcomes, *r)
	}
	return nil
}

// TestChangeRecordedWhenClientHangsUp: a change whose client goes away
// after its intent record still gets its outcome record (it used to be
// refused with the cancelled context: the change happened, unrecorded).
func TestChangeRecordedWhenClientHangsUp(t *testing.T) {
	rec := &cancellingRecorder{}
	api := server.New(sys.New(barrier.New(inmem.New()), nil), server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: rec})
	call := func(ctx context.Context, method, path, token string, in, out any) int {
		t.Helper()
		b, _ := json.Marshal(in)
		req := httptest.NewRequestWithContext(ctx, method, path, bytes.NewReader(b))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		api.ServeHTTP(w, req)
		if out != nil {
			json.Unmarshal(w.Body.Bytes(), out)
		}
		return w.Code
	}
	var ir client.InitResponse
	call(t.Context(), "POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	call(t.Context(), "POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)

	ctx, cancel := context.WithCancel(t.Context())
	rec.mu.Lock()
	rec.cancel = cancel
	rec.mu.Unlock()
	var key client.Key
	st := call(ctx, "POST", "/v1/keys", ir.RootToken, client.CreateKeyRequest{Alias: "alias/hangup"}, &key)
	if ctx.Err() == nil {
		t.Fatal("the request was not cancelled")
	}
	// The change ran before the hang-up; its outcome must be on record.
	var got client.Key
	if code := call(t.Context(), "GET", "/v1/keys/alias%2Fhangup", ir.RootToken, nil, &got); code != http.StatusOK {
		t.Fatalf("the key was not created: %d", code)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.outcomes {
		if r.Action == "key:Create" && r.Outcome == "ok" {
			if st != http.StatusCreated {
				t.Errorf("status %d, want 201 (recorded and done)", st)
			}
			return
		}
	}
	t.Fatalf("key %s was created (status %d to the departed client) with no outcome record", got.ID, st)
}

// TestUnknownRoutesAudited: requests no route matches (404, 405) are
// audited too, with the method and the presented token (as its HMAC, in
// the real trail) but not the path.
func TestUnknownRoutesAudited(t *testing.T) {
	e := newIAMEnv(t, nil)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1/no-such-route/cft_pasted_by_mistake", http.StatusNotFound, "not_found"},
		{"DELETE", "/v1/sys/seal-status", http.StatusMethodNotAllowed, "method_not_allowed"},
	} {
		st, hdr, raw := e.do(tc.method, tc.path, bearer("cft_probe"), nil)
		if st != tc.status {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, st, raw)
		}
		r, ok := e.rec.last("api:UnknownRoute")
		if !ok || r.RequestID != hdr.Get("X-Request-Id") || r.Status != tc.status || r.ErrorCode != tc.code ||
			r.Detail != tc.method || r.Token != "cft_probe" || r.Source == "" {
			t.Fatalf("%s %s: record %+v", tc.method, tc.path, r)
		}
		if b, _ := json.Marshal(r); strings.Contains(string(b), "pasted") || strings.Contains(string(b), "seal-status") {
			t.Fatalf("the path reached the record: %s", b)
		}
	}
}
