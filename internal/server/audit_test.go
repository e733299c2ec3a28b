package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// failingFile fails every write while *fail is set, like a full disk.
type failingFile struct {
	*os.File
	fail *bool
}

func (f failingFile) Write(b []byte) (int, error) {
	if *f.fail {
		return 0, errors.New("no space left on device")
	}
	return f.File.Write(b)
}

func doJSON(t *testing.T, method, url, token string, in any) (int, []byte) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestAuditFailClosed: while the audit file cannot be written, requests
// get 503 audit_unavailable and change nothing; service resumes when the
// sink recovers, and the log still verifies.
func TestAuditFailClosed(t *testing.T) {
	bar := barrier.New(inmem.New())
	s := sys.New(bar, nil)
	_, root, err := s.DevBootstrap(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	k, _ := audit.LoadOrCreateKeys(filepath.Join(dir, "audit.key"))
	fail := false
	m := monitor.NewMetrics(0, nil)
	tr, err := audit.Open(audit.Options{Dir: dir, Keys: k, Observe: m.ObserveAudit,
		OpenFile: func(name string, flag int, perm os.FileMode) (audit.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			if err != nil {
				return nil, err
			}
			return failingFile{f, &fail}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(server.New(s, server.Options{Audit: tr, Metrics: m, Logger: slog.New(slog.DiscardHandler)}))
	defer ts.Close()

	if st, b := doJSON(t, "POST", ts.URL+"/v1/keys", root, client.CreateKeyRequest{Alias: "alias/before"}); st != 201 {
		t.Fatalf("create: %d %s", st, b)
	}
	fail = true
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/keys", client.CreateKeyRequest{Alias: "alias/during"}},
		{"POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: "alias/before", Plaintext: []byte("x")}},
		{"POST", "/v1/auth/token/create", client.CreateTokenRequest{}},
		{"GET", "/v1/keys", nil},
		// A wait that would answer at once (secret a is missing, not at 1).
		{"POST", "/v1/secrets/wait", client.SecretWaitRequest{Secrets: map[string]uint32{"a": 1}, Wait: "10ms"}},
	} {
		st, b := doJSON(t, c.method, ts.URL+c.path, root, c.body)
		if st != 503 || !strings.Contains(string(b), "audit_unavailable") {
			t.Fatalf("%s %s while the audit sink fails: %d %s", c.method, c.path, st, b)
		}
	}
	if s.Tokens.Count() != 1 {
		t.Fatal("a token was created without an audit record")
	}
	fail = false
	st, b := doJSON(t, "GET", ts.URL+"/v1/keys", root, nil)
	if st != 200 || strings.Contains(string(b), "alias/during") || !strings.Contains(string(b), "alias/before") {
		t.Fatalf("after recovery: %d %s", st, b)
	}
	if st, b := doJSON(t, "POST", ts.URL+"/v1/kms/encrypt", root, client.EncryptRequest{KeyID: "alias/before", Plaintext: []byte("x"), Context: map[string]string{"tenant": "acme"}}); st != 200 {
		t.Fatalf("encrypt after recovery: %d %s", st, b)
	}
	_, metrics := doJSON(t, "GET", ts.URL+"/metrics", "", nil)
	for _, want := range []string{"coffer_audit_failures_total 5", `coffer_requests_total{action="kms:Encrypt",code="audit_unavailable",door="rest"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	tr.Close()
	files, _ := audit.Files(dir)
	res, err := audit.Verify(files, audit.VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil {
		t.Fatalf("verify: %v %v", err, res.Problem)
	}
	// The log holds the successful requests (key create = intent + outcome),
	// HMACs instead of the token and context value.
	all, _ := os.ReadFile(files[0])
	if bytes.Contains(all, []byte(root)) || bytes.Contains(all, []byte("acme")) {
		t.Fatal("secret in the audit log")
	}
	if !bytes.Contains(all, []byte(k.HMAC(root))) || !bytes.Contains(all, []byte(`"tenant":"`+k.HMAC("acme"))) {
		t.Fatal("HMACs missing from the audit log")
	}
	if res.Records != 4 {
		t.Fatalf("want 4 records (intent+create, list, encrypt), got %d", res.Records)
	}
}

// runServer starts server.Run with cfg in dev mode and returns its banner.
func runServer(t *testing.T, cfg server.Config) (server.Banner, func()) {
	t.Helper()
	cfg.Dev, cfg.Listen = true, "127.0.0.1:0"
	if cfg.DevDir == "" {
		cfg.DevDir = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Banner, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- server.Run(ctx, cfg, slog.New(slog.DiscardHandler), func(b server.Banner) { ready <- b })
	}()
	select {
	case b := <-ready:
		return b, func() {
			cancel()
			if err := <-errc; err != nil {
				t.Error(err)
			}
		}
	case err := <-errc:
		cancel()
		t.Fatalf("server: %v", err)
	}
	return server.Banner{}, nil
}

// TestAuditDiskFull fills a small tmpfs under the audit directory (needs
// root, COFFER_E2E=1): requests fail with 503 and change nothing, then
// succeed once space is freed.
func TestAuditDiskFull(t *testing.T) {
	if os.Getenv("COFFER_E2E") == "" {
		t.Skip("set COFFER_E2E=1 (needs root to mount a tmpfs)")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", mnt).Run()
	var cfg server.Config
	cfg.Audit.Dir = mnt
	ban, stop := runServer(t, cfg)
	defer func() { stop() }()
	tok := ban.RootToken
	if st, b := doJSON(t, "POST", ban.Addr+"/v1/keys", tok, client.CreateKeyRequest{Alias: "alias/ok"}); st != 201 {
		t.Fatalf("%d %s", st, b)
	}
	// Fill the file system.
	filler := filepath.Join(mnt, "filler")
	f, _ := os.Create(filler)
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	// The audit file's last page may still take a few records; then
	// requests fail. Records differ by a few bytes (durations, names), so
	// a shorter one may still fit in the page's last bytes after a longer
	// one was refused: what matters is that refused requests change
	// nothing (checked below) and that requests do get refused.
	refused := 0
	var refusedAliases []string
	for i := 0; i < 2000 && refused < 3; i++ {
		alias := fmt.Sprintf("alias/full%d", i)
		st, b := doJSON(t, "POST", ban.Addr+"/v1/keys", tok, client.CreateKeyRequest{Alias: alias})
		switch {
		case st == 503 && strings.Contains(string(b), "audit_unavailable"):
			refused++
			refusedAliases = append(refusedAliases, alias)
		case st != 201:
			t.Fatalf("disk full: %d %s", st, b)
		}
	}
	if refused < 3 {
		t.Fatal("requests never failed with a full disk")
	}
	// Reads and crypto operations go on while their records fit in the
	// space reserved for outcome records, then fail too: none unaudited.
	encrypted := 0
	for ; encrypted < 5000; encrypted++ {
		st, b := doJSON(t, "POST", ban.Addr+"/v1/kms/encrypt", tok, client.EncryptRequest{KeyID: "alias/ok", Plaintext: []byte("x")})
		if st == 503 {
			break
		}
		if st != 200 {
			t.Fatalf("encrypt: %d %s", st, b)
		}
	}
	if encrypted == 5000 {
		t.Fatal("encrypt never failed on a full disk")
	}
	os.Remove(filler)
	st, b := doJSON(t, "GET", ban.Addr+"/v1/keys", tok, nil)
	if st != 200 {
		t.Fatalf("after freeing space: %d %s", st, b)
	}
	for _, a := range refusedAliases {
		if strings.Contains(string(b), `"`+a+`"`) {
			t.Fatalf("%s was created although its request was refused", a)
		}
	}
	stop()
	files, _ := audit.Files(mnt)
	res, err := audit.Verify(files, audit.VerifyOptions{})
	if err != nil || res.Problem != nil {
		t.Fatalf("verify: %v %+v", err, res.Problem)
	}
	stop = func() {}
}

// receiver collects POSTed bodies.
type receiver struct {
	mu     sync.Mutex
	bodies []string
	got    chan struct{}
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	r := &receiver{got: make(chan struct{}, 100)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, req.Method+" "+req.URL.Path+" "+string(b))
		r.mu.Unlock()
		r.got <- struct{}{}
	}))
	t.Cleanup(ts.Close)
	return r, ts
}

func (r *receiver) waitFor(t *testing.T, substr string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		for _, b := range r.bodies {
			if strings.Contains(b, substr) {
				r.mu.Unlock()
				return b
			}
		}
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("no alert containing %q; got %v", substr, r.bodies)
		}
	}
}

// TestAlertsEndToEnd runs the real server with a rules file: a root-token
// use reaches a webhook and an Alertmanager receiver, and a token reported
// as leaked is revoked automatically on its next use.
func TestAlertsEndToEnd(t *testing.T) {
	hook, hookSrv := newReceiver(t)
	am, amSrv := newReceiver(t)
	dir := t.TempDir()
	leaked := filepath.Join(dir, "leaked.txt")
	rules := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rules, []byte(fmt.Sprintf(`
sinks:
  log: false
  webhook: %s/hook
  alertmanager: %s
leaked_credential:
  file: %s
  respond: revoke_token
`, hookSrv.URL, amSrv.URL, leaked)), 0o600)
	var cfg server.Config
	cfg.Audit.Alerts = rules
	cfg.DevDir = dir
	ban, stop := runServer(t, cfg)
	defer func() { stop() }()
	root := ban.RootToken

	if st, b := doJSON(t, "GET", ban.Addr+"/v1/keys", root, nil); st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	hook.waitFor(t, `"rule":"root_token"`)
	am.waitFor(t, `"alertname":"CofferRootToken"`)

	var tok client.CreateTokenResponse
	_, b := doJSON(t, "POST", ban.Addr+"/v1/auth/token/create", root, client.CreateTokenRequest{DisplayName: "ci"})
	json.Unmarshal(b, &tok)
	if st, _ := doJSON(t, "GET", ban.Addr+"/v1/auth/token/lookup-self", tok.Token, nil); st != 200 {
		t.Fatal("token does not work")
	}
	os.WriteFile(leaked, []byte(tok.Accessor+"\n"), 0o600)
	doJSON(t, "GET", ban.Addr+"/v1/auth/token/lookup-self", tok.Token, nil)
	got := hook.waitFor(t, `"rule":"leaked_credential"`)
	if !strings.Contains(got, "revoked "+tok.Accessor) {
		t.Fatalf("no automatic revocation: %s", got)
	}
	if st, _ := doJSON(t, "GET", ban.Addr+"/v1/auth/token/lookup-self", tok.Token, nil); st != 401 {
		t.Fatalf("the leaked token still works: %d", st)
	}
	// Metrics on the API listener.
	_, m := doJSON(t, "GET", ban.Addr+"/metrics", "", nil)
	for _, want := range []string{`coffer_alerts_total{rule="leaked_credential"} 1`, "coffer_sealed 0", "coffer_tokens_active 1",
		`coffer_requests_total{action="key:List",code="ok",door="rest"} 1`, "coffer_audit_records_total", "coffer_storage_duration_seconds_bucket"} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	stop()
	stop = func() {}
	// The revocation is in the audit log, and the log verifies closed.
	files, _ := audit.Files(ban.AuditDir)
	res, err := audit.Verify(files, audit.VerifyOptions{})
	if err != nil || res.Problem != nil {
		t.Fatalf("verify: %v %+v", err, res.Problem)
	}
	var revoked bool
	for _, f := range files {
		fh, _ := os.Open(f)
		audit.Search(fh, audit.Query{Action: "alert:RevokeToken"}, func([]byte, *audit.Record) error { revoked = true; return nil })
		fh.Close()
	}
	if !revoked {
		t.Fatal("the automatic revocation is not in the audit log")
	}
}
