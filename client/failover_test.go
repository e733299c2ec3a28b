package client_test

// Failover between several endpoints, through real HTTP: replicas are the
// real Coffer handler (internal/server over internal/sys) on httptest
// servers, all on one shared in-memory store and each unsealed on its own
// with the same shares, as replicas on one etcd are. Beside them: a closed
// port, and servers that hang up or never answer.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// replica is one Coffer server on the shared store.
type replica struct {
	URL string
	Sys *sys.Sys

	mu     sync.Mutex
	counts map[string]int // "METHOD /path" -> requests received
}

func (r *replica) count(method, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[method+" "+path]
}

func (r *replica) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.counts {
		n += c
	}
	return n
}

// cluster is n replicas over one store, initialized through the first.
type cluster struct {
	Replicas  []*replica
	Shares    []string
	RootToken string
}

// startCluster starts n replicas; the first `unsealed` of them are
// unsealed, the others stay sealed.
func startCluster(t *testing.T, n, unsealed int) *cluster {
	t.Helper()
	ctx := testContext(t)
	store := inmem.New()
	cl := &cluster{}
	for range n {
		r := &replica{Sys: sys.New(barrier.New(store), nil), counts: map[string]int{}}
		h := server.New(r.Sys, server.Options{})
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			r.mu.Lock()
			r.counts[req.Method+" "+req.URL.Path]++
			r.mu.Unlock()
			h.ServeHTTP(w, req)
		}))
		t.Cleanup(ts.Close)
		t.Cleanup(r.Sys.Seal)
		r.URL = ts.URL
		cl.Replicas = append(cl.Replicas, r)
	}
	ini, err := cl.Replicas[0].Sys.Init(ctx, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	cl.Shares, cl.RootToken = ini.Shares, ini.RootToken
	for _, r := range cl.Replicas[:unsealed] {
		cl.unseal(t, r)
	}
	return cl
}

// unseal unseals one replica on its own, through its own address.
func (cl *cluster) unseal(t *testing.T, r *replica) {
	t.Helper()
	c := must[*client.Client](t, "New")(client.New(r.URL))
	for _, s := range cl.Shares[:2] {
		if _, err := c.Unseal(testContext(t), client.UnsealRequest{Share: s}); err != nil {
			t.Fatalf("unsealing %s: %v", r.URL, err)
		}
	}
}

// closedAddrs returns the URLs of n loopback ports that refuse
// connections. They are privileged ports: a port from the ephemeral range,
// freed after a listen, can be taken by the client's own outgoing socket,
// which then connects to itself instead of being refused.
func closedAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for _, port := range []int{1, 2, 3, 5, 7, 9, 11, 13, 17, 19, 47} {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			out = append(out, "http://"+addr)
			if len(out) == n {
				return out
			}
		}
	}
	t.Fatalf("fewer than %d local ports refuse connections", n)
	return nil
}

func closedAddr(t *testing.T) string { return closedAddrs(t, 1)[0] }

// hangUpServer reads each request's body completely and then closes the
// connection without answering: the request reached the server, and its
// outcome is unknown to the client.
func hangUpServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	}))
	t.Cleanup(ts.Close)
	return ts, &n
}

func newMulti(t *testing.T, token string, addrs []string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.NewEndpoints(addrs, append([]client.Option{client.WithToken(token)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFailoverFirstDown: the first endpoint refuses connections; the second
// serves an encryption, and a write too (nothing was sent to the first).
func TestFailoverFirstDown(t *testing.T) {
	t.Parallel()
	cl := startCluster(t, 1, 1)
	b := cl.Replicas[0]
	down := closedAddr(t)
	ctx := testContext(t)

	c := newMulti(t, cl.RootToken, []string{down, b.URL})
	if got := c.Address(); got != down {
		t.Fatalf("Address before any request = %s, want the first endpoint %s", got, down)
	}
	key := must[*client.Key](t, "CreateKey through a dead first endpoint")(c.CreateKey(ctx, client.CreateKeyRequest{}))
	if got := c.Address(); got != b.URL {
		t.Errorf("Address after failover = %s, want %s", got, b.URL)
	}
	c2 := newMulti(t, cl.RootToken, []string{down, b.URL})
	enc := must[*client.EncryptResponse](t, "Encrypt")(c2.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("p")}))
	dec := must[*client.DecryptResponse](t, "Decrypt")(c2.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext}))
	if string(dec.Plaintext) != "p" {
		t.Fatalf("Decrypt = %q", dec.Plaintext)
	}
	if n := b.count("POST", "/v1/keys"); n != 1 {
		t.Errorf("the live replica saw %d key creations, want 1", n)
	}
}

// TestFailoverSealed: the first replica is sealed (503 sealed); the second
// serves the encryption. A write answered 503 by the first is not sent to
// the second, but the next request starts at the second.
func TestFailoverSealed(t *testing.T) {
	t.Parallel()
	cl := startCluster(t, 2, 2)
	a, b := cl.Replicas[0], cl.Replicas[1]
	ctx := testContext(t)
	key := must[*client.Key](t, "CreateKey")(newMulti(t, cl.RootToken, []string{b.URL}).CreateKey(ctx, client.CreateKeyRequest{}))
	a.Sys.Seal()

	// No back-off: only stickiness keeps the client away from a.
	c := newMulti(t, cl.RootToken, []string{a.URL, b.URL}, client.WithFailoverBackoff(0))
	enc := must[*client.EncryptResponse](t, "Encrypt with the first replica sealed")(c.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("x")}))
	if enc.KeyID != key.ID {
		t.Fatalf("encrypted under %s", enc.KeyID)
	}
	if a.count("POST", "/v1/kms/encrypt") != 1 || b.count("POST", "/v1/kms/encrypt") != 1 {
		t.Errorf("encrypt requests: sealed %d, unsealed %d; want 1 and 1", a.count("POST", "/v1/kms/encrypt"), b.count("POST", "/v1/kms/encrypt"))
	}
	// Sticky: the next requests go to b first, a is not asked again.
	for range 3 {
		must[*client.EncryptResponse](t, "Encrypt")(c.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("x")}))
	}
	if n := a.count("POST", "/v1/kms/encrypt"); n != 1 {
		t.Errorf("the sealed replica got %d encrypt requests after the client moved away, want 1 in all", n)
	}

	// A write: a fresh client starts at a, which answers 503 sealed.
	w := newMulti(t, cl.RootToken, []string{a.URL, b.URL})
	_, err := w.RotateKey(ctx, key.ID)
	wantAPIError(t, "RotateKey on a sealed replica", err, http.StatusServiceUnavailable, "sealed")
	if n := b.count("POST", "/v1/keys/"+key.ID+"/rotate"); n != 0 {
		t.Fatalf("the write was sent to the other replica too (%d times)", n)
	}
	if got := w.Address(); got != b.URL {
		t.Errorf("after a 503 sealed the preferred endpoint is %s, want %s", got, b.URL)
	}
	must[*client.Key](t, "RotateKey again")(w.RotateKey(ctx, key.ID))
	if n := b.count("POST", "/v1/keys/"+key.ID+"/rotate"); n != 1 {
		t.Errorf("the second rotation reached the unsealed replica %d times, want 1", n)
	}

	// Ready is true while any endpoint is ready; Unseal and Seal refuse a
	// client of several replicas.
	if ready, err := c.Ready(ctx); err != nil || !ready {
		t.Errorf("Ready with one of two replicas sealed = %v, %v; want true", ready, err)
	}
	if _, err := c.Unseal(ctx, client.UnsealRequest{Share: cl.Shares[0]}); err == nil || !strings.Contains(err.Error(), "acts on one server") {
		t.Errorf("Unseal on a client of two endpoints: %v", err)
	}
	if err := c.Seal(ctx); err == nil || !strings.Contains(err.Error(), "acts on one server") {
		t.Errorf("Seal on a client of two endpoints: %v", err)
	}
	if n := a.count("POST", "/v1/sys/unseal") + b.count("POST", "/v1/sys/unseal") + a.count("POST", "/v1/sys/seal") + b.count("POST", "/v1/sys/seal"); n != 4 {
		t.Errorf("unseal/seal requests reached the replicas: %d, want only the 4 unseals of the set-up", n)
	}
	b.Sys.Seal()
	if ready, err := c.Ready(ctx); err != nil || ready {
		t.Errorf("Ready with both replicas sealed = %v, %v; want false, nil", ready, err)
	}
	_, err = c.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("x")})
	var fe *client.FailoverError
	if !errors.As(err, &fe) || len(fe.Attempts) != 2 {
		t.Fatalf("Encrypt with every replica sealed: %v, want a FailoverError of 2 attempts", err)
	}
	wantAPIError(t, "Encrypt with every replica sealed", err, http.StatusServiceUnavailable, "sealed")
}

// TestFailoverNoRepeatAfterSend: an endpoint that reads a request and hangs
// up leaves its outcome unknown. A write is not sent to the next endpoint;
// an encryption is; so is a write marked Idempotent.
func TestFailoverNoRepeatAfterSend(t *testing.T) {
	t.Parallel()
	cl := startCluster(t, 1, 1)
	b := cl.Replicas[0]
	hang, hangCount := hangUpServer(t)
	ctx := testContext(t)
	key := must[*client.Key](t, "CreateKey")(newMulti(t, cl.RootToken, []string{b.URL}).CreateKey(ctx, client.CreateKeyRequest{}))

	c := newMulti(t, cl.RootToken, []string{hang.URL, b.URL})
	_, err := c.CreateKey(ctx, client.CreateKeyRequest{Description: "once"})
	var fe *client.FailoverError
	if !errors.As(err, &fe) || !fe.MaybeApplied {
		t.Fatalf("CreateKey through a server that hung up: %v, want a FailoverError with MaybeApplied", err)
	}
	if !strings.Contains(err.Error(), "may have been applied") || !strings.Contains(err.Error(), b.URL) {
		t.Errorf("error does not say the write may have been applied and was not sent to %s: %v", b.URL, err)
	}
	if n := b.count("POST", "/v1/keys"); n != 1 { // the set-up's CreateKey only
		t.Fatalf("the second server got %d key creations, want 1 (the set-up's): the write was repeated", n)
	}
	if n := hangCount.Load(); n != 1 {
		t.Fatalf("the hanging server got %d requests, want 1", n)
	}

	// A policy put marked idempotent goes on.
	c = newMulti(t, cl.RootToken, []string{hang.URL, b.URL})
	if _, err := c.PutPolicy(client.Idempotent(ctx), "p", client.PutPolicyRequest{Document: keysUserPolicy}); err != nil {
		t.Fatalf("idempotent PutPolicy: %v", err)
	}
	if n := b.count("PUT", "/v1/policies/p"); n != 1 {
		t.Errorf("idempotent PutPolicy reached the second server %d times, want 1", n)
	}

	// An encryption is safe to repeat.
	c = newMulti(t, cl.RootToken, []string{hang.URL, b.URL})
	must[*client.EncryptResponse](t, "Encrypt through a server that hung up")(c.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("x")}))
	if n := b.count("POST", "/v1/kms/encrypt"); n != 1 {
		t.Errorf("the second server got %d encrypt requests, want 1", n)
	}
	if n := hangCount.Load(); n != 3 {
		t.Errorf("the hanging server got %d requests, want 3", n)
	}
}

// TestFailoverAllDown: every endpoint refuses connections; the error names
// each of them and is still a connection refused for errors.Is.
func TestFailoverAllDown(t *testing.T) {
	t.Parallel()
	addrs := closedAddrs(t, 3)
	c := newMulti(t, "t", addrs)
	_, err := c.Encrypt(testContext(t), client.EncryptRequest{KeyID: "k", Plaintext: []byte("x")})
	if err == nil {
		t.Fatal("Encrypt with every endpoint down succeeded")
	}
	for _, a := range addrs {
		if !strings.Contains(err.Error(), a) {
			t.Errorf("error does not name %s: %v", a, err)
		}
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("errors.Is(err, ECONNREFUSED) = false for %v", err)
	}
	// A write too: nothing was sent anywhere, so every endpoint is tried.
	_, err = c.CreateKey(testContext(t), client.CreateKeyRequest{})
	var fe *client.FailoverError
	if !errors.As(err, &fe) || len(fe.Attempts) != 3 || fe.MaybeApplied {
		t.Fatalf("CreateKey with every endpoint down: %v, want 3 attempts, not MaybeApplied", err)
	}
}

// TestFailoverAttemptTimeout: a replica that accepts the connection and
// never answers. With an attempt timeout an encryption moves on; a write
// that has its connection is not cut (it may be applied) and not repeated.
func TestFailoverAttemptTimeout(t *testing.T) {
	t.Parallel()
	cl := startCluster(t, 1, 1)
	b := cl.Replicas[0]
	release := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(stuck.Close)
	t.Cleanup(func() { close(release) })
	ctx := testContext(t)
	key := must[*client.Key](t, "CreateKey")(newMulti(t, cl.RootToken, []string{b.URL}).CreateKey(ctx, client.CreateKeyRequest{}))

	c := newMulti(t, cl.RootToken, []string{stuck.URL, b.URL}, client.WithAttemptTimeout(300*time.Millisecond))
	start := time.Now()
	must[*client.EncryptResponse](t, "Encrypt past a stuck replica")(c.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("x")}))
	t.Logf("encrypt past a stuck replica took %s (attempt timeout 300ms)", time.Since(start).Round(time.Millisecond))

	w := newMulti(t, cl.RootToken, []string{stuck.URL, b.URL}, client.WithAttemptTimeout(100*time.Millisecond))
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := w.CreateKey(wctx, client.CreateKeyRequest{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CreateKey to a stuck replica: %v, want the caller's deadline (the attempt timeout must not cut a sent write)", err)
	}
	if n := b.count("POST", "/v1/keys"); n != 1 {
		t.Fatalf("the write was repeated on the other replica (%d key creations there, want the set-up's 1)", n)
	}
}

// TestNewAddressList: a comma-separated list, and what is wrong with one.
func TestNewAddressList(t *testing.T) {
	c, err := client.New("http://a:1, https://b:2/coffer/")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Endpoints(), " "); got != "http://a:1 https://b:2/coffer" {
		t.Errorf("Endpoints = %s", got)
	}
	for addr, want := range map[string]string{
		"http://a:1,,http://b:2":   "address 2 of 3 is empty",
		"http://a:1,":              "address 2 of 2 is empty",
		"http://a:1,http://a:1/":   "listed twice",
		"http://a:1,b:2":           "must start with http://",
		"http://a:1,ftp://b":       "must start with http://",
		"http://a:1,http://b/?q=1": "query",
	} {
		_, err := client.New(addr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q) = %v, want an error containing %q", addr, err, want)
		}
	}
	const secret = "s3cr3t"
	for _, addr := range []string{
		"https://u:" + secret + ",x@a:1,https://b:2", // a comma in the password
		"https://a:1,https://u:" + secret + "@b:2",
		"https://a:1,https://" + secret + "@b:2/p,https://c",
	} {
		_, err := client.New(addr)
		if err == nil {
			t.Fatalf("New(%q) succeeded", addr)
		}
		if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "REDACTED") {
			t.Errorf("New(%q) error shows the credential or not where it was: %v", addr, err)
		}
	}
	if _, err := client.NewEndpoints([]string{"http://a:1", "https://u:" + secret + "@b"}); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("NewEndpoints with a credential: %v", err)
	}
}
