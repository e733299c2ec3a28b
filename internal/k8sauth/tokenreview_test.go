package k8sauth

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	authv1 "k8s.io/api/authentication/v1"
)

const reviewerToken = "reviewer-secret"

// serverCA returns the PEM of an httptest TLS server's certificate, which
// is self-signed and so its own CA.
func serverCA(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// fakeAPIServer answers TokenReviews with answer(review, w); it checks
// the request's shape first and counts the requests.
type fakeAPIServer struct {
	*httptest.Server
	requests atomic.Int32
}

func newFakeAPIServer(t *testing.T, answer func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request)) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			t.Errorf("request %s %s", r.Method, r.URL.Path)
			http.NotFound(w, r)
			return
		}
		if got := r.Header.Get("Authorization"); got != "Bearer "+reviewerToken {
			t.Errorf("Authorization %q", got)
		}
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type %q", got)
		}
		var rev authv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&rev); err != nil {
			t.Errorf("decoding the review: %v", err)
		}
		if rev.Kind != "TokenReview" || rev.APIVersion != "authentication.k8s.io/v1" {
			t.Errorf("review is %s %s", rev.APIVersion, rev.Kind)
		}
		if !slices.Equal(rev.Spec.Audiences, []string{testAudience}) {
			t.Errorf("spec.audiences %q", rev.Spec.Audiences)
		}
		answer(t, &rev, w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// authenticated answers like kube-apiserver for a bound token of
// team-a/app in pod app-0.
func authenticated(audiences ...string) func(*testing.T, *authv1.TokenReview, http.ResponseWriter, *http.Request) {
	return func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
		rev.Status = authv1.TokenReviewStatus{
			Authenticated: true,
			User: authv1.UserInfo{
				Username: "system:serviceaccount:team-a:app",
				UID:      "sa-uid-1",
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"},
				Extra: map[string]authv1.ExtraValue{
					extraPodName: {"app-0"},
					extraPodUID:  {"pod-uid-1"},
				},
			},
			Audiences: audiences,
		}
		rev.Spec = authv1.TokenReviewSpec{}
		writeJSON(w, http.StatusCreated, rev)
	}
}

func newTestTRVerifier(t *testing.T, srv *httptest.Server, timeout time.Duration) *TokenReviewVerifier {
	t.Helper()
	v, err := NewTokenReviewVerifier(TokenReviewConfig{APIServer: srv.URL, CAPEM: serverCA(srv), ReviewerToken: reviewerToken, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	v.now = func() time.Time { return testNow } // the time the test tokens are minted for
	return v
}

func TestTokenReviewVerify(t *testing.T) {
	k := getKeys(t)
	// The fake apiserver does not check signatures; the token is a real
	// JWT only so that IssuedAt/Expiry can be read from it.
	token := mint(t, k.rsa1, jose.RS256, "rsa1", goodClaims())
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })

	cases := []struct {
		name    string
		answer  func(*testing.T, *authv1.TokenReview, http.ResponseWriter, *http.Request)
		timeout time.Duration
		want    error  // nil: accepted
		reason  string // part of the message
	}{
		{name: "authenticated", answer: authenticated(testAudience)},
		{name: "unauthenticated, reason sanitised", want: ErrInvalidToken,
			reason: "the apiserver rejected the token: [invalid bearer token, token [token] has been invalidated]",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				rev.Status = authv1.TokenReviewStatus{Error: "[invalid bearer token, token " + rev.Spec.Token + " has been invalidated]\n"}
				writeJSON(w, http.StatusCreated, rev)
			}},
		{name: "unauthenticated, long reason truncated", want: ErrInvalidToken, reason: strings.Repeat("x", 100) + "...",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				rev.Status = authv1.TokenReviewStatus{Error: strings.Repeat("x", 5000)}
				writeJSON(w, http.StatusCreated, rev)
			}},
		{name: "unauthenticated without a reason", want: ErrInvalidToken, reason: "rejected the token: no reason given",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				writeJSON(w, http.StatusCreated, rev)
			}},
		{name: "wrong audience in status", answer: authenticated("other"), want: ErrInvalidToken,
			reason: `audience: the apiserver confirmed ["other"], want "coffer"`},
		{name: "no audience in status (the apiserver's own)", answer: authenticated(), want: ErrInvalidToken,
			reason: `audience: the apiserver confirmed [], want "coffer"`},
		{name: "not a service account", want: ErrInvalidToken, reason: `not a service-account token: the apiserver authenticated user "admin"`,
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				rev.Status = authv1.TokenReviewStatus{Authenticated: true, User: authv1.UserInfo{Username: "admin"}, Audiences: []string{testAudience}}
				writeJSON(w, http.StatusCreated, rev)
			}},
		{name: "500", want: ErrUnavailable, reason: "answered 500 Internal Server Error: etcd is down",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				writeJSON(w, http.StatusInternalServerError, map[string]any{"kind": "Status", "message": "etcd is down " + rev.Spec.Token})
			}},
		{name: "403 for the reviewer", want: ErrUnavailable, reason: "answered 403 Forbidden",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				writeJSON(w, http.StatusForbidden, map[string]any{"kind": "Status", "message": `tokenreviews.authentication.k8s.io is forbidden`})
			}},
		{name: "redirect is not followed", want: ErrUnavailable, reason: "answered 307",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://example.invalid/steal", http.StatusTemporaryRedirect)
			}},
		{name: "timeout", timeout: 200 * time.Millisecond, want: ErrUnavailable, reason: "no TokenReview answer within 200ms",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-block:
				}
			}},
		{name: "oversized body", want: ErrUnavailable, reason: "larger than 1048576 bytes",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusCreated)
				w.Write([]byte(`{"status":{"error":"`))
				w.Write([]byte(strings.Repeat("a", maxResponseSize+10)))
				w.Write([]byte(`"}}`))
			}},
		{name: "not JSON", want: ErrUnavailable, reason: "is not a TokenReview",
			answer: func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusCreated)
				w.Write([]byte("<html>proxy</html>"))
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeAPIServer(t, tc.answer)
			v := newTestTRVerifier(t, srv.Server, tc.timeout)
			start := time.Now()
			id, err := v.Verify(context.Background(), token, testAudience)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Verify took %s", d)
			}
			if srv.requests.Load() != 1 {
				t.Errorf("%d requests, want 1", srv.requests.Load())
			}
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				want := Identity{
					Issuer: testIssuer, Namespace: "team-a", ServiceAccount: "app", ServiceAccountUID: "sa-uid-1",
					PodName: "app-0", PodUID: "pod-uid-1", Audiences: []string{testAudience},
					IssuedAt: testNow.Add(-time.Minute), Expiry: testNow.Add(10 * time.Minute),
				}
				if !identityEqual(id, want) {
					t.Errorf("identity\n got %+v\nwant %+v", id, want)
				}
				return
			}
			checkRefusal(t, err, tc.want, tc.reason, token)
			other := ErrUnavailable
			if tc.want == ErrUnavailable {
				other = ErrInvalidToken
			}
			if errors.Is(err, other) {
				t.Errorf("error %v also wraps %v", err, other)
			}
		})
	}
}

// TestTokenReviewExpiredRefusal: a token the apiserver refuses whose exp
// has passed (beyond the leeway) is ErrExpired as well as
// ErrInvalidToken, so the AWS door answers ExpiredTokenException and the
// pod reads its projected token again; a refused token that has not
// expired, or one inside the leeway, is not.
func TestTokenReviewExpiredRefusal(t *testing.T) {
	k := getKeys(t)
	refuse := func(t *testing.T, rev *authv1.TokenReview, w http.ResponseWriter, r *http.Request) {
		rev.Status = authv1.TokenReviewStatus{Error: "[invalid bearer token, service account token has expired]"}
		writeJSON(w, http.StatusCreated, rev)
	}
	for _, tc := range []struct {
		name    string
		exp     time.Time
		expired bool
	}{
		{"expired", testNow.Add(-Leeway - time.Second), true},
		{"inside the leeway", testNow.Add(-Leeway + time.Second), false},
		{"not expired", testNow.Add(time.Minute), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["exp"] = numeric(tc.exp) }))
			v := newTestTRVerifier(t, newFakeAPIServer(t, refuse).Server, 0)
			_, err := v.Verify(context.Background(), token, testAudience)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err = %v, want ErrInvalidToken", err)
			}
			if errors.Is(err, ErrExpired) != tc.expired {
				t.Fatalf("errors.Is(%v, ErrExpired) = %v, want %v", err, !tc.expired, tc.expired)
			}
			if strings.Contains(err.Error(), token) {
				t.Fatal("the error quotes the token")
			}
		})
	}
	// Accepted by the apiserver, the token's exp is not second-guessed.
	token := mint(t, k.rsa1, jose.RS256, "rsa1", with(func(c map[string]any) { c["exp"] = numeric(testNow.Add(-time.Hour)) }))
	v := newTestTRVerifier(t, newFakeAPIServer(t, authenticated(testAudience)).Server, 0)
	if _, err := v.Verify(context.Background(), token, testAudience); err != nil {
		t.Fatalf("a token the apiserver accepted: %v", err)
	}
}

func TestTokenReviewLocalChecks(t *testing.T) {
	srv := newFakeAPIServer(t, authenticated(testAudience))
	v := newTestTRVerifier(t, srv.Server, 0)
	token := mint(t, getKeys(t).rsa1, jose.RS256, "rsa1", goodClaims())
	for _, tc := range []struct{ name, token, reason string }{
		{"malformed", "not-a-jwt", "malformed"},
		{"alg none", b64JSON(map[string]string{"alg": "none"}) + "." + b64JSON(goodClaims()) + ".", `"none" is not allowed`},
		{"oversized", strings.Repeat("a", MaxTokenSize+1), "more than the 16384 allowed"},
	} {
		_, err := v.Verify(context.Background(), tc.token, testAudience)
		checkRefusal(t, err, ErrInvalidToken, tc.reason, tc.token)
	}
	if _, err := v.Verify(context.Background(), token, ""); err == nil || errors.Is(err, ErrInvalidToken) {
		t.Errorf("empty audience: %v", err)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d requests for tokens refused locally", n)
	}
}

func TestTokenReviewUnreachable(t *testing.T) {
	token := mint(t, getKeys(t).rsa1, jose.RS256, "rsa1", goodClaims())
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	v := newTestTRVerifier(t, srv, time.Second)
	srv.Close()
	_, err := v.Verify(context.Background(), token, testAudience)
	checkRefusal(t, err, ErrUnavailable, "TokenReview", token)

	// A server whose certificate the CA does not vouch for.
	wrong := newFakeAPIServer(t, authenticated(testAudience))
	v, err = NewTokenReviewVerifier(TokenReviewConfig{APIServer: wrong.URL, CAPEM: otherCA(t), ReviewerToken: reviewerToken})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), token, testAudience)
	checkRefusal(t, err, ErrUnavailable, "certificate", token)
	if wrong.requests.Load() != 0 {
		t.Error("the token reached a server the CA does not vouch for")
	}

	// The caller's context is cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = newTestTRVerifier(t, wrong.Server, 0).Verify(ctx, token, testAudience)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestNewTokenReviewVerifierRejects(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	for _, tc := range []struct {
		name   string
		cfg    TokenReviewConfig
		reason string
	}{
		{"http URL", TokenReviewConfig{APIServer: "http://127.0.0.1:6443", ReviewerToken: "x"}, "must be an absolute https:// URL"},
		{"no URL", TokenReviewConfig{ReviewerToken: "x"}, "https://"},
		{"URL with a query", TokenReviewConfig{APIServer: srv.URL + "?x=1", ReviewerToken: "x"}, "query"},
		{"no reviewer token", TokenReviewConfig{APIServer: srv.URL}, "ReviewerToken"},
		{"reviewer token with a newline", TokenReviewConfig{APIServer: srv.URL, ReviewerToken: "x\nHost: evil"}, "line break"},
		{"junk CA", TokenReviewConfig{APIServer: srv.URL, ReviewerToken: "x", CAPEM: []byte("junk")}, "no PEM certificate"},
		{"CA and client", TokenReviewConfig{APIServer: srv.URL, ReviewerToken: "x", CAPEM: serverCA(srv), HTTPClient: srv.Client()}, "not both"},
		{"negative timeout", TokenReviewConfig{APIServer: srv.URL, ReviewerToken: "x", Timeout: -time.Second}, "negative"},
	} {
		if _, err := NewTokenReviewVerifier(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.reason)
		}
	}
	// A custom client works (and redirects stay off).
	v, err := NewTokenReviewVerifier(TokenReviewConfig{APIServer: srv.URL, ReviewerToken: "x", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if v.client.CheckRedirect == nil || srv.Client().CheckRedirect != nil {
		t.Error("the custom client's redirect policy was not overridden on a copy")
	}
}
