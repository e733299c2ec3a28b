package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorded is what the fake server saw of one request.
type recorded struct {
	Method      string
	RequestURI  string
	EscapedPath string
	Path        string
	Query       string
	Auth        string
	UserAgent   string
	ContentType string
	Body        []byte
}

// fakeServer answers every request with status and body, and records it.
type fakeServer struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	last   recorded
	status int
	body   string
	ctype  string
	header map[string]string
}

func newFake(t *testing.T, status int, body string) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, status: status, body: body, ctype: "application/json"}
	f.srv = httptest.NewServer(http.HandlerFunc(f.handle))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) handle(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		f.t.Errorf("reading request body: %v", err)
	}
	f.mu.Lock()
	f.last = recorded{
		Method:      r.Method,
		RequestURI:  r.RequestURI,
		EscapedPath: r.URL.EscapedPath(),
		Path:        r.URL.Path,
		Query:       r.URL.RawQuery,
		Auth:        r.Header.Get("Authorization"),
		UserAgent:   r.Header.Get("User-Agent"),
		ContentType: r.Header.Get("Content-Type"),
		Body:        b,
	}
	status, body, ctype := f.status, f.body, f.ctype
	for k, v := range f.header {
		w.Header().Set(k, v)
	}
	f.mu.Unlock()
	if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (f *fakeServer) req() recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func (f *fakeServer) client(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := New(f.srv.URL, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// jsonBody decodes a recorded request body into a generic map.
func jsonBody(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("request body %q is not a JSON object: %v", b, err)
	}
	return m
}

const keyJSON = `{"id":"k1","aliases":["alias/app"],"state":"Enabled","created_at":"2026-01-02T03:04:05Z","primary_version":2,"versions":[{"version":1,"created_at":"2026-01-02T03:04:05Z"},{"version":2,"created_at":"2026-02-02T03:04:05Z"}],"last_rotated_at":"2026-02-02T03:04:05Z"}`

// TestRoutes checks the method, escaped path and body of every route.
func TestRoutes(t *testing.T) {
	ctx := context.Background()
	type tc struct {
		name     string
		status   int
		resp     string
		call     func(c *Client) error
		method   string
		uri      string // RequestURI: escaped path and query
		wantBody map[string]any
	}
	key := func(f func(c *Client) (*Key, error)) func(c *Client) error {
		return func(c *Client) error {
			k, err := f(c)
			if err == nil && (k.ID != "k1" || k.PrimaryVersion != 2 || len(k.Versions) != 2) {
				return errors.New("key not decoded")
			}
			return err
		}
	}
	cases := []tc{
		{name: "health", status: 200, resp: `{"status":"ok"}`, method: "GET", uri: "/healthz",
			call: func(c *Client) error { return c.Health(ctx) }},
		{name: "seal-status", status: 200, resp: `{"initialized":true,"sealed":true,"threshold":3,"shares":5,"progress":1}`,
			method: "GET", uri: "/v1/sys/seal-status",
			call: func(c *Client) error {
				s, err := c.SealStatus(ctx)
				if err == nil && (!s.Sealed || s.Threshold != 3 || s.Progress != 1) {
					return errors.New("seal status not decoded")
				}
				return err
			}},
		{name: "init", status: 200, resp: `{"shares":["a","b"],"root_token":"root"}`, method: "POST", uri: "/v1/sys/init",
			wantBody: map[string]any{"shares": 5.0, "threshold": 3.0},
			call: func(c *Client) error {
				r, err := c.Init(ctx, InitRequest{Shares: 5, Threshold: 3})
				if err == nil && (r.RootToken != "root" || len(r.Shares) != 2) {
					return errors.New("init not decoded")
				}
				return err
			}},
		{name: "unseal", status: 200, resp: `{"sealed":false}`, method: "POST", uri: "/v1/sys/unseal",
			wantBody: map[string]any{"share": "s1"},
			call:     func(c *Client) error { _, err := c.Unseal(ctx, UnsealRequest{Share: "s1"}); return err }},
		{name: "seal", status: 204, method: "POST", uri: "/v1/sys/seal",
			call: func(c *Client) error { return c.Seal(ctx) }},
		{name: "token-create", status: 201, resp: `{"token":"t","accessor":"a","root":false,"created_at":"2026-01-02T03:04:05Z"}`,
			method: "POST", uri: "/v1/auth/token/create", wantBody: map[string]any{"ttl": "1h"},
			call: func(c *Client) error {
				r, err := c.CreateToken(ctx, CreateTokenRequest{TTL: "1h"})
				if err == nil && (r.Token != "t" || r.Accessor != "a") {
					return errors.New("token not decoded")
				}
				return err
			}},
		{name: "lookup-self", status: 200, resp: `{"accessor":"a","root":true,"created_at":"2026-01-02T03:04:05Z"}`,
			method: "GET", uri: "/v1/auth/token/lookup-self",
			call: func(c *Client) error { _, err := c.LookupSelf(ctx); return err }},
		{name: "token-revoke", status: 204, method: "POST", uri: "/v1/auth/token/revoke",
			wantBody: map[string]any{"accessor": "acc"},
			call:     func(c *Client) error { return c.RevokeToken(ctx, RevokeTokenRequest{Accessor: "acc"}) }},
		{name: "create-key", status: 201, resp: keyJSON, method: "POST", uri: "/v1/keys",
			wantBody: map[string]any{"alias": "alias/app", "rotation_period": "90d", "tags": map[string]any{"env": "prod"}},
			call: key(func(c *Client) (*Key, error) {
				return c.CreateKey(ctx, CreateKeyRequest{Alias: "alias/app", RotationPeriod: "90d", Tags: map[string]string{"env": "prod"}})
			})},
		{name: "list-keys", status: 200, resp: `{"keys":[` + keyJSON + `]}`, method: "GET", uri: "/v1/keys",
			call: func(c *Client) error {
				l, err := c.ListKeys(ctx)
				if err == nil && len(l.Keys) != 1 {
					return errors.New("list not decoded")
				}
				return err
			}},
		{name: "describe-id", status: 200, resp: keyJSON, method: "GET", uri: "/v1/keys/k1",
			call: key(func(c *Client) (*Key, error) { return c.DescribeKey(ctx, "k1") })},
		{name: "describe-alias", status: 200, resp: keyJSON, method: "GET", uri: "/v1/keys/alias%2Fapp",
			call: key(func(c *Client) (*Key, error) { return c.DescribeKey(ctx, "alias/app") })},
		{name: "describe-odd-alias", status: 200, resp: keyJSON, method: "GET", uri: "/v1/keys/alias%2Fa%20b%3Fc",
			call: key(func(c *Client) (*Key, error) { return c.DescribeKey(ctx, "alias/a b?c") })},
		{name: "update", status: 200, resp: keyJSON, method: "PATCH", uri: "/v1/keys/alias%2Fapp",
			wantBody: map[string]any{"rotation_period": ""},
			call: key(func(c *Client) (*Key, error) {
				empty := ""
				return c.UpdateKey(ctx, "alias/app", UpdateKeyRequest{RotationPeriod: &empty})
			})},
		{name: "enable", status: 200, resp: keyJSON, method: "POST", uri: "/v1/keys/alias%2Fapp/enable",
			call: key(func(c *Client) (*Key, error) { return c.EnableKey(ctx, "alias/app") })},
		{name: "disable", status: 200, resp: keyJSON, method: "POST", uri: "/v1/keys/k1/disable",
			call: key(func(c *Client) (*Key, error) { return c.DisableKey(ctx, "k1") })},
		{name: "rotate", status: 200, resp: keyJSON, method: "POST", uri: "/v1/keys/alias%2Fapp/rotate",
			call: key(func(c *Client) (*Key, error) { return c.RotateKey(ctx, "alias/app") })},
		{name: "schedule-deletion", status: 200, resp: keyJSON, method: "POST", uri: "/v1/keys/alias%2Fapp/schedule-deletion",
			wantBody: map[string]any{"pending_days": 7.0},
			call: key(func(c *Client) (*Key, error) {
				return c.ScheduleKeyDeletion(ctx, "alias/app", ScheduleDeletionRequest{PendingDays: 7})
			})},
		{name: "cancel-deletion", status: 200, resp: keyJSON, method: "POST", uri: "/v1/keys/alias%2Fapp/cancel-deletion",
			call: key(func(c *Client) (*Key, error) { return c.CancelKeyDeletion(ctx, "alias/app") })},
		{name: "create-alias", status: 201, resp: `{"name":"alias/x","key_id":"k1"}`, method: "POST", uri: "/v1/aliases",
			wantBody: map[string]any{"name": "alias/x", "key_id": "k1"},
			call:     func(c *Client) error { _, err := c.CreateAlias(ctx, Alias{Name: "alias/x", KeyID: "k1"}); return err }},
		{name: "list-aliases", status: 200, resp: `{"aliases":[{"name":"alias/x","key_id":"k1"}]}`, method: "GET", uri: "/v1/aliases",
			call: func(c *Client) error { _, err := c.ListAliases(ctx, ""); return err }},
		{name: "list-aliases-of-key", status: 200, resp: `{"aliases":[]}`, method: "GET", uri: "/v1/aliases?key_id=alias%2Fx",
			call: func(c *Client) error { _, err := c.ListAliases(ctx, "alias/x"); return err }},
		{name: "delete-alias", status: 204, method: "DELETE", uri: "/v1/aliases/alias%2Fx",
			call: func(c *Client) error { return c.DeleteAlias(ctx, "alias/x") }},
		{name: "encrypt", status: 200, resp: `{"ciphertext":"AQID","key_id":"k1","key_version":2}`, method: "POST", uri: "/v1/kms/encrypt",
			wantBody: map[string]any{"key_id": "alias/app", "plaintext": "aGk=", "context": map[string]any{"a": "b"}},
			call: func(c *Client) error {
				r, err := c.Encrypt(ctx, EncryptRequest{KeyID: "alias/app", Plaintext: []byte("hi"), Context: map[string]string{"a": "b"}})
				if err == nil && !bytes.Equal(r.Ciphertext, []byte{1, 2, 3}) {
					return errors.New("ciphertext not decoded")
				}
				return err
			}},
		{name: "decrypt", status: 200, resp: `{"plaintext":"aGk=","key_id":"k1","key_version":2}`, method: "POST", uri: "/v1/kms/decrypt",
			wantBody: map[string]any{"ciphertext": "AQID"},
			call: func(c *Client) error {
				r, err := c.Decrypt(ctx, DecryptRequest{Ciphertext: []byte{1, 2, 3}})
				if err == nil && string(r.Plaintext) != "hi" {
					return errors.New("plaintext not decoded")
				}
				return err
			}},
		{name: "reencrypt", status: 200, resp: `{"ciphertext":"AQID","key_id":"k2"}`, method: "POST", uri: "/v1/kms/reencrypt",
			wantBody: map[string]any{"ciphertext": "AQID", "destination_key_id": "k2"},
			call: func(c *Client) error {
				_, err := c.ReEncrypt(ctx, ReEncryptRequest{Ciphertext: []byte{1, 2, 3}, DestinationKeyID: "k2"})
				return err
			}},
		{name: "datakey", status: 200, resp: `{"plaintext":"AQID","ciphertext":"BAUG","key_id":"k1"}`, method: "POST", uri: "/v1/kms/datakey",
			wantBody: map[string]any{"key_id": "k1", "bytes": 16.0},
			call: func(c *Client) error {
				_, err := c.GenerateDataKey(ctx, DataKeyRequest{KeyID: "k1", Bytes: 16})
				return err
			}},
		{name: "datakey-without-plaintext", status: 200, resp: `{"ciphertext":"BAUG","key_id":"k1"}`, method: "POST", uri: "/v1/kms/datakey-without-plaintext",
			wantBody: map[string]any{"key_id": "k1"},
			call: func(c *Client) error {
				_, err := c.GenerateDataKeyWithoutPlaintext(ctx, DataKeyRequest{KeyID: "k1"})
				return err
			}},
		{name: "random", status: 200, resp: `{"random":"AQIDBA=="}`, method: "POST", uri: "/v1/kms/random",
			wantBody: map[string]any{"bytes": 4.0},
			call: func(c *Client) error {
				r, err := c.GenerateRandom(ctx, RandomRequest{Bytes: 4})
				if err == nil && len(r.Random) != 4 {
					return errors.New("random not decoded")
				}
				return err
			}},
		{name: "encrypt-batch", status: 200,
			resp:   `{"results":[{"ciphertext":"AQID","key_id":"k1","key_version":1},{"error":{"code":"key_disabled","message":"no"}}]}`,
			method: "POST", uri: "/v1/kms/encrypt-batch",
			wantBody: map[string]any{"key_id": "k1", "items": []any{
				map[string]any{"key_id": "", "plaintext": "YQ=="},
				map[string]any{"key_id": "k2", "plaintext": "Yg=="},
			}},
			call: func(c *Client) error {
				r, err := c.EncryptBatch(ctx, BatchEncryptRequest{KeyID: "k1", Items: []EncryptRequest{
					{Plaintext: []byte("a")}, {KeyID: "k2", Plaintext: []byte("b")},
				}})
				if err == nil && (len(r.Results) != 2 || r.Results[0].KeyID != "k1" || r.Results[1].Error == nil || r.Results[1].Error.Code != "key_disabled") {
					return errors.New("batch results not decoded")
				}
				return err
			}},
		{name: "decrypt-batch", status: 200, resp: `{"results":[{"plaintext":"YQ==","key_id":"k1"}]}`,
			method: "POST", uri: "/v1/kms/decrypt-batch",
			wantBody: map[string]any{"items": []any{map[string]any{"ciphertext": "AQID"}}},
			call: func(c *Client) error {
				r, err := c.DecryptBatch(ctx, BatchDecryptRequest{Items: []DecryptRequest{{Ciphertext: []byte{1, 2, 3}}}})
				if err == nil && (len(r.Results) != 1 || string(r.Results[0].Plaintext) != "a") {
					return errors.New("batch results not decoded")
				}
				return err
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.status, tc.resp)
			if tc.status == 204 {
				f.ctype = ""
			}
			c := f.client(t, WithToken("tok-123"))
			if err := tc.call(c); err != nil {
				t.Fatalf("call: %v", err)
			}
			got := f.req()
			if got.Method != tc.method {
				t.Errorf("method = %s, want %s", got.Method, tc.method)
			}
			if got.RequestURI != tc.uri {
				t.Errorf("request URI = %s, want %s", got.RequestURI, tc.uri)
			}
			if got.Auth != "Bearer tok-123" {
				t.Errorf("Authorization = %q, want %q", got.Auth, "Bearer tok-123")
			}
			if got.UserAgent != defaultUserAgent {
				t.Errorf("User-Agent = %q", got.UserAgent)
			}
			if tc.wantBody != nil {
				if got.ContentType != "application/json" {
					t.Errorf("Content-Type = %q", got.ContentType)
				}
				gotBody := jsonBody(t, got.Body)
				want, _ := json.Marshal(tc.wantBody)
				have, _ := json.Marshal(gotBody)
				if !bytes.Equal(want, have) {
					t.Errorf("body = %s, want %s", have, want)
				}
			}
		})
	}
}

func TestAliasPathIsOneSegment(t *testing.T) {
	f := newFake(t, 200, keyJSON)
	c := f.client(t)
	if _, err := c.RotateKey(context.Background(), "alias/team/app"); err != nil {
		t.Fatal(err)
	}
	got := f.req()
	if got.EscapedPath != "/v1/keys/alias%2Fteam%2Fapp/rotate" {
		t.Errorf("escaped path = %s", got.EscapedPath)
	}
	if got.Path != "/v1/keys/alias/team/app/rotate" {
		t.Errorf("decoded path = %s", got.Path)
	}
}

func TestNoTokenNoAuthHeader(t *testing.T) {
	f := newFake(t, 200, `{"sealed":true}`)
	c := f.client(t)
	if _, err := c.SealStatus(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := f.req().Auth; a != "" {
		t.Errorf("Authorization = %q, want none", a)
	}
}

func TestSetToken(t *testing.T) {
	f := newFake(t, 200, `{"accessor":"a"}`)
	c := f.client(t, WithToken("old"), WithUserAgent("myapp/1.0"))
	c.SetToken("new")
	if c.Token() != "new" {
		t.Fatalf("Token() = %q", c.Token())
	}
	if _, err := c.LookupSelf(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := f.req()
	if got.Auth != "Bearer new" {
		t.Errorf("Authorization = %q", got.Auth)
	}
	if got.UserAgent != "myapp/1.0" {
		t.Errorf("User-Agent = %q", got.UserAgent)
	}
}

func TestAPIError(t *testing.T) {
	f := newFake(t, 404, `{"error":{"code":"key_not_found","message":"key \"x\" does not exist","request_id":"req-7"}}`)
	c := f.client(t)
	_, err := c.DescribeKey(context.Background(), "x")
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %T %v is not an *APIError", err, err)
	}
	if apiErr.StatusCode != 404 || apiErr.Code != "key_not_found" || apiErr.RequestID != "req-7" || apiErr.Message != `key "x" does not exist` {
		t.Errorf("decoded %+v", apiErr)
	}
	want := `key_not_found: key "x" does not exist (request id req-7)`
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

func TestAPIErrorRequestIDHeader(t *testing.T) {
	f := newFake(t, 403, `{"error":{"code":"permission_denied","message":"token lacks access"}}`)
	f.header = map[string]string{"X-Request-Id": "hdr-1"}
	_, err := f.client(t).ListKeys(context.Background())
	want := "permission_denied: token lacks access (request id hdr-1)"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

func TestNonJSONError(t *testing.T) {
	f := newFake(t, 502, "<html><body>Bad Gateway</body></html>")
	f.ctype = "text/html"
	_, err := f.client(t).ListKeys(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %T %v is not an *APIError", err, err)
	}
	if apiErr.StatusCode != 502 || apiErr.Code != "" {
		t.Errorf("decoded %+v", apiErr)
	}
	msg := err.Error()
	for _, want := range []string{"HTTP 502 Bad Gateway", "GET /v1/keys", "not JSON", "text/html", "Bad Gateway</body>"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Error() = %q, missing %q", msg, want)
		}
	}
}

func TestEmptyErrorBody(t *testing.T) {
	f := newFake(t, 500, "")
	f.ctype = ""
	err := f.client(t).Seal(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP 500") || !strings.Contains(err.Error(), "empty response body") {
		t.Errorf("err = %v", err)
	}
}

func TestNonJSONSuccess(t *testing.T) {
	f := newFake(t, 200, "<html>hello</html>")
	f.ctype = "text/html"
	_, err := f.client(t).SealStatus(context.Background())
	var respErr *ResponseError
	if !errors.As(err, &respErr) {
		t.Fatalf("error %T %v is not a *ResponseError", err, err)
	}
	if !strings.Contains(err.Error(), "not a valid Coffer JSON answer") || !strings.Contains(err.Error(), "text/html") {
		t.Errorf("Error() = %q", err.Error())
	}
}

func TestReady(t *testing.T) {
	f := newFake(t, 200, "ok")
	c := f.client(t)
	if ok, err := c.Ready(context.Background()); !ok || err != nil {
		t.Errorf("ready: %v %v", ok, err)
	}
	f.mu.Lock()
	f.status = 503
	f.mu.Unlock()
	if ok, err := c.Ready(context.Background()); ok || err != nil {
		t.Errorf("sealed: %v %v", ok, err)
	}
	f.mu.Lock()
	f.status = 500
	f.mu.Unlock()
	if ok, err := c.Ready(context.Background()); ok || err == nil {
		t.Errorf("broken: %v %v", ok, err)
	}
}

func TestEmptyKeyRejected(t *testing.T) {
	c, err := New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeKey(context.Background(), ""); err == nil {
		t.Error("DescribeKey(\"\") succeeded")
	}
	if err := c.DeleteAlias(context.Background(), ""); err == nil {
		t.Error("DeleteAlias(\"\") succeeded")
	}
	if err := c.RevokeToken(context.Background(), RevokeTokenRequest{}); err == nil {
		t.Error("RevokeToken with neither token nor accessor succeeded")
	}
}

func TestContextCancel(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) })
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.SealStatus(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
}

func TestNewAddress(t *testing.T) {
	for addr, want := range map[string]string{
		"":                              DefaultAddress,
		"http://localhost:8200/":        "http://localhost:8200",
		"https://kms.example.com":       "https://kms.example.com",
		"https://proxy.example/coffer/": "https://proxy.example/coffer",
	} {
		c, err := New(addr)
		if err != nil {
			t.Errorf("New(%q): %v", addr, err)
			continue
		}
		if c.Address() != want {
			t.Errorf("New(%q).Address() = %q, want %q", addr, c.Address(), want)
		}
	}
	for _, bad := range []string{"localhost:8200", "ftp://x", "http://", "http://u:p@host", "http://h/?q=1"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
}

func TestPathPrefix(t *testing.T) {
	f := newFake(t, 200, keyJSON)
	c, err := New(f.srv.URL + "/coffer/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeKey(context.Background(), "alias/app"); err != nil {
		t.Fatal(err)
	}
	if got := f.req().RequestURI; got != "/coffer/v1/keys/alias%2Fapp" {
		t.Errorf("request URI = %s", got)
	}
}

func TestHTTPClientConflicts(t *testing.T) {
	if _, err := New("", WithHTTPClient(&http.Client{}), WithInsecureSkipVerify(true)); err == nil {
		t.Error("WithHTTPClient + WithInsecureSkipVerify accepted")
	}
	if _, err := New("", WithHTTPClient(nil)); err == nil {
		t.Error("WithHTTPClient(nil) accepted")
	}
	f := newFake(t, 200, `{"sealed":false}`)
	c := f.client(t, WithHTTPClient(f.srv.Client()))
	if _, err := c.SealStatus(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestTLS checks WithCACertFile against a TLS server, that HTTP/2 is
// negotiated, and that an untrusted certificate fails unless verification is
// skipped.
func TestTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"initialized":true,"sealed":false,"version":"`+r.Proto+`"}`)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cert := srv.Certificate()
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	c, err := New(srv.URL, WithCACertFile(caFile))
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.SealStatus(ctx)
	if err != nil {
		t.Fatalf("with CA file: %v", err)
	}
	if st.Version != "HTTP/2.0" {
		t.Errorf("protocol = %s, want HTTP/2.0", st.Version)
	}

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c, err = New(srv.URL, WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SealStatus(ctx); err != nil {
		t.Fatalf("with TLS config: %v", err)
	}

	c, err = New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SealStatus(ctx); err == nil {
		t.Error("untrusted certificate accepted")
	}

	c, err = New(srv.URL, WithInsecureSkipVerify(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SealStatus(ctx); err != nil {
		t.Errorf("skip verify: %v", err)
	}

	if _, err := New(srv.URL, WithCACertFile(filepath.Join(t.TempDir(), "missing.pem"))); err == nil {
		t.Error("missing CA file accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, []byte("not a cert"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(srv.URL, WithCACertFile(empty)); err == nil {
		t.Error("CA file without certificates accepted")
	}
}

func TestFromEnv(t *testing.T) {
	f := newFake(t, 200, `{"accessor":"a"}`)
	t.Setenv(EnvAddress, f.srv.URL)
	t.Setenv(EnvToken, "env-token")
	t.Setenv(EnvCACert, "")
	t.Setenv(EnvSkipVerify, "")
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LookupSelf(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := f.req().Auth; a != "Bearer env-token" {
		t.Errorf("Authorization = %q", a)
	}
	// Explicit options win over the environment.
	c, err = FromEnv(WithToken("explicit"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Token() != "explicit" {
		t.Errorf("Token() = %q", c.Token())
	}

	t.Setenv(EnvSkipVerify, "maybe")
	if _, err := FromEnv(); err == nil {
		t.Error("COFFER_SKIP_VERIFY=maybe accepted")
	}
	t.Setenv(EnvSkipVerify, "1")
	t.Setenv(EnvAddress, "")
	c, err = FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.Address() != DefaultAddress {
		t.Errorf("Address() = %q", c.Address())
	}
}

// TestConcurrent exercises one Client from many goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	f := newFake(t, 200, `{"ciphertext":"AQID","key_id":"k1","key_version":1}`)
	c := f.client(t, WithToken("a"))
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%8 == 0 {
				c.SetToken("b")
			}
			if _, err := c.Encrypt(context.Background(), EncryptRequest{KeyID: "k1", Plaintext: []byte("x")}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// TestWithDoor: the door travels as X-Coffer-Door on every request, and
// is absent by default.
func TestWithDoor(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("X-Coffer-Door"))
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`))
	}))
	defer srv.Close()
	for _, door := range []string{"kms-plugin", ""} {
		var opts []Option
		if door != "" {
			opts = append(opts, WithDoor(door))
		}
		c, err := New(srv.URL, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Health(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got[len(got)-1] != door {
			t.Fatalf("door %q sent as %q", door, got[len(got)-1])
		}
	}
}

// TestNewRedactsAddressCredentials checks that an address carrying
// credentials is refused without repeating them, whatever is wrong with it
// (issue 13: client.New echoed them in its error).
func TestNewRedactsAddressCredentials(t *testing.T) {
	const secret = "cft_s3cr3tT0ken"
	for _, addr := range []string{
		"https://admin:" + secret + "@coffer.example:8200",
		"https://" + secret + "@coffer.example:8200/",
		"http://user:" + secret + "@[::1:8200",     // does not parse
		"ftp://user:" + secret + "@coffer.example", // wrong scheme
		"user:" + secret + "@coffer.example:8200",  // no scheme
		"https://user:" + secret + "@coffer.example/?q=1",
	} {
		_, err := New(addr)
		if err == nil {
			t.Fatalf("New(%q) succeeded, want an error", addr)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("New(%q) error repeats the credential: %v", addr, err)
		}
		if !strings.Contains(err.Error(), "REDACTED") {
			t.Errorf("New(%q) error %q does not show where the credential was", addr, err)
		}
	}
}

// TestNewAddressWithoutScheme checks the hint for host:port addresses,
// which Go's URL parser rejects with "first path segment in URL cannot
// contain colon".
func TestNewAddressWithoutScheme(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8200", "localhost:8200", "coffer.example"} {
		_, err := New(addr)
		if err == nil {
			t.Fatalf("New(%q) succeeded", addr)
		}
		want := "it must start with http:// or https:// (like http://" + addr + ")"
		if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "first path segment") {
			t.Errorf("New(%q) = %v, want %q", addr, err, want)
		}
	}
}
