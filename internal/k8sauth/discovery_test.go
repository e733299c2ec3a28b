package k8sauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const discoToken = "disco-token-7f3a"

// fakeIssuer serves OIDC discovery like kube-apiserver: both documents
// need the bearer token discoToken unless anonymous is set.
type fakeIssuer struct {
	*httptest.Server
	anonymous bool
	jwksURI   string // default: the server's own /openid/v1/jwks
	doc       func(w http.ResponseWriter, r *http.Request) bool
	jwks      []byte
	mu        sync.Mutex
	auth      map[string]string // path -> Authorization header seen
}

func newFakeIssuer(t *testing.T, jwks []byte) *fakeIssuer {
	f := &fakeIssuer{jwks: jwks, auth: map[string]string{}}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.auth[r.URL.Path] = r.Header.Get("Authorization")
		f.mu.Unlock()
		if !f.anonymous && r.Header.Get("Authorization") != "Bearer disco-token-7f3a" {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"kind": "Status", "message": "Unauthorized"})
			return
		}
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			if f.doc != nil && f.doc(w, r) {
				return
			}
			uri := f.jwksURI
			if uri == "" {
				uri = f.URL + "/openid/v1/jwks"
			}
			writeJSON(w, http.StatusOK, map[string]any{
				"issuer": testIssuer, "jwks_uri": uri,
				"response_types_supported": []string{"id_token"}, "id_token_signing_alg_values_supported": []string{"RS256"},
			})
		case "/openid/v1/jwks":
			// Like kube-apiserver, which answers 406 otherwise.
			if !strings.Contains(r.Header.Get("Accept"), "application/jwk-set+json") {
				http.Error(w, "406: Not Acceptable", http.StatusNotAcceptable)
				return
			}
			w.Header().Set("Content-Type", "application/jwk-set+json")
			w.Write(f.jwks)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeIssuer) authSeen(path string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.auth[path]
	return a, ok
}

func TestDiscover(t *testing.T) {
	k := getKeys(t)
	f := newFakeIssuer(t, k.jwks)
	issuer, jwks, err := Discover(context.Background(), DiscoveryConfig{URL: f.URL + "/", CAPEM: serverCA(f.Server), BearerToken: discoToken})
	if err != nil {
		t.Fatal(err)
	}
	if issuer != testIssuer || string(jwks) != string(k.jwks) {
		t.Fatalf("Discover = %q, %s", issuer, jwks)
	}
	if a, _ := f.authSeen("/openid/v1/jwks"); a != "Bearer disco-token-7f3a" {
		t.Errorf("jwks fetched with Authorization %q", a)
	}
	// What Discover returns makes a working verifier.
	v, err := NewJWKSVerifier(issuer, jwks, func() time.Time { return testNow })
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), mint(t, k.rsa1, jose.RS256, "rsa1", goodClaims()), testAudience)
	if err != nil || id.Namespace != "team-a" {
		t.Fatalf("Verify: %+v, %v", id, err)
	}
}

func TestDiscoverJWKSElsewhere(t *testing.T) {
	k := getKeys(t)
	keysHost := newFakeIssuer(t, k.jwks)
	keysHost.anonymous = true
	f := newFakeIssuer(t, k.jwks)
	f.jwksURI = keysHost.URL + "/openid/v1/jwks"
	ca := append(serverCA(f.Server), serverCA(keysHost.Server)...)
	issuer, _, err := Discover(context.Background(), DiscoveryConfig{URL: f.URL, CAPEM: ca, BearerToken: discoToken})
	if err != nil || issuer != testIssuer {
		t.Fatalf("Discover = %q, %v", issuer, err)
	}
	if a, ok := keysHost.authSeen("/openid/v1/jwks"); !ok || a != "" {
		t.Errorf("jwks_uri on another origin: fetched %v with Authorization %q; want fetched without", ok, a)
	}

	// JWKSURL replaces an unreachable jwks_uri (as kube-apiserver's
	// advertise address can be).
	f.jwksURI = "https://192.0.2.1:1/openid/v1/jwks"
	issuer, jwks, err := Discover(context.Background(), DiscoveryConfig{URL: f.URL, CAPEM: serverCA(f.Server), BearerToken: discoToken, JWKSURL: f.URL + "/openid/v1/jwks"})
	if err != nil || issuer != testIssuer || len(jwks) == 0 {
		t.Fatalf("Discover with JWKSURL = %q, %v", issuer, err)
	}
}

func TestDiscoverFailures(t *testing.T) {
	k := getKeys(t)
	privSet, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.rsa1, KeyID: "p"}}})
	cases := []struct {
		name    string
		setup   func(f *fakeIssuer, cfg *DiscoveryConfig)
		want    error // nil: any error
		reason  string
		timeout bool
	}{
		{name: "no bearer token", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) { cfg.BearerToken = "" },
			want: ErrUnavailable, reason: "401 Unauthorized: Unauthorized (discovery needs a BearerToken"},
		{name: "500", want: ErrUnavailable, reason: "500 Internal Server Error", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			f.doc = func(w http.ResponseWriter, r *http.Request) bool {
				w.WriteHeader(http.StatusInternalServerError)
				return true
			}
		}},
		{name: "redirect not followed", want: ErrUnavailable, reason: "302", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			f.doc = func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Location", "https://example.invalid/")
				w.WriteHeader(http.StatusFound)
				return true
			}
		}},
		{name: "oversized document", want: ErrUnavailable, reason: "larger than 1048576 bytes", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			f.doc = func(w http.ResponseWriter, r *http.Request) bool {
				w.Write([]byte(`{"issuer":"` + strings.Repeat("i", maxResponseSize) + `"}`))
				return true
			}
		}},
		{name: "oversized JWKS", want: ErrUnavailable, reason: "larger than 1048576 bytes", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			f.jwks = []byte(`{"keys":[` + strings.Repeat(" ", maxResponseSize) + `]}`)
		}},
		{name: "timeout", timeout: true, want: ErrUnavailable, reason: "deadline exceeded", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			cfg.Timeout = 200 * time.Millisecond
			f.doc = func(w http.ResponseWriter, r *http.Request) bool { <-r.Context().Done(); return true }
		}},
		{name: "not JSON", reason: "is not an OpenID configuration document", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			f.doc = func(w http.ResponseWriter, r *http.Request) bool { w.Write([]byte("<html>")); return true }
		}},
		{name: "no issuer", reason: "has no issuer", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			f.doc = func(w http.ResponseWriter, r *http.Request) bool {
				writeJSON(w, 200, map[string]string{"jwks_uri": f.URL + "/openid/v1/jwks"})
				return true
			}
		}},
		{name: "no jwks_uri", reason: "has no jwks_uri", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			f.doc = func(w http.ResponseWriter, r *http.Request) bool {
				writeJSON(w, 200, map[string]string{"issuer": testIssuer})
				return true
			}
		}},
		{name: "http jwks_uri", reason: "must be an absolute https:// URL", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			f.jwksURI = "http://" + strings.TrimPrefix(f.URL, "https://") + "/openid/v1/jwks"
		}},
		{name: "private key in the JWKS", reason: "is a private key", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) { f.jwks = privSet }},
		{name: "empty JWKS", reason: "JWKS has no keys", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) { f.jwks = []byte(`{"keys":[]}`) }},
		{name: "wrong CA", want: ErrUnavailable, reason: "certificate", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			cfg.CAPEM = otherCA(t)
		}},
		{name: "http URL", reason: "must be an absolute https:// URL", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) {
			cfg.URL = "http://" + strings.TrimPrefix(f.URL, "https://")
		}},
		{name: "CA and client", reason: "not both", setup: func(f *fakeIssuer, cfg *DiscoveryConfig) { cfg.HTTPClient = f.Client() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIssuer(t, k.jwks)
			cfg := DiscoveryConfig{URL: f.URL, CAPEM: serverCA(f.Server), BearerToken: discoToken}
			tc.setup(f, &cfg)
			start := time.Now()
			issuer, jwks, err := Discover(context.Background(), cfg)
			if err == nil {
				t.Fatalf("Discover = %q, %d bytes; want an error", issuer, len(jwks))
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v does not wrap %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
			if strings.Contains(err.Error(), discoToken) {
				t.Errorf("error %q shows the bearer token", err)
			}
			if d := time.Since(start); tc.timeout && d > 3*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}
