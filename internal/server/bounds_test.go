package server_test

// Bounds on what one request can make the server hold or write (issue 13,
// items 6, 7 and 18): a caller without rights is refused before its body is
// read, a body's shape is checked as it is read, encryption contexts are
// checked before they reach the audit record, and the record says what
// happened (204, a claimed door, a client that hung up).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/monitor"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// boundsEnv is a dev-bootstrapped server with the real audit trail, behind
// a wrapper that counts the request body bytes the server reads.
type boundsEnv struct {
	t        *testing.T
	url      string
	root     string
	nopol    string // a token with no policies
	listOnly string // a token whose only policy allows key:List
	dir      string // the audit directory
	read     atomic.Int64
	trail    *audit.Trail
	keys     *audit.Keys
	metrics  *monitor.Metrics
	logs     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func newBoundsEnv(t *testing.T, rec audit.Recorder) *boundsEnv {
	t.Helper()
	s := sys.New(barrier.New(inmem.New()), nil)
	_, root, err := s.DevBootstrap(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	e := &boundsEnv{t: t, root: root, dir: t.TempDir(), logs: &syncBuffer{}, metrics: monitor.NewMetrics(0, nil)}
	e.keys, err = audit.LoadOrCreateKeys(filepath.Join(e.dir, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	if rec == nil {
		e.trail, err = audit.Open(audit.Options{Dir: e.dir, Keys: e.keys})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.trail.Close() })
		rec = e.trail
	}
	api := server.New(s, server.Options{Audit: rec, Metrics: e.metrics, Logger: slog.New(slog.NewTextHandler(e.logs, nil))})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = countingBody{r.Body, &e.read}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	e.url = ts.URL
	var tr client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", root, client.CreateTokenRequest{DisplayName: "nopol", TTL: "1h"}, &tr)
	e.nopol = tr.Token
	e.must("PUT", "/v1/policies/list-only", root, client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [key:List]\n    resources: [\"*\"]\n"}, nil)
	e.must("POST", "/v1/auth/token/create", root, client.CreateTokenRequest{DisplayName: "list-only", TTL: "1h", Policies: []string{"list-only"}}, &tr)
	e.listOnly = tr.Token
	return e
}

func (e *boundsEnv) send(method, path, token string, hdr http.Header, body io.Reader) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if br, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(br.Len())
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

func (e *boundsEnv) must(method, path, token string, in, out any) {
	e.t.Helper()
	b, _ := json.Marshal(in)
	st, _, raw := e.send(method, path, token, nil, bytes.NewReader(b))
	if st/100 != 2 {
		e.t.Fatalf("%s %s: %d %s", method, path, st, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// auditSize is the size of the audit directory's log files.
func (e *boundsEnv) auditSize() int64 {
	e.t.Helper()
	files, err := audit.Files(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			e.t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// emptyItems is a decrypt-batch body of n empty items.
func emptyItems(n int) []byte {
	var b bytes.Buffer
	b.Grow(12 + 3*n)
	b.WriteString(`{"items":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("{}")
	}
	b.WriteString("]}")
	return b.Bytes()
}

// bigContext is an encrypt body whose context has n pairs.
func bigContext(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"key_id":"alias/x","plaintext":"aGk=","context":{`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%07d":"%s"`, i, "v")
	}
	b.WriteString("}}")
	return b.Bytes()
}

// allocDuring returns the bytes the process allocated while f ran.
func allocDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestNoRightsRefusedBeforeBody: a token with no policies, or none for the
// route's action, is refused (403) before the server reads its 15 MB body;
// the server used to read and decode all of it first (1 GB RSS for 5.6 M
// empty items).
func TestNoRightsRefusedBeforeBody(t *testing.T) {
	e := newBoundsEnv(t, nil)
	body := emptyItems(5_000_000)
	for _, tok := range []string{e.nopol, e.listOnly} {
		for _, path := range []string{"/v1/kms/decrypt-batch", "/v1/kms/encrypt-batch"} {
			e.read.Store(0)
			var st int
			var raw []byte
			alloc := allocDuring(func() { st, _, raw = e.send("POST", path, tok, nil, bytes.NewReader(body)) })
			if st != http.StatusForbidden || !strings.Contains(string(raw), "permission_denied") {
				t.Fatalf("%s: %d %.300s", path, st, raw)
			}
			if n := e.read.Load(); n > 64<<10 {
				t.Errorf("%s: the server read %d body bytes of a caller with no rights", path, n)
			}
			if alloc > 32<<20 {
				t.Errorf("%s: %d MiB allocated for a refused request", path, alloc>>20)
			}
		}
	}
}

// TestBodyShapeBounded: a caller with rights is refused at item 1,001, at
// nesting 17, at an object of 257 members, having read a few kilobytes and
// allocated a few megabytes, not the whole body.
func TestBodyShapeBounded(t *testing.T) {
	e := newBoundsEnv(t, nil)
	deep := []byte(`{"items":[` + strings.Repeat("[", 1<<20) + strings.Repeat("]", 1<<20) + `]}`)
	manyTags := bytes.Replace(bigContext(100_000), []byte(`"context"`), []byte(`"tags"`), 1)
	for _, c := range []struct {
		name, path string
		body       []byte
		msg        string
	}{
		{"5M empty items", "/v1/kms/decrypt-batch", emptyItems(5_000_000), "1001 items; a batch holds at most 1000"},
		{"5M empty encrypt items", "/v1/kms/encrypt-batch", emptyItems(5_000_000), "1001 items; a batch holds at most 1000"},
		{"1M deep", "/v1/kms/decrypt-batch", deep, "nested deeper than 16"},
		{"100k-pair context", "/v1/kms/encrypt", bigContext(100_000), "more than 256 members"},
		{"100k tags", "/v1/keys", manyTags, "more than 256 members"},
		{"fingerprints", "/v1/auth/token/report-leaked", []byte(`{"fingerprints":[` + strings.Repeat(`"a",`, 200_000) + `"a"]}`), "at most 1000"},
	} {
		e.read.Store(0)
		var st int
		var raw []byte
		alloc := allocDuring(func() { st, _, raw = e.send("POST", c.path, e.root, nil, bytes.NewReader(c.body)) })
		if st != http.StatusBadRequest || !strings.Contains(string(raw), c.msg) {
			t.Fatalf("%s: %d %.300s", c.name, st, raw)
		}
		if n := e.read.Load(); n > 256<<10 {
			t.Errorf("%s: the server read %d body bytes before refusing", c.name, n)
		}
		if alloc > 32<<20 {
			t.Errorf("%s: %d MiB allocated", c.name, alloc>>20)
		}
	}
	// 1,000 items are still a batch.
	st, _, raw := e.send("POST", "/v1/kms/decrypt-batch", e.root, nil, bytes.NewReader(emptyItems(1000)))
	if st != http.StatusOK {
		t.Fatalf("1000 items: %d %.300s", st, raw)
	}
}

// TestAuditBoundedPerRequest: hostile requests, from a caller without
// policies and from root, each grow the audit log by less than 64 KiB.
// A denied 1 MiB context used to write 7.5 MB.
func TestAuditBoundedPerRequest(t *testing.T) {
	e := newBoundsEnv(t, nil)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/x"}, nil)
	long := strings.Repeat("x", 900<<10)
	ctx64 := map[string]string{}
	for i := range 64 {
		ctx64[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 100)
	}
	wideCtx := map[string]string{"a": strings.Repeat("\u2028", 200<<10)}
	cases := []struct {
		name, method, path string
		body               any
	}{
		{"big context", "POST", "/v1/kms/encrypt", bigContext(200)},
		{"long context value", "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: "alias/x", Plaintext: []byte("x"), Context: map[string]string{"k": long}}},
		{"long context key", "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: "alias/x", Plaintext: []byte("x"), Context: map[string]string{long: "v"}}},
		{"escaped context", "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: "alias/x", Plaintext: []byte("x"), Context: wideCtx}},
		{"reencrypt contexts", "POST", "/v1/kms/reencrypt", client.ReEncryptRequest{Ciphertext: []byte("x"), SourceContext: ctx64, DestinationContext: map[string]string{"k": long}}},
		{"datakey context", "POST", "/v1/kms/datakey", client.DataKeyRequest{KeyID: "alias/x", Bytes: 32, Context: map[string]string{"k": long}}},
		{"long key id", "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: long, Plaintext: []byte("x")}},
		{"long alias", "POST", "/v1/aliases", client.Alias{Name: "alias/" + long, KeyID: long}},
		{"long path key", "GET", "/v1/keys/" + strings.Repeat("k", 60<<10), nil},
		{"long policy name", "PUT", "/v1/policies/" + strings.Repeat("p", 60<<10), client.PutPolicyRequest{Document: long}},
		{"long role", "POST", "/v1/auth/assume-role", client.AssumeRoleRequest{Role: long}},
		{"long method", strings.Repeat("M", 60<<10), "/v1/keys", nil},
		{"batch contexts", "POST", "/v1/kms/decrypt-batch", client.BatchDecryptRequest{Items: []client.DecryptRequest{{Ciphertext: []byte("x"), Context: map[string]string{"k": long}}}}},
	}
	for _, tok := range []string{e.nopol, e.root} {
		for _, c := range cases {
			var body []byte
			switch v := c.body.(type) {
			case nil:
			case []byte:
				body = v
			default:
				body, _ = json.Marshal(v)
			}
			before := e.auditSize()
			st, _, raw := e.send(c.method, c.path, tok, nil, bytes.NewReader(body))
			if st >= 500 {
				t.Errorf("%s: %d %.200s", c.name, st, raw)
			}
			if grew := e.auditSize() - before; grew > 64<<10 {
				t.Errorf("%s (status %d): the audit log grew by %d bytes", c.name, st, grew)
			}
		}
	}
	// Hostile headers: none of them reaches the record unbounded.
	for name, h := range map[string]http.Header{
		"basic long id":  {"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("i", 40<<10)+":s"))}},
		"bearer long":    {"Authorization": {"Bearer " + strings.Repeat("t", 40<<10)}},
		"user agent":     {"User-Agent": {strings.Repeat("u", 40<<10)}},
		"door junk":      {"X-Coffer-Door": {strings.Repeat("d", 40<<10)}},
		"forwarded junk": {"X-Forwarded-For": {strings.Repeat("1.2.3.4,", 5000)}},
	} {
		before := e.auditSize()
		st, _, raw := e.send("POST", "/v1/kms/encrypt", "", h, bytes.NewReader([]byte(`{"key_id":"alias/x","plaintext":"aGk="}`)))
		if st >= 500 {
			t.Errorf("%s: %d %.200s", name, st, raw)
		}
		if grew := e.auditSize() - before; grew > 4<<10 {
			t.Errorf("%s (status %d): the audit log grew by %d bytes", name, st, grew)
		}
	}
}

// TestContextLimitsBeforeRecord: a context over the limits is refused with
// 400 before it is recorded, even for a caller that may not use the key.
func TestContextLimitsBeforeRecord(t *testing.T) {
	rec := &memRecorder{}
	e := newBoundsEnv(t, rec)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/x"}, nil)
	st, _, raw := e.send("POST", "/v1/kms/encrypt", e.root, nil, bytes.NewReader(bigContext(65)))
	if st != http.StatusBadRequest || !strings.Contains(string(raw), "65 pairs; at most 64") {
		t.Fatalf("65 pairs: %d %s", st, raw)
	}
	r, ok := rec.last("kms:Encrypt")
	if !ok || len(r.ContextValues) != 0 || len(r.Context) != 0 || r.ErrorCode != "invalid_request" {
		t.Fatalf("record of a refused context: %+v", r)
	}
}

// TestLargeBodiesBudget: large bodies in flight share a server-wide
// budget; past it a request waits, then gets 503 busy with Retry-After,
// instead of more memory.
func TestLargeBodiesBudget(t *testing.T) {
	e := newBoundsEnv(t, nil)
	// Bodies of undeclared length (chunked) each reserve the batch limit.
	var pipes []*io.PipeWriter
	var wg sync.WaitGroup
	for range server.MaxBodyBudget / server.MaxBatchBody {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		wg.Go(func() {
			req, _ := http.NewRequest("POST", e.url+"/v1/kms/decrypt-batch", pr)
			req.Header.Set("Authorization", "Bearer "+e.root)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
		if _, err := pw.Write([]byte(`{"items":[`)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // the handlers take their shares
	defer func() {
		for _, pw := range pipes {
			pw.Write([]byte(`{}]}`))
			pw.Close()
		}
		wg.Wait()
	}()
	big := emptyItems(1000)
	big = append(big[:len(big)-2], []byte(strings.Repeat(" ", 100<<10)+"]}")...)
	start := time.Now()
	st, hdr, raw := e.send("POST", "/v1/kms/decrypt-batch", e.root, nil, bytes.NewReader(big))
	if st != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(string(raw), `"busy"`) {
		t.Fatalf("over the budget: %d %v %.300s", st, hdr, raw)
	}
	if time.Since(start) < time.Second {
		t.Errorf("refused after %s without waiting for room", time.Since(start))
	}
	// Small bodies need no share.
	if st, _, raw := e.send("POST", "/v1/kms/decrypt-batch", e.root, nil, bytes.NewReader(emptyItems(10))); st != http.StatusOK {
		t.Fatalf("small batch while the budget is taken: %d %.300s", st, raw)
	}
}

// TestAuditAccuracy: a dot-segment path is answered in JSON and recorded
// (the mux redirected it, unrecorded); a 204 is recorded as 204; the door
// header is recorded as a claim; a client that hangs up is not an audit
// failure.
func TestAuditAccuracy(t *testing.T) {
	rec := &memRecorder{}
	e := newBoundsEnv(t, rec)
	for _, p := range []string{"/v1/x/../sys/seal", "/v1/keys/./x", "/v1//keys", "/v1/%2e%2e/v1/sys/seal"} {
		st, hdr, raw := e.send("POST", p, e.root, nil, nil)
		if st != http.StatusBadRequest || !strings.Contains(string(raw), "invalid_path") {
			t.Fatalf("%s: %d %s", p, st, raw)
		}
		r, ok := rec.last("api:UnknownRoute")
		if !ok || r.RequestID != hdr.Get("X-Request-Id") || r.ErrorCode != "invalid_path" || r.Status != http.StatusBadRequest {
			t.Fatalf("%s: record %+v", p, r)
		}
	}

	// Claimed door.
	st, _, raw := e.send("GET", "/v1/keys", e.root, http.Header{"X-Coffer-Door": {"kms-plugin"}}, nil)
	if st != http.StatusOK {
		t.Fatalf("list: %d %s", st, raw)
	}
	if r, _ := rec.last("key:List"); r.Door != "claimed:kms-plugin" {
		t.Fatalf("door %q, want the claim recorded as claimed:kms-plugin", r.Door)
	}
	e.send("GET", "/v1/keys", e.root, http.Header{"X-Coffer-Door": {"anything"}}, nil)
	if r, _ := rec.last("key:List"); r.Door != "rest" {
		t.Fatalf("door %q for an unknown claim", r.Door)
	}

	// 204.
	if st, _, raw := e.send("POST", "/v1/sys/seal", e.root, nil, nil); st != http.StatusNoContent {
		t.Fatalf("seal: %d %s", st, raw)
	}
	if r, _ := rec.last("sys:Seal"); r.Status != http.StatusNoContent || r.Outcome != "ok" {
		t.Fatalf("seal recorded as %d %s", r.Status, r.Outcome)
	}
}

// hangupRecorder cancels the request when its intent record arrives and,
// like the trail, refuses records whose context is done.
type hangupRecorder struct {
	memRecorder
	mu     sync.Mutex
	cancel context.CancelFunc
}

func (h *hangupRecorder) Record(ctx context.Context, r *audit.Record) error {
	h.mu.Lock()
	if r.Phase == audit.PhaseIntent && h.cancel != nil {
		h.cancel()
		h.cancel = nil
	}
	h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return h.memRecorder.Record(ctx, r)
}

// TestHangupIsNoAuditFailure: a client that hangs up before its change is
// recorded changes nothing and gets an outcome record "canceled"; it is
// not logged as an audit failure nor counted as audit_unavailable.
func TestHangupIsNoAuditFailure(t *testing.T) {
	rec := &hangupRecorder{}
	s := sys.New(barrier.New(inmem.New()), nil)
	_, root, err := s.DevBootstrap(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	m := monitor.NewMetrics(0, nil)
	api := server.New(s, server.Options{Audit: rec, Metrics: m, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithCancel(t.Context())
	rec.mu.Lock()
	rec.cancel = cancel
	rec.mu.Unlock()
	b, _ := json.Marshal(client.CreateKeyRequest{Alias: "alias/gone"})
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/keys", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+root)
	api.ServeHTTP(httptest.NewRecorder(), req)
	if ctx.Err() == nil {
		t.Fatal("not cancelled")
	}
	if strings.Contains(logs.String(), "audit record failed") || strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a hang-up was logged as an audit failure:\n%s", logs)
	}
	r, ok := rec.last("key:Create")
	if !ok || r.Outcome != "error" || r.ErrorCode != "canceled" {
		t.Fatalf("no outcome record for the hang-up: %+v", r)
	}
	if len(s.Keys.List(t.Context())) != 0 {
		t.Fatal("the key was created without its intent record")
	}
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(w.Body.String(), "audit_unavailable") {
		t.Fatal("a hang-up counted as audit_unavailable")
	}
}

// TestSlowBodiesReleaseTheirShare: bodies that stop arriving hit the
// listener's read timeout and get 408 (not a 5xx), and the large-body
// budget they held is free again afterwards.
func TestSlowBodiesReleaseTheirShare(t *testing.T) {
	s := sys.New(barrier.New(inmem.New()), nil)
	_, root, err := s.DevBootstrap(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ts := httptest.NewUnstartedServer(server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))}))
	ts.Config.ReadTimeout = 700 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close)
	addr := strings.TrimPrefix(ts.URL, "http://")
	head := "POST /v1/kms/decrypt-batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + root + "\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", server.MaxBatchBody) + `{"items":[{},{},`
	var wg sync.WaitGroup
	statuses := make([]int, server.MaxBodyBudget/server.MaxBatchBody+2)
	for i := range statuses {
		wg.Go(func() { statuses[i], _ = rawExchange(t, addr, []byte(head), false) })
	}
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusRequestTimeout && st != http.StatusServiceUnavailable {
			t.Errorf("slow body %d: status %d, want 408 (or 503 busy while the budget was taken)", i, st)
		}
	}
	// The shares are back: a large batch goes through at once.
	body := append(emptyItems(1000)[:0:0], emptyItems(1000)...)
	body = append(body[:len(body)-2], []byte(strings.Repeat(" ", 100<<10)+"]}")...)
	req, _ := http.NewRequest("POST", ts.URL+"/v1/kms/decrypt-batch", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+root)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || time.Since(start) > time.Second {
		t.Fatalf("large batch after the slow ones: %d after %s", resp.StatusCode, time.Since(start))
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("slow bodies logged errors:\n%s", logs)
	}
}
