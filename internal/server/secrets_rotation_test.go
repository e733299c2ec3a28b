package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/secrets"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// newRotationEnv is newIAMEnv with a short webhook timeout.
func newRotationEnv(t *testing.T) *iamEnv {
	t.Helper()
	e := &iamEnv{t: t, rec: &memRecorder{}}
	e.now = func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }
	bar := barrier.New(inmem.New())
	s := sys.New(bar, e.now)
	s.Secrets = secrets.New(bar, s.Keys, secrets.WithClock(e.now), secrets.WithWebhookTimeout(300*time.Millisecond))
	api := server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: e.rec})
	ts := httptest.NewServer(api)
	t.Cleanup(ts.Close)
	e.url = ts.URL
	var ir client.InitResponse
	e.must("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	e.must("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	e.root = ir.RootToken
	return e
}

// TestSecretRotationAPI drives rotation over real HTTP with a real webhook
// on loopback: success, then each failure leaves current untouched.
func TestSecretRotationAPI(t *testing.T) {
	e := newRotationEnv(t)
	var answer atomic.Value
	var calls atomic.Int64
	var bodies atomic.Value
	bodies.Store("")
	answer.Store(func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"status":"ok"}`) })
	var redirected atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Store(true)
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer target.Close()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		calls.Add(1)
		bodies.Store(bodies.Load().(string) + string(b))
		answer.Load().(func(http.ResponseWriter))(w)
	}))
	defer hook.Close()

	const name = "team-a/db"
	e.must("POST", "/v1/secrets/data/"+name, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "first-value-xyz"}}, nil)
	e.wantErr("POST", "/v1/secrets/rotate/"+name, e.root, nil, 409, "rotation_not_configured")
	e.wantErr("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "30m", With: "random:"}, 400, "invalid_request")
	e.wantErr("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "30d", With: "webhook:http://192.0.2.1/x"}, 400, "invalid_request")
	e.wantErr("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "30d", With: "nope"}, 400, "invalid_request")
	e.wantErr("PUT", "/v1/secrets/rotation/missing", e.root, client.SecretRotationRequest{Every: "30d", With: "random:"}, 404, "secret_not_found")

	var md client.SecretMetadata
	e.must("PUT", "/v1/secrets/rotation/"+name, e.root, client.SecretRotationRequest{Every: "30d", With: "webhook:" + hook.URL}, &md)
	if md.Rotation == nil || md.Rotation.Every != "30d" || md.Rotation.State != "idle" {
		t.Fatalf("rotation set: %+v", md.Rotation)
	}
	var res client.SecretRotateResult
	e.must("POST", "/v1/secrets/rotate/"+name, e.root, nil, &res)
	if res.CurrentVersion != 2 || res.PreviousVersion != 1 || calls.Load() != 2 {
		t.Fatalf("rotate: %+v, %d calls", res, calls.Load())
	}
	rec, _ := e.rec.last("secret:Rotate")
	if rec.Resource != "secret/"+name || rec.Detail != "secret_version=2 previous_version=1" {
		t.Fatalf("rotate record: %q %q", rec.Resource, rec.Detail)
	}
	var got client.SecretValue
	e.must("GET", "/v1/secrets/data/"+name, e.root, nil, &got)
	pw := got.Fields["password"]
	if got.Version != 2 || len(pw) != secrets.DefaultRandomLength {
		t.Fatalf("after rotation: version %d", got.Version)
	}
	if b := bodies.Load().(string); strings.Contains(b, pw) || strings.Contains(b, "first-value-xyz") {
		t.Fatalf("a webhook call carries a value: %s", b)
	}

	failures := []struct {
		name   string
		answer func(w http.ResponseWriter)
	}{
		{"500", func(w http.ResponseWriter) { w.WriteHeader(500) }},
		{"garbage", func(w http.ResponseWriter) { _, _ = io.WriteString(w, "not json") }},
		{"redirect", func(w http.ResponseWriter) {
			w.Header().Set("Location", target.URL)
			w.WriteHeader(http.StatusTemporaryRedirect)
		}},
		{"timeout", func(w http.ResponseWriter) { time.Sleep(time.Second) }},
	}
	for i, f := range failures {
		answer.Store(f.answer)
		raw := e.wantErr("POST", "/v1/secrets/rotate/"+name, e.root, nil, 502, "rotation_failed")
		if strings.Contains(raw, pw) || strings.Contains(raw, "not json") {
			t.Fatalf("%s: the error carries a value or the webhook's body: %s", f.name, raw)
		}
		e.must("GET", "/v1/secrets/data/"+name, e.root, nil, &got)
		if got.Version != 2 || got.Fields["password"] != pw {
			t.Fatalf("%s: current changed to %d", f.name, got.Version)
		}
		md = client.SecretMetadata{}
		e.must("GET", "/v1/secrets/metadata/"+name, e.root, nil, &md)
		if md.PendingVersion != 3 || md.Rotation.State != "failed" || md.Rotation.Attempts != i+1 || md.Rotation.LastError == "" {
			t.Fatalf("%s: metadata %+v %+v", f.name, md, md.Rotation)
		}
		if strings.Contains(md.Rotation.LastError, pw) {
			t.Fatalf("%s: last error carries a value", f.name)
		}
		if rec, _ := e.rec.last("secret:Rotate"); rec.Detail != "pending_version=3 secret_version=2" || rec.ErrorCode != "rotation_failed" {
			t.Fatalf("%s: failed rotate record: %q %q", f.name, rec.Detail, rec.ErrorCode)
		}
	}
	if redirected.Load() {
		t.Fatal("the redirect was followed")
	}
	// A write during the failed rotation is refused; disabling rolls the
	// pending version back.
	e.wantErr("POST", "/v1/secrets/data/"+name, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "x"}}, 409, "rotation_pending")
	md = client.SecretMetadata{}
	e.must("DELETE", "/v1/secrets/rotation/"+name, e.root, nil, &md)
	if md.Rotation != nil || md.PendingVersion != 0 || md.CurrentVersion != 2 {
		t.Fatalf("after disable: %+v", md)
	}
	e.wantErr("DELETE", "/v1/secrets/rotation/"+name, e.root, nil, 409, "rotation_not_configured")
	e.must("POST", "/v1/secrets/data/"+name, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "x"}}, nil)
}

// TestSecretRotationAuthorization: rotation needs secret:Rotate on the
// secret; a reader cannot configure, disable or run it.
func TestSecretRotationAuthorization(t *testing.T) {
	e := newRotationEnv(t)
	for _, n := range []string{"team-a/db", "team-b/db"} {
		e.must("POST", "/v1/secrets/data/"+n, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "pw"}}, nil)
	}
	reader := e.policyToken("reader", `statements:
  - effect: allow
    actions: [secret:Read, secret:List, secret:Write]
    resources: ["secret/team-a/*"]
`)
	rotator := e.policyToken("rotator", `statements:
  - effect: allow
    actions: [secret:Rotate]
    resources: ["secret/team-a/*"]
`)
	req := client.SecretRotationRequest{Every: "1h", With: "random:length=16"}
	e.wantErr("PUT", "/v1/secrets/rotation/team-a/db", reader, req, 403, "permission_denied")
	e.wantErr("POST", "/v1/secrets/rotate/team-a/db", reader, nil, 403, "permission_denied")
	e.wantErr("PUT", "/v1/secrets/rotation/team-b/db", rotator, req, 403, "permission_denied")
	e.must("PUT", "/v1/secrets/rotation/team-a/db", rotator, req, nil)
	e.wantErr("DELETE", "/v1/secrets/rotation/team-a/db", reader, nil, 403, "permission_denied")
	var res client.SecretRotateResult
	e.must("POST", "/v1/secrets/rotate/team-a/db", rotator, nil, &res)
	if res.CurrentVersion != 2 {
		t.Fatalf("rotate: %+v", res)
	}
	e.wantErr("POST", "/v1/secrets/rotate/team-b/db", rotator, nil, 403, "permission_denied")
	if rec, _ := e.rec.last("secret:Rotate"); rec.Resource != "secret/team-b/db" || rec.ErrorCode != "permission_denied" {
		t.Fatalf("refused record: %q %q", rec.Resource, rec.ErrorCode)
	}
	// The Go client.
	c, err := client.New(e.url, client.WithToken(e.root))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.SecretSetRotation(ctx, "team-b/db", client.SecretRotationRequest{Every: "2h", With: "random:"}); err != nil {
		t.Fatal(err)
	}
	r, err := c.SecretRotate(ctx, "team-b/db")
	if err != nil || r.CurrentVersion != 2 {
		t.Fatalf("client rotate: %+v %v", r, err)
	}
	m, err := c.SecretDisableRotation(ctx, "team-b/db")
	if err != nil || m.Rotation != nil {
		t.Fatalf("client disable: %+v %v", m, err)
	}
	_, err = c.SecretRotate(ctx, "team-b/db")
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != "rotation_not_configured" {
		t.Fatalf("client rotate without config: %v", err)
	}
}

// TestSecretRotationAuditAndMetrics: on a real server, rotations count in
// the metrics without names, and the audit trail names the secret and the
// versions but holds neither the old nor the new value.
func TestSecretRotationAuditAndMetrics(t *testing.T) {
	b, stop := runServer(t, server.Config{})
	c, err := client.New(b.Addr, client.WithToken(b.RootToken))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const planted = "planted-rotation-value-51c2"
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer hook.Close()
	for _, n := range []string{"rotated/db", "failing/db"} {
		if _, err := c.SecretPut(ctx, n, client.SecretPutRequest{Fields: map[string]string{"password": planted}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SecretSetRotation(ctx, "rotated/db", client.SecretRotationRequest{Every: "1h", With: "random:length=20"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SecretSetRotation(ctx, "failing/db", client.SecretRotationRequest{Every: "1h", With: "webhook:" + hook.URL}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.SecretRotate(ctx, "rotated/db"); err != nil || r.CurrentVersion != 2 {
		t.Fatalf("rotate: %+v %v", r, err)
	}
	var ae *client.APIError
	if _, err := c.SecretRotate(ctx, "failing/db"); !errors.As(err, &ae) || ae.Code != "rotation_failed" || ae.StatusCode != http.StatusBadGateway {
		t.Fatalf("failing rotate: %v", err)
	}
	got, err := c.SecretGet(ctx, "rotated/db", client.SecretGetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	newValue := got.Fields["password"]
	st, metrics := doJSON(t, "GET", b.Addr+"/metrics", "", nil)
	if st != http.StatusOK {
		t.Fatalf("metrics: %d", st)
	}
	for _, want := range []string{`coffer_secret_rotations_total{result="ok"} 1`, `coffer_secret_rotations_total{result="failed"} 1`,
		`coffer_requests_total{action="secret:Rotate",code="rotation_failed",door="rest"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(string(metrics), "rotated/db") || strings.Contains(string(metrics), "failing/db") {
		t.Error("a secret name is a metric label")
	}
	stop()
	all := auditBytes(t, b.AuditDir)
	for _, want := range []string{`"secret/rotated/db"`, "secret_version=2 previous_version=1", "pending_version=2 secret_version=1"} {
		if !bytes.Contains(all, []byte(want)) {
			t.Errorf("the audit trail lacks %s", want)
		}
	}
	if bytes.Contains(all, []byte(planted)) || bytes.Contains(all, []byte(newValue)) {
		t.Fatal("a secret value is in the audit trail")
	}
}
