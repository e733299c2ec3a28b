package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

const waitPath = "/v1/secrets/wait"

var ctx = context.Background()

// waitCall is the outcome of a wait sent in the background.
type waitCall struct {
	status int
	raw    []byte
	took   time.Duration
}

// waitAsync sends a wait in the background.
func waitAsync(e *iamEnv, token string, req client.SecretWaitRequest) <-chan waitCall {
	ch := make(chan waitCall, 1)
	go func() {
		start := time.Now()
		b, _ := json.Marshal(req)
		hreq, _ := http.NewRequest("POST", e.url+waitPath, strings.NewReader(string(b)))
		hreq.Header = bearer(token)
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			ch <- waitCall{status: -1, raw: []byte(err.Error()), took: time.Since(start)}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		ch <- waitCall{status: resp.StatusCode, raw: raw, took: time.Since(start)}
	}()
	return ch
}

// recv returns the background wait's outcome, failing after within.
func recv(t *testing.T, ch <-chan waitCall, within time.Duration) waitCall {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(within):
		t.Fatalf("the wait did not answer within %s", within)
	}
	return waitCall{}
}

// pending fails unless the background wait is still open after a moment.
func pending(t *testing.T, ch <-chan waitCall) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("the wait answered before any change: %d %s", c.status, c.raw)
	case <-time.After(150 * time.Millisecond):
	}
}

func TestSecretWaitAPI(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/secrets/data/team-a/db", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "1"}}, nil)
	e.must("POST", "/v1/secrets/data/team-b/hidden", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "1"}}, nil)

	// Differs at once.
	var res client.SecretWaitResult
	e.must("POST", waitPath, e.root, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 0, "team-a/new": 0}}, &res)
	if !reflect.DeepEqual(res, client.SecretWaitResult{Changed: []client.SecretChange{{Name: "team-a/db", CurrentVersion: 1}}, Denied: []string{}}) {
		t.Fatalf("answer %+v", res)
	}
	// Nothing changes within the wait: both lists empty, after the wait.
	start := time.Now()
	st, raw := e.call("POST", waitPath, e.root, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 1}, Wait: "300ms"})
	if st != 200 || string(raw) != `{"changed":[],"denied":[]}`+"\n" || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("timed-out wait: %d %s after %s", st, raw, time.Since(start))
	}
	// A blocked wait answers as soon as a new version is written.
	ch := waitAsync(e, e.root, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 1, "team-a/new": 0}, Wait: "30s"})
	pending(t, ch)
	e.must("POST", "/v1/secrets/data/team-a/db", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "2"}}, nil)
	c := recv(t, ch, 5*time.Second)
	if c.status != 200 || !strings.Contains(string(c.raw), `"changed":[{"name":"team-a/db","current_version":2}]`) {
		t.Fatalf("woken wait: %d %s", c.status, c.raw)
	}
	// A deletion reports version 0 and deleted.
	ch = waitAsync(e, e.root, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 2}})
	pending(t, ch)
	e.must("POST", "/v1/secrets/delete/team-a/db", e.root, client.SecretDeleteRequest{}, nil)
	if c := recv(t, ch, 5*time.Second); c.status != 200 || !strings.Contains(string(c.raw), `{"name":"team-a/db","current_version":0,"deleted":true}`) {
		t.Fatalf("deleted: %d %s", c.status, c.raw)
	}
	e.must("POST", "/v1/secrets/undelete/team-a/db", e.root, nil, nil)

	// The record: one per call, naming every secret asked for.
	rec, _ := e.rec.last("secret:List")
	if rec.Outcome != "ok" || len(rec.Items) != 1 || rec.Items[0].Resource != "secret/team-a/db" || !strings.Contains(rec.Detail, "secrets=1 denied=0 changed=1") {
		t.Fatalf("record: outcome %s items %+v detail %q", rec.Outcome, rec.Items, rec.Detail)
	}
}

// TestSecretWaitAuthorizesEachName: names the caller may not list are
// answered in denied, at once, whether they exist or not, without a
// version; a caller with no secret:List at all cannot wait.
func TestSecretWaitAuthorizesEachName(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/secrets/data/team-a/db", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "1"}}, nil)
	e.must("POST", "/v1/secrets/data/team-b/hidden", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "1"}}, nil)
	e.must("POST", "/v1/secrets/data/team-a/private/x", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "1"}}, nil)
	tok := e.policyToken("team-a", "statements:\n  - effect: allow\n    actions: [secret:List]\n    resources: [\"secret/team-a/*\"]\n"+
		"  - effect: deny\n    actions: [secret:List]\n    resources: [\"secret/team-a/private/*\"]\n")
	none := e.policyToken("reader", "statements:\n  - effect: allow\n    actions: [secret:Read]\n    resources: [\"secret/*\"]\n")

	for _, hidden := range []string{"team-b/hidden", "team-b/missing", "team-a/private/x"} {
		start := time.Now()
		st, raw := e.call("POST", waitPath, tok, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 1, hidden: 0}, Wait: "30s"})
		want := `{"changed":[],"denied":["` + hidden + `"]}` + "\n"
		if st != 200 || string(raw) != want {
			t.Fatalf("%s: %d %s, want %s", hidden, st, raw, want)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: a denied name did not answer at once", hidden)
		}
		rec, _ := e.rec.last("secret:List")
		if len(rec.Items) != 2 || rec.Items[0].Outcome != "error" || rec.Items[0].ErrorCode != "permission_denied" || rec.Items[0].Resource != "secret/"+hidden ||
			rec.Items[1].Resource != "secret/team-a/db" || rec.Items[1].Outcome != "ok" {
			t.Fatalf("%s: record items %+v", hidden, rec.Items)
		}
	}
	// What already differs among the permitted names comes with denied.
	st, raw := e.call("POST", waitPath, tok, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 0, "team-b/hidden": 0}})
	if st != 200 || string(raw) != `{"changed":[{"name":"team-a/db","current_version":1}],"denied":["team-b/hidden"]}`+"\n" {
		t.Fatalf("permitted change with a denied name: %d %s", st, raw)
	}
	// Permitted names alone are waited on.
	ch := waitAsync(e, tok, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 1}})
	pending(t, ch)
	e.must("POST", "/v1/secrets/data/team-a/db", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "2"}}, nil)
	if c := recv(t, ch, 5*time.Second); c.status != 200 || !strings.Contains(string(c.raw), `"current_version":2`) {
		t.Fatalf("permitted wait: %d %s", c.status, c.raw)
	}
	// A policy changed during the wait: the changed secret it may no
	// longer list is answered as denied, without its version.
	ch = waitAsync(e, tok, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 2}})
	pending(t, ch)
	e.must("PUT", "/v1/policies/team-a", e.root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [secret:List]\n    resources: [\"secret/team-b/*\"]\n"}, nil)
	e.must("POST", "/v1/secrets/data/team-a/db", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "3"}}, nil)
	if c := recv(t, ch, 5*time.Second); c.status != 200 || string(c.raw) != `{"changed":[],"denied":["team-a/db"]}`+"\n" {
		t.Fatalf("after the policy changed: %d %s", c.status, c.raw)
	}
	// No secret:List anywhere: refused before any name is looked at.
	e.wantErr("POST", waitPath, none, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 1}}, 403, "permission_denied")
	e.wantErr("POST", waitPath, "", client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 1}}, 401, "unauthenticated")
}

func TestSecretWaitBadInput(t *testing.T) {
	e := newIAMEnv(t, nil)
	many := map[string]uint32{}
	for i := range 1001 {
		many[fmt.Sprintf("app/s%d", i)] = 0
	}
	for _, c := range []struct {
		name string
		body any
		msg  string
	}{
		{"too many", client.SecretWaitRequest{Secrets: many}, "1 to 1000 secrets"},
		{"none", client.SecretWaitRequest{Secrets: map[string]uint32{}}, "1 to 1000 secrets"},
		{"absent", map[string]any{"wait": "1s"}, "1 to 1000 secrets"},
		{"long wait", client.SecretWaitRequest{Secrets: map[string]uint32{"a": 0}, Wait: "6m"}, "up to 5m"},
		{"bad wait", client.SecretWaitRequest{Secrets: map[string]uint32{"a": 0}, Wait: "soon"}, "up to 5m"},
		{"negative wait", client.SecretWaitRequest{Secrets: map[string]uint32{"a": 0}, Wait: "-1s"}, "up to 5m"},
		{"bad name", client.SecretWaitRequest{Secrets: map[string]uint32{"a": 0, "../b": 0}}, "segment"},
		{"unknown field", map[string]any{"secrets": map[string]uint32{"a": 0}, "watch": true}, "unknown field"},
		{"negative version", map[string]any{"secrets": map[string]int{"a": -1}}, "secrets"},
	} {
		raw := e.wantErr("POST", waitPath, e.root, c.body, 400, "invalid_request")
		if !strings.Contains(raw, c.msg) {
			t.Fatalf("%s: %s does not say %q", c.name, raw, c.msg)
		}
	}
	// 1000 names are allowed (more than the members of other request
	// objects); the record lists 64 of them, the changed one first.
	delete(many, "app/s0")
	many["app/s999"] = 1 // missing: it changed
	if st, raw := e.call("POST", waitPath, e.root, client.SecretWaitRequest{Secrets: many, Wait: "5s"}); st != 200 || !strings.Contains(string(raw), "app/s999") {
		t.Fatalf("1000 names: %d %s", st, raw)
	}
	if rec, _ := e.rec.last("secret:List"); len(rec.Items) != 64 || rec.Items[0].Resource != "secret/app/s999" || rec.Items[1].Resource != "secret/app/s1" || !strings.Contains(rec.Detail, "secrets=1000") {
		t.Fatalf("1000 names: %d items, detail %q", len(rec.Items), rec.Detail)
	}
}

// TestSecretWaitEndsWhenTheTokenIsRevoked: a wait re-checks its caller's
// credential while it blocks.
func TestSecretWaitEndsWhenTheTokenIsRevoked(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/secrets/data/a", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "1"}}, nil)
	tok := e.policyToken("lister", "statements:\n  - effect: allow\n    actions: [secret:List]\n    resources: [\"secret/*\"]\n")
	ch := waitAsync(e, tok, client.SecretWaitRequest{Secrets: map[string]uint32{"a": 1}, Wait: "1m"})
	pending(t, ch)
	e.must("POST", "/v1/auth/token/revoke", e.root, client.RevokeTokenRequest{Token: tok}, nil)
	c := recv(t, ch, 5*time.Second)
	if c.status != 401 || !strings.Contains(string(c.raw), `"code":"unauthenticated"`) {
		t.Fatalf("after revocation: %d %s", c.status, c.raw)
	}
	e.wantErr("POST", waitPath, tok, client.SecretWaitRequest{Secrets: map[string]uint32{"a": 1}}, 401, "unauthenticated")
}

func TestSecretWaitEndsOnSeal(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/secrets/data/a", e.root, client.SecretPutRequest{Fields: map[string]string{"p": "1"}}, nil)
	ch := waitAsync(e, e.root, client.SecretWaitRequest{Secrets: map[string]uint32{"a": 1}, Wait: "1m"})
	pending(t, ch)
	e.must("POST", "/v1/sys/seal", e.root, nil, nil)
	if c := recv(t, ch, 5*time.Second); c.status != 503 || !strings.Contains(string(c.raw), `"code":"sealed"`) {
		t.Fatalf("after seal: %d %s", c.status, c.raw)
	}
}

// countingRecorder counts the records of every phase.
type countingRecorder struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (c *countingRecorder) Record(_ context.Context, r *audit.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, *r)
	return nil
}

func (c *countingRecorder) of(action string) []audit.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []audit.Record
	for _, r := range c.recs {
		if r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

// timedServer is an API server on a real listener with the production
// server's timeouts shortened, and its shutdown wired as Run wires it.
type timedServer struct {
	api  *server.Server
	hs   *http.Server
	url  string
	root *client.Client
	rec  *countingRecorder
}

func newTimedServer(t *testing.T, timeout time.Duration) *timedServer {
	t.Helper()
	s := sys.New(barrier.New(inmem.New()), nil)
	rec := &countingRecorder{}
	api := server.New(s, server.Options{Logger: slog.New(slog.DiscardHandler), Audit: rec})
	ts := &timedServer{api: api, rec: rec}
	ts.hs, ts.url = ts.listen(t, timeout)
	anon, err := client.New(ts.url)
	if err != nil {
		t.Fatal(err)
	}
	ir, err := anon.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Unseal(ctx, client.UnsealRequest{Share: ir.Shares[0]}); err != nil {
		t.Fatal(err)
	}
	if ts.root, err = client.New(ts.url, client.WithToken(ir.RootToken)); err != nil {
		t.Fatal(err)
	}
	return ts
}

// listen serves the API on one more listener, with the given read and
// write timeouts, its shutdown ending the waits as Run wires it.
func (ts *timedServer) listen(t *testing.T, timeout time.Duration) (*http.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: ts.api, ReadTimeout: timeout, WriteTimeout: timeout}
	hs.RegisterOnShutdown(ts.api.EndWaits)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })
	return hs, "http://" + ln.Addr().String()
}

// TestSecretWaitOutlivesTheServerTimeouts: the server's read and write
// timeouts (30s and 60s in production, 1s here) do not cut a longer wait,
// and the Go client's attempt timeout does not either.
func TestSecretWaitOutlivesTheServerTimeouts(t *testing.T) {
	ts := newTimedServer(t, time.Second)
	if _, err := ts.root.SecretPut(ctx, "a", client.SecretPutRequest{Fields: map[string]string{"p": "1"}}); err != nil {
		t.Fatal(err)
	}
	// Two endpoints (two listeners of one server) so that the attempt
	// timeout applies.
	_, second := ts.listen(t, time.Second)
	c, err := client.New(ts.url+","+second, client.WithToken(ts.root.Token()), client.WithAttemptTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		_, _ = ts.root.SecretPut(ctx, "a", client.SecretPutRequest{Fields: map[string]string{"p": "2"}})
	}()
	start := time.Now()
	res, err := c.SecretWait(ctx, map[string]uint32{"a": 1}, 3*time.Second)
	if err != nil {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
	if !reflect.DeepEqual(res.Changed, []client.SecretChange{{Name: "a", CurrentVersion: 2}}) || len(res.Denied) != 0 {
		t.Fatalf("answer %+v", res)
	}
	if d := time.Since(start); d < 1400*time.Millisecond {
		t.Fatalf("answered after %s, before the change", d)
	}
	// One record, no intent record: a wait changes nothing.
	if recs := ts.rec.of("secret:List"); len(recs) != 1 || recs[0].Phase != audit.PhaseDone {
		t.Fatalf("%d records of the wait: %+v", len(recs), recs)
	}
	// A wait that sees no change answers empty at its end.
	res, err = c.SecretWait(ctx, map[string]uint32{"a": 2}, 1200*time.Millisecond)
	if err != nil || len(res.Changed) != 0 || res.Changed == nil || res.Denied == nil {
		t.Fatalf("empty wait: %+v %v", res, err)
	}
}

// TestSecretWaitEndsOnShutdown: a graceful shutdown ends waits at once
// (each answers with no change) instead of waiting for them.
func TestSecretWaitEndsOnShutdown(t *testing.T) {
	ts := newTimedServer(t, time.Minute)
	if _, err := ts.root.SecretPut(ctx, "a", client.SecretPutRequest{Fields: map[string]string{"p": "1"}}); err != nil {
		t.Fatal(err)
	}
	type out struct {
		res *client.SecretWaitResult
		err error
	}
	done := make(chan out, 3)
	for range 3 {
		go func() {
			res, err := ts.root.SecretWait(ctx, map[string]uint32{"a": 1}, 5*time.Minute)
			done <- out{res, err}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := ts.hs.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v after %s", err, time.Since(start))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %s with waits open", d)
	}
	for range 3 {
		select {
		case o := <-done:
			if o.err != nil || len(o.res.Changed) != 0 {
				t.Fatalf("a wait ended by shutdown: %+v %v", o.res, o.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a wait did not end on shutdown")
		}
	}
}

// TestSecretWaitClient: the Go client's SecretWait over real HTTP.
func TestSecretWaitClient(t *testing.T) {
	ts := newTimedServer(t, time.Minute)
	res, err := ts.root.SecretWait(ctx, map[string]uint32{"x": 1}, time.Second)
	if err != nil || !reflect.DeepEqual(res.Changed, []client.SecretChange{{Name: "x"}}) {
		t.Fatalf("missing secret held as 1: %+v %v", res, err)
	}
	_, err = ts.root.SecretWait(ctx, map[string]uint32{"x": 0}, 10*time.Minute)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 {
		t.Fatalf("a wait over 5m: %v", err)
	}
}

// TestSecretWaitEndsWhenRunStops: Run's graceful shutdown ends the waits
// at once (RegisterOnShutdown(EndWaits)) rather than holding the shutdown
// for its 10 s grace and then cutting them.
func TestSecretWaitEndsWhenRunStops(t *testing.T) {
	b, stop := runServer(t, server.Config{})
	opts := []client.Option{client.WithToken(b.RootToken)}
	if b.CACertFile != "" {
		opts = append(opts, client.WithCACertFile(b.CACertFile))
	}
	c, err := client.New(b.Addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SecretPut(ctx, "a", client.SecretPutRequest{Fields: map[string]string{"p": "1"}}); err != nil {
		t.Fatal(err)
	}
	type out struct {
		res *client.SecretWaitResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := c.SecretWait(ctx, map[string]uint32{"a": 1}, 5*time.Minute)
		done <- out{res, err}
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run took %s to stop with a wait open", d)
	}
	select {
	case o := <-done:
		if o.err != nil || len(o.res.Changed) != 0 {
			t.Fatalf("the wait ended by the shutdown: %+v %v", o.res, o.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end")
	}
}

// TestSecretWaitRefusesBadNamesBeforeAuthorizing: an invalid name is a
// 400 for the whole wait, also for a caller whose policies would deny it:
// it is not authorized as written, answered in denied nor recorded as a
// resource (a name like team-a/../x would match team-a/* as text).
func TestSecretWaitRefusesBadNamesBeforeAuthorizing(t *testing.T) {
	e := newIAMEnv(t, nil)
	tok := e.policyToken("team-a", "statements:\n  - effect: allow\n    actions: [secret:List]\n    resources: [\"secret/team-a/*\"]\n")
	for _, bad := range []string{"other/../x", "team-a/../x", "team-a//x"} {
		raw := e.wantErr("POST", waitPath, tok, client.SecretWaitRequest{Secrets: map[string]uint32{"team-a/db": 1, bad: 0}, Wait: "10ms"}, 400, "invalid_request")
		if strings.Contains(raw, "denied") {
			t.Fatalf("%s: %s", bad, raw)
		}
	}
}
