package client

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestKubernetesLoginRefresh: the client logs in lazily, reuses the token
// until two thirds of its life have passed, then logs in again with the
// token file's current content; a 401 forces one new login and a retry.
func TestKubernetesLoginRefresh(t *testing.T) {
	var mu sync.Mutex
	var logins []string // JWTs presented
	current := ""
	serverNow := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/auth/kubernetes/login", func(w http.ResponseWriter, r *http.Request) {
		var req KubernetesLoginRequest
		json.NewDecoder(r.Body).Decode(&req)
		if r.Header.Get("Authorization") != "" {
			t.Errorf("a login carried a credential: %q", r.Header.Get("Authorization"))
		}
		mu.Lock()
		logins = append(logins, req.JWT)
		current = "cft_token" + strconv.Itoa(len(logins))
		exp := serverNow.Add(time.Minute)
		resp := CreateTokenResponse{Token: current, TokenInfo: TokenInfo{CreatedAt: serverNow, ExpiresAt: &exp, Role: req.Role}}
		mu.Unlock()
		json.NewEncoder(w).Encode(resp)
	})
	mux.HandleFunc("GET /v1/keys", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ok := r.Header.Get("Authorization") == "Bearer "+current
		mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"code":"unauthenticated","message":"the token is unknown or was revoked"}}`))
			return
		}
		w.Write([]byte(`{"keys":[]}`))
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()

	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("jwt-1\n"), 0o600)
	c, err := New(ts.URL, WithKubernetesLogin("app", file, ""))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	c.session.now = func() time.Time { return now }
	ctx := t.Context()
	list := func(want int) {
		t.Helper()
		if _, err := c.ListKeys(ctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(logins) != want {
			t.Fatalf("%d logins, want %d (%v)", len(logins), want, logins)
		}
	}
	list(1)
	now = now.Add(30 * time.Second)
	list(1) // half its life: reused
	os.WriteFile(file, []byte("jwt-2\n"), 0o600)
	now = now.Add(11 * time.Second)
	list(2) // past two thirds: a new login with the rotated file
	if logins[1] != "jwt-2" {
		t.Fatalf("second login presented %q, want the file's new content", logins[1])
	}
	// The server forgets the token: one new login and a retry.
	mu.Lock()
	current = "cft_revoked"
	mu.Unlock()
	list(3)
}

// TestAccessKeyBasicAuth: an access key travels as HTTP Basic, and
// WithRole with it assumes the role (Basic on the assume-role call only).
func TestAccessKeyBasicAuth(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path == "/v1/auth/assume-role" {
			exp := time.Now().Add(time.Hour)
			json.NewEncoder(w).Encode(CreateTokenResponse{Token: "cft_role", TokenInfo: TokenInfo{CreatedAt: time.Now(), ExpiresAt: &exp}})
			return
		}
		w.Write([]byte(`{"keys":[]}`))
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	ctx := t.Context()
	c, _ := New(ts.URL, WithAccessKey("cfak_ID", "cfsk_SECRET"))
	c.ListKeys(ctx)
	r, _ := New(ts.URL, WithAccessKey("cfak_ID", "cfsk_SECRET"), WithRole("ci"))
	r.ListKeys(ctx)
	basic := "Basic Y2Zha19JRDpjZnNrX1NFQ1JFVA==" // cfak_ID:cfsk_SECRET
	want := []string{"/v1/keys " + basic, "/v1/auth/assume-role " + basic, "/v1/keys Bearer cft_role"}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(want) {
		t.Fatalf("requests %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, seen[i], want[i])
		}
	}
	// AuthorizationHeader gives what those requests carried.
	for _, tc := range []struct {
		c    *Client
		want string
	}{{c, basic}, {r, "Bearer cft_role"}} {
		if got, err := tc.c.AuthorizationHeader(ctx); err != nil || got != tc.want {
			t.Errorf("AuthorizationHeader: %q, %v; want %q", got, err, tc.want)
		}
	}
	if _, err := New(ts.URL, WithRole("ci")); err == nil {
		t.Error("WithRole without any credential was accepted")
	}
}

// memCache is a RoleTokenCache in memory.
type memCache struct {
	token            string
	created, expires time.Time
	stores           int
}

func (m *memCache) Load() (string, time.Time, time.Time, bool) {
	return m.token, m.created, m.expires, m.token != ""
}

func (m *memCache) Store(tok string, created, expires time.Time) {
	m.token, m.created, m.expires = tok, created, expires
	m.stores++
}

// TestRoleTokenCache: a role session starts from a cached token while it
// is fresh, logs in (and stores) when the cached one is stale, and logs in
// again when the server refuses the cached one.
func TestRoleTokenCache(t *testing.T) {
	var logins, refused int
	var mu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/v1/auth/assume-role" {
			logins++
			now := time.Now()
			exp := now.Add(time.Hour)
			json.NewEncoder(w).Encode(CreateTokenResponse{Token: "cft_new", TokenInfo: TokenInfo{CreatedAt: now, ExpiresAt: &exp}})
			return
		}
		if r.Header.Get("Authorization") == "Bearer cft_revoked" {
			refused++
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"code":"unauthenticated","message":"the token is unknown or was revoked"}}`))
			return
		}
		w.Write([]byte(`{"keys":[]}`))
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	ctx := t.Context()
	newClient := func(cache RoleTokenCache) *Client {
		c, err := New(ts.URL, WithAccessKey("cfak_ID", "cfsk_SECRET"), WithRole("ci"), WithRoleTokenCache(cache))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now()

	// A fresh cached token is used: no login.
	fresh := &memCache{token: "cft_cached", created: now.Add(-time.Minute), expires: now.Add(time.Hour)}
	if _, err := newClient(fresh).ListKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if logins != 0 {
		t.Fatalf("%d logins with a fresh cached token, want 0", logins)
	}

	// A token past two thirds of its life is replaced, and the new one
	// stored.
	stale := &memCache{token: "cft_old", created: now.Add(-50 * time.Minute), expires: now.Add(10 * time.Minute)}
	if _, err := newClient(stale).ListKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if logins != 1 || stale.token != "cft_new" || stale.stores != 1 {
		t.Fatalf("stale cache: %d logins, cache %q stored %d times", logins, stale.token, stale.stores)
	}

	// A cached token the server refuses is replaced by a login.
	revoked := &memCache{token: "cft_revoked", created: now, expires: now.Add(time.Hour)}
	if _, err := newClient(revoked).ListKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if refused != 1 || logins != 2 || revoked.token != "cft_new" {
		t.Fatalf("revoked cache: %d refused, %d logins, cache %q", refused, logins, revoked.token)
	}
}
