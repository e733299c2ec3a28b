package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// quorumEnv is a production-mode server (init 3 of threshold 2, unsealed)
// behind real HTTP, with an audit trail on disk.
type quorumEnv struct {
	url, root, auditDir string
	shares              []string
	sys                 *sys.Sys
}

func newQuorumEnv(t *testing.T) *quorumEnv {
	t.Helper()
	ctx := context.Background()
	s := sys.New(barrier.New(inmem.New()), nil)
	ini, err := s.Init(ctx, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range ini.Shares[:2] {
		if _, err := s.Unseal(ctx, sh); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Seal)
	dir := t.TempDir()
	k, err := audit.LoadOrCreateKeys(filepath.Join(dir, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := audit.Open(audit.Options{Dir: dir, Keys: k})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	ts := httptest.NewServer(server.New(s, server.Options{Audit: tr}))
	t.Cleanup(ts.Close)
	return &quorumEnv{url: ts.URL, root: ini.RootToken, auditDir: dir, shares: ini.Shares, sys: s}
}

func (e *quorumEnv) call(t *testing.T, method, path string, in, out any) (int, string) {
	t.Helper()
	status, body := doJSON(t, method, e.url+path, "", in)
	if out != nil && status < 300 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
	var eb client.ErrorBody
	json.Unmarshal(body, &eb)
	return status, eb.Error.Code + ": " + eb.Error.Message
}

func newOTP(t *testing.T) string {
	pad := make([]byte, sys.OTPLength)
	rand.Read(pad)
	return base64.StdEncoding.EncodeToString(pad)
}

// auditText returns the whole audit trail.
func auditText(t *testing.T, dir string) string {
	t.Helper()
	var all strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	if all.Len() == 0 {
		t.Fatalf("no audit records in %s", dir)
	}
	return all.String()
}

// TestGenerateRootOverHTTP: a new root token from a quorum of unseal
// shares, without any token, under a nonce, returned only XORed with the
// starter's pad; bad pads, wrong nonces and foreign shares are refused
// with 4xx; neither a share, the pad nor the token reaches the audit trail.
func TestGenerateRootOverHTTP(t *testing.T) {
	e := newQuorumEnv(t)
	var st client.GenerateRootStatus
	if code, _ := e.call(t, "GET", "/v1/sys/generate-root/attempt", nil, &st); code != 200 || st.Started || st.Required != 2 || st.OTPLength != sys.OTPLength {
		t.Fatalf("idle status %d %+v", code, st)
	}
	for _, bad := range []string{"", "not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		if code, msg := e.call(t, "POST", "/v1/sys/generate-root/attempt", client.GenerateRootRequest{OTP: bad}, nil); code != 400 || !strings.Contains(msg, "otp") {
			t.Fatalf("otp %q: %d %s", bad, code, msg)
		}
	}
	otp := newOTP(t)
	if code, _ := e.call(t, "POST", "/v1/sys/generate-root/attempt", client.GenerateRootRequest{OTP: otp}, &st); code != 200 || !st.Started || len(st.OTPFingerprint) != 16 {
		t.Fatalf("start %d %+v", code, st)
	}
	nonce := st.Nonce
	if code, msg := e.call(t, "POST", "/v1/sys/generate-root/attempt", client.GenerateRootRequest{OTP: newOTP(t)}, nil); code != 409 || !strings.HasPrefix(msg, "attempt_in_progress") {
		t.Fatalf("second start: %d %s", code, msg)
	}
	if code, msg := e.call(t, "POST", "/v1/sys/generate-root/update", client.ShareSubmission{Nonce: strings.Repeat("a", 32), Share: e.shares[0]}, nil); code != 400 || !strings.HasPrefix(msg, "no_attempt") {
		t.Fatalf("wrong nonce: %d %s", code, msg)
	}
	if code, msg := e.call(t, "POST", "/v1/sys/generate-root/update", client.ShareSubmission{Nonce: nonce, Share: "garbage"}, nil); code != 400 || !strings.HasPrefix(msg, "invalid_share") {
		t.Fatalf("malformed share: %d %s", code, msg)
	}
	// A quorum of another server's shares ends the attempt.
	foreign, err := sys.New(barrier.New(inmem.New()), nil).Init(context.Background(), 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	e.call(t, "POST", "/v1/sys/generate-root/update", client.ShareSubmission{Nonce: nonce, Share: foreign.Shares[0]}, nil)
	if code, msg := e.call(t, "POST", "/v1/sys/generate-root/update", client.ShareSubmission{Nonce: nonce, Share: foreign.Shares[1]}, nil); code != 400 || !strings.Contains(msg, "do not belong") {
		t.Fatalf("foreign quorum: %d %s", code, msg)
	}
	if e.call(t, "GET", "/v1/sys/generate-root/attempt", nil, &st); st.Started {
		t.Fatal("the attempt survived a foreign quorum")
	}

	// The real thing.
	e.call(t, "POST", "/v1/sys/generate-root/attempt", client.GenerateRootRequest{OTP: otp}, &st)
	e.call(t, "POST", "/v1/sys/generate-root/update", client.ShareSubmission{Nonce: st.Nonce, Share: e.shares[2]}, &st)
	if st.Progress != 1 || st.Complete {
		t.Fatalf("after one share: %+v", st)
	}
	if code, _ := e.call(t, "POST", "/v1/sys/generate-root/update", client.ShareSubmission{Nonce: st.Nonce, Share: e.shares[0]}, &st); code != 200 || !st.Complete || st.EncodedToken == "" {
		t.Fatalf("quorum: %d %+v", code, st)
	}
	if _, err := sys.DecodeRootToken(st.EncodedToken, newOTP(t)); err == nil {
		t.Fatal("another pad decoded the token")
	}
	tok, err := sys.DecodeRootToken(st.EncodedToken, otp)
	if err != nil {
		t.Fatal(err)
	}
	code, body := doJSON(t, "GET", e.url+"/v1/auth/token/lookup-self", tok, nil)
	var info client.TokenInfo
	json.Unmarshal(body, &info)
	if code != 200 || !info.Root {
		t.Fatalf("the generated token: %d %s", code, body)
	}
	trail := auditText(t, e.auditDir)
	for what, secret := range map[string]string{"token": tok, "pad": otp, "encoded token": st.EncodedToken, "share": e.shares[0], "foreign share": foreign.Shares[1]} {
		if strings.Contains(trail, secret) {
			t.Errorf("the audit trail holds the %s", what)
		}
	}
	if !strings.Contains(trail, `"sys:GenerateRoot"`) || !strings.Contains(trail, `"sys:GenerateRootStart"`) {
		t.Error("generate-root is not audited")
	}
}

// TestRekeyOverHTTP: new shares from a quorum of the old ones; the old
// ones stop working, data stays readable.
func TestRekeyOverHTTP(t *testing.T) {
	e := newQuorumEnv(t)
	ctx := context.Background()
	k, err := e.sys.Keys.Create(ctx, keys.CreateRequest{Description: "before the rekey"})
	if err != nil {
		t.Fatal(err)
	}
	var st client.RekeyStatus
	if code, msg := e.call(t, "POST", "/v1/sys/rekey/attempt", client.RekeyRequest{Shares: 2, Threshold: 3}, nil); code != 400 {
		t.Fatalf("threshold above shares: %d %s", code, msg)
	}
	if code, _ := e.call(t, "POST", "/v1/sys/rekey/attempt", client.RekeyRequest{Shares: 4, Threshold: 3}, &st); code != 200 || st.Kind != "unseal" || st.Required != 2 {
		t.Fatalf("start: %d %+v", code, st)
	}
	e.call(t, "POST", "/v1/sys/rekey/update", client.ShareSubmission{Nonce: st.Nonce, Share: e.shares[0]}, &st)
	if code, _ := e.call(t, "POST", "/v1/sys/rekey/update", client.ShareSubmission{Nonce: st.Nonce, Share: e.shares[1]}, &st); code != 200 || !st.Complete || len(st.Shares) != 4 {
		t.Fatalf("rekey: %d %+v", code, st)
	}
	if strings.Contains(auditText(t, e.auditDir), st.Shares[0]) {
		t.Error("the audit trail holds a new share")
	}
	if code, _ := doJSON(t, "POST", e.url+"/v1/sys/seal", e.root, nil); code != 204 {
		t.Fatalf("seal: %d", code)
	}
	var ss client.SealStatus
	for _, sh := range e.shares {
		e.call(t, "POST", "/v1/sys/unseal", client.UnsealRequest{Share: sh}, &ss)
	}
	if code, msg := e.call(t, "POST", "/v1/sys/unseal", client.UnsealRequest{Share: e.shares[0]}, &ss); !ss.Sealed {
		t.Fatalf("old shares unsealed: %d %s", code, msg)
	}
	e.call(t, "POST", "/v1/sys/unseal", client.UnsealRequest{Reset: true}, nil)
	for _, sh := range st.Shares[1:] {
		e.call(t, "POST", "/v1/sys/unseal", client.UnsealRequest{Share: sh}, &ss)
	}
	if ss.Sealed || ss.Shares != 4 || ss.Threshold != 3 || ss.Type != "shamir" {
		t.Fatalf("new shares: %+v", ss)
	}
	if code, body := doJSON(t, "GET", e.url+"/v1/keys/"+k.ID, e.root, nil); code != 200 {
		t.Fatalf("key after rekey: %d %s", code, body)
	}
}

// TestMigrateSealWithoutMigrationOverHTTP: 409 with what to do.
func TestMigrateSealWithoutMigrationOverHTTP(t *testing.T) {
	e := newQuorumEnv(t)
	code, msg := e.call(t, "POST", "/v1/sys/migrate-seal", client.MigrateSealRequest{Share: e.shares[0]}, nil)
	if code != 409 || !strings.HasPrefix(msg, "no_migration_pending") || !strings.Contains(msg, "configure the new seal") {
		t.Fatalf("%d %s", code, msg)
	}
	if code, _ := e.call(t, "POST", "/v1/sys/migrate-seal", client.MigrateSealRequest{}, nil); code != 400 {
		t.Fatalf("empty request: %d", code)
	}
	// A reset without a migration must not discard unseal shares (one set
	// holds both).
	doJSON(t, "POST", e.url+"/v1/sys/seal", e.root, nil)
	var st client.SealStatus
	e.call(t, "POST", "/v1/sys/unseal", client.UnsealRequest{Share: e.shares[0]}, &st)
	if code, msg := e.call(t, "POST", "/v1/sys/migrate-seal", client.MigrateSealRequest{Reset: true}, nil); code != 409 || !strings.HasPrefix(msg, "no_migration_pending") {
		t.Fatalf("reset without a migration: %d %s", code, msg)
	}
	e.call(t, "GET", "/v1/sys/seal-status", nil, &st)
	if st.Progress != 1 {
		t.Fatalf("unseal progress after the refused reset: %+v", st)
	}
	// The response's new shares do not shadow the share count.
	raw, _ := json.Marshal(client.MigrateSealResponse{SealStatus: client.SealStatus{Shares: 3}, Shares: []string{"x"}})
	if !strings.Contains(string(raw), `"shares":3`) || !strings.Contains(string(raw), `"new_shares":["x"]`) {
		t.Fatalf("wire form %s", raw)
	}
}

// outcomeFails records everything except the outcome records of one
// action, as a trail that fails between a change's intent and its outcome.
type outcomeFails struct {
	audit.Recorder
	action string
}

func (o outcomeFails) Record(ctx context.Context, r *audit.Record) error {
	if r.Action == o.action && r.Phase != audit.PhaseIntent {
		return errors.New("no space left on device")
	}
	return o.Recorder.Record(ctx, r)
}

// TestNewSharesSurviveAFailedOutcomeRecord: a rekey committed after its
// intent record is answered with its new shares (their only copy) even when
// the outcome record then fails; an ordinary change is still refused.
func TestNewSharesSurviveAFailedOutcomeRecord(t *testing.T) {
	ctx := context.Background()
	s := sys.New(barrier.New(inmem.New()), nil)
	ini, err := s.Init(ctx, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range ini.Shares {
		s.Unseal(ctx, sh)
	}
	t.Cleanup(s.Seal)
	dir := t.TempDir()
	k, _ := audit.LoadOrCreateKeys(filepath.Join(dir, "audit.key"))
	tr, err := audit.Open(audit.Options{Dir: dir, Keys: k})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	for _, action := range []string{"sys:Rekey", "key:Create"} {
		ts := httptest.NewServer(server.New(s, server.Options{Audit: outcomeFails{Recorder: tr, action: action}}))
		defer ts.Close()
		if action == "key:Create" {
			code, body := doJSON(t, "POST", ts.URL+"/v1/keys", ini.RootToken, client.CreateKeyRequest{})
			if code != 503 || !strings.Contains(string(body), "audit_unavailable") {
				t.Fatalf("an ordinary change with a failed outcome record: %d %s", code, body)
			}
			continue
		}
		var st client.RekeyStatus
		code, body := doJSON(t, "POST", ts.URL+"/v1/sys/rekey/attempt", "", client.RekeyRequest{Shares: 2, Threshold: 2})
		json.Unmarshal(body, &st)
		doJSON(t, "POST", ts.URL+"/v1/sys/rekey/update", "", client.ShareSubmission{Nonce: st.Nonce, Share: ini.Shares[0]})
		code, body = doJSON(t, "POST", ts.URL+"/v1/sys/rekey/update", "", client.ShareSubmission{Nonce: st.Nonce, Share: ini.Shares[1]})
		json.Unmarshal(body, &st)
		if code != 200 || !st.Complete || len(st.Shares) != 2 {
			t.Fatalf("rekey with a failed outcome record: %d %s", code, body)
		}
	}
}
