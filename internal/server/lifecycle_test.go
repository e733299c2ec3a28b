package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// TestUninitializedServer: before init, data routes say how to initialize
// and the probes say not ready.
func TestUninitializedServer(t *testing.T) {
	bar := barrier.New(inmem.New())
	s := sys.New(bar, nil)
	ts := httptest.NewServer(server.New(s, server.Options{}))
	defer ts.Close()

	cases := []struct {
		method, path string
		status       int
		code, msg    string
	}{
		{"POST", "/v1/kms/encrypt", 503, "not_initialized", "coffer operator init"},
		{"GET", "/v1/keys", 503, "not_initialized", "coffer operator init"},
		{"GET", "/readyz", 503, "", "not initialized"},
		{"GET", "/healthz", 200, "", "ok"},
		{"GET", "/v1/sys/seal-status", 200, "", `"initialized":false`},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, strings.NewReader(`{"key_id":"alias/x","plaintext":""}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var raw json.RawMessage
		json.NewDecoder(resp.Body).Decode(&raw)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(string(raw), c.msg) {
			t.Errorf("%s %s: %d %s, want %d containing %q", c.method, c.path, resp.StatusCode, raw, c.status, c.msg)
		}
		if c.code != "" {
			var eb client.ErrorBody
			json.Unmarshal(raw, &eb)
			if eb.Error.Code != c.code {
				t.Errorf("%s %s: code %q, want %q", c.method, c.path, eb.Error.Code, c.code)
			}
		}
	}
}
