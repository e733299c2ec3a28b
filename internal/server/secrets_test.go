package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/server"
)

func u32(n uint32) *uint32 { return &n }

// wantErr checks a call's status and error code.
func (e *iamEnv) wantErr(method, path, token string, in any, status int, code string) string {
	e.t.Helper()
	st, raw := e.call(method, path, token, in)
	if st != status || !strings.Contains(string(raw), `"code":"`+code+`"`) {
		e.t.Fatalf("%s %s: %d %s, want %d %s", method, path, st, raw, status, code)
	}
	return string(raw)
}

// TestSecretsAPI drives every operation and error of /v1/secrets over real
// HTTP.
func TestSecretsAPI(t *testing.T) {
	e := newIAMEnv(t, nil)
	const p = "/v1/secrets/data/team-a/web/db"
	var v client.SecretVersion
	e.must("POST", p, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "pw-1", "user": "app"}, CAS: u32(0)}, &v)
	if v.Version != 1 || v.KeyID == "" || len(v.Stages) != 1 || v.Stages[0] != "current" {
		t.Fatalf("put: %+v", v)
	}
	// The audit record names the secret and the version.
	if rec, _ := e.rec.last("secret:Write"); rec.Resource != "secret/team-a/web/db" || rec.Detail != "secret_version=1" || rec.KeyID != v.KeyID {
		t.Fatalf("write record: resource %q detail %q key %q", rec.Resource, rec.Detail, rec.KeyID)
	}
	// check-and-set: a stale cas is 409 with the current version.
	raw := e.wantErr("POST", p, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "x"}, CAS: u32(0)}, 409, "cas_mismatch")
	if !strings.Contains(raw, "current version 1") || !strings.Contains(raw, `"current_version":1`) {
		t.Fatalf("conflict does not name the current version: %s", raw)
	}
	raw = e.wantErr("POST", "/v1/secrets/data/missing", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}, CAS: u32(1)}, 409, "cas_mismatch")
	if !strings.Contains(raw, `"current_version":0`) {
		t.Fatalf("conflict on a missing secret: %s", raw)
	}
	e.must("POST", p, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "pw-2"}, CAS: u32(1)}, &v)
	raw = e.wantErr("POST", p, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "x"}, CAS: u32(1)}, 409, "cas_mismatch")
	if !strings.Contains(raw, "current version 2") {
		t.Fatalf("conflict: %s", raw)
	}

	var got client.SecretValue
	e.must("GET", p, e.root, nil, &got)
	if got.Version != 2 || got.Fields["password"] != "pw-2" {
		t.Fatalf("get: %+v", got)
	}
	if rec, _ := e.rec.last("secret:Read"); rec.Detail != "secret_version=2" || rec.Resource != "secret/team-a/web/db" {
		t.Fatalf("read record: %q %q", rec.Resource, rec.Detail)
	}
	e.must("GET", p+"?stage=previous", e.root, nil, &got)
	if got.Version != 1 || got.Fields["user"] != "app" {
		t.Fatalf("previous: %+v", got)
	}
	e.must("GET", p+"?version=1", e.root, nil, &got)
	if got.Version != 1 {
		t.Fatalf("version 1: %+v", got)
	}
	e.wantErr("GET", p+"?version=9", e.root, nil, 404, "version_not_found")
	e.wantErr("GET", p+"?version=x", e.root, nil, 400, "invalid_request")
	e.wantErr("GET", p+"?version=1&stage=current", e.root, nil, 400, "invalid_request")
	e.wantErr("GET", p+"?stage=pending", e.root, nil, 404, "version_not_found")
	e.wantErr("GET", "/v1/secrets/data/nope", e.root, nil, 404, "secret_not_found")

	// Bad input: names, fields, size.
	e.wantErr("POST", "/v1/secrets/data/a@b", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, 400, "invalid_request")
	e.wantErr("POST", "/v1/secrets/data/a/", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, 400, "invalid_request")
	e.wantErr("POST", "/v1/secrets/data/"+strings.Repeat("n", 257), e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, 400, "invalid_request")
	e.wantErr("POST", "/v1/secrets/data/ok", e.root, client.SecretPutRequest{}, 400, "invalid_request")
	e.wantErr("POST", "/v1/secrets/data/ok", e.root, client.SecretPutRequest{Fields: map[string]string{"a/b": "v"}}, 400, "invalid_request")
	raw = e.wantErr("POST", "/v1/secrets/data/ok", e.root, client.SecretPutRequest{Fields: map[string]string{"k": strings.Repeat("x", 64<<10)}}, 413, "secret_too_large")
	if !strings.Contains(raw, "65536") {
		t.Fatalf("size error does not name the limit: %s", raw)
	}
	e.wantErr("POST", "/v1/secrets/data/ok", e.root, client.SecretPutRequest{Fields: map[string]string{"k": strings.Repeat("x", 2<<20)}}, 413, "body_too_large")
	e.wantErr("POST", "/v1/secrets/data/ok", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}, Key: "alias/none"}, 404, "key_not_found")

	// Metadata and history.
	var md client.SecretMetadata
	two := 2
	e.must("PATCH", "/v1/secrets/metadata/team-a/web/db", e.root, client.SecretMetadataUpdate{MaxVersions: &two, Set: map[string]string{"owner": "team-a"}}, &md)
	if md.MaxVersions != 2 || md.Custom["owner"] != "team-a" {
		t.Fatalf("metadata update: %+v", md)
	}
	e.wantErr("PATCH", "/v1/secrets/metadata/team-a/web/db", e.root, client.SecretMetadataUpdate{MaxVersions: new(int)}, 400, "invalid_request")
	e.must("POST", p, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "pw-3"}}, &v)
	e.must("GET", "/v1/secrets/metadata/team-a/web/db", e.root, nil, &md)
	if md.CurrentVersion != 3 || md.PreviousVersion != 2 || len(md.Versions) != 3 || !md.Versions[0].Destroyed || md.Versions[0].DestroyedAt == nil {
		t.Fatalf("history: %+v", md)
	}
	if bytes.Contains(secretJSON(t, md), []byte("pw-")) {
		t.Fatal("metadata carries a value")
	}
	e.wantErr("GET", p+"?version=1", e.root, nil, 410, "version_destroyed")

	// Destroy.
	e.must("POST", "/v1/secrets/destroy/team-a/web/db", e.root, client.SecretDestroyRequest{Versions: []uint32{2}}, &md)
	e.wantErr("GET", p+"?stage=previous", e.root, nil, 410, "version_destroyed")
	e.wantErr("POST", "/v1/secrets/destroy/team-a/web/db", e.root, client.SecretDestroyRequest{Versions: []uint32{7}}, 404, "version_not_found")
	e.wantErr("POST", "/v1/secrets/destroy/team-a/web/db", e.root, client.SecretDestroyRequest{}, 400, "invalid_request")

	// List.
	e.must("POST", "/v1/secrets/data/team-a/api/key", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, nil)
	e.must("POST", "/v1/secrets/data/team-b/x", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, nil)
	var l client.SecretList
	e.must("GET", "/v1/secrets?prefix=team-a/&limit=1", e.root, nil, &l)
	if len(l.Secrets) != 1 || l.Secrets[0].Name != "team-a/api/key" || l.Next != "team-a/api/key" {
		t.Fatalf("list page 1: %+v", l)
	}
	after := l.Next
	l = client.SecretList{}
	e.must("GET", "/v1/secrets?prefix=team-a/&limit=1&after="+after, e.root, nil, &l)
	if len(l.Secrets) != 1 || l.Secrets[0].Name != "team-a/web/db" || l.Next != "" {
		t.Fatalf("list page 2: %+v", l)
	}
	e.wantErr("GET", "/v1/secrets?limit=5000", e.root, nil, 400, "invalid_request")
	e.wantErr("GET", "/v1/secrets?limit=x", e.root, nil, 400, "invalid_request")

	// Delete, undelete, and the window.
	e.wantErr("POST", "/v1/secrets/delete/team-b/x", e.root, client.SecretDeleteRequest{Window: "1h"}, 400, "invalid_request")
	e.wantErr("POST", "/v1/secrets/delete/team-b/x", e.root, client.SecretDeleteRequest{Window: "soon"}, 400, "invalid_request")
	e.wantErr("POST", "/v1/secrets/undelete/team-b/x", e.root, nil, 409, "secret_not_deleted")
	e.must("POST", "/v1/secrets/delete/team-b/x", e.root, client.SecretDeleteRequest{Window: "2d"}, &md)
	if md.DeletedAt == nil || md.PurgeAt == nil || md.PurgeAt.Sub(*md.DeletedAt) != 48*time.Hour {
		t.Fatalf("delete: %+v", md)
	}
	e.wantErr("GET", "/v1/secrets/data/team-b/x", e.root, nil, 410, "secret_deleted")
	e.wantErr("POST", "/v1/secrets/data/team-b/x", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, 410, "secret_deleted")
	e.must("POST", "/v1/secrets/undelete/team-b/x", e.root, nil, &md)
	e.must("GET", "/v1/secrets/data/team-b/x", e.root, nil, &got)
	e.must("POST", "/v1/secrets/delete/team-b/x", e.root, client.SecretDeleteRequest{}, &md)
	if md.PurgeAt.Sub(*md.DeletedAt) != 7*24*time.Hour {
		t.Fatalf("default window: %+v", md)
	}
	e.offset.Add(int64(7*24*time.Hour + time.Minute))
	e.wantErr("POST", "/v1/secrets/undelete/team-b/x", e.root, nil, 410, "recovery_window_ended")
}

func secretJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSecretsAuthorization: a policy on secret/team-a/* reads team a's
// secrets and nothing else, and cannot write with secret:Read only; a
// pod's ${principal.namespace} template reads only its namespace.
func TestSecretsAuthorization(t *testing.T) {
	e := newIAMEnv(t, nil)
	for _, n := range []string{"team-a/db", "team-b/db"} {
		e.must("POST", "/v1/secrets/data/"+n, e.root, client.SecretPutRequest{Fields: map[string]string{"password": "pw-" + n}}, nil)
	}
	reader := e.policyToken("team-a-read", `statements:
  - effect: allow
    actions: [secret:Read, secret:List]
    resources: ["secret/team-a/*"]
`)
	var got client.SecretValue
	e.must("GET", "/v1/secrets/data/team-a/db", reader, nil, &got)
	if got.Fields["password"] != "pw-team-a/db" {
		t.Fatalf("team a read: %+v", got)
	}
	e.wantErr("GET", "/v1/secrets/data/team-b/db", reader, nil, 403, "permission_denied")
	e.wantErr("POST", "/v1/secrets/data/team-a/db", reader, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, 403, "permission_denied")
	e.wantErr("POST", "/v1/secrets/delete/team-a/db", reader, client.SecretDeleteRequest{}, 403, "permission_denied")
	e.wantErr("POST", "/v1/secrets/destroy/team-a/db", reader, client.SecretDestroyRequest{Versions: []uint32{1}}, 403, "permission_denied")
	e.wantErr("PATCH", "/v1/secrets/metadata/team-a/db", reader, client.SecretMetadataUpdate{}, 403, "permission_denied")
	e.wantErr("GET", "/v1/secrets/metadata/team-b/db", reader, nil, 403, "permission_denied")
	e.must("GET", "/v1/secrets/metadata/team-a/db", reader, nil, nil)
	// A list is authorized on its prefix.
	e.must("GET", "/v1/secrets?prefix=team-a/", reader, nil, nil)
	e.wantErr("GET", "/v1/secrets", reader, nil, 403, "permission_denied")
	e.wantErr("GET", "/v1/secrets?prefix=team-b/", reader, nil, 403, "permission_denied")
	if rec, _ := e.rec.last("secret:Read"); rec.Resource != "secret/team-b/db" || rec.ErrorCode != "permission_denied" {
		t.Fatalf("refused read record: %q %q", rec.Resource, rec.ErrorCode)
	}

	// Naming a key needs kms:GenerateDataKey on it; the default key does
	// not.
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/team-b-key"}, nil)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/team-a-key"}, nil)
	writer := e.policyToken("team-a-write", `statements:
  - effect: allow
    actions: [secret:Write, secret:Read]
    resources: ["secret/team-a/*"]
  - effect: allow
    actions: [kms:GenerateDataKey]
    resources: ["alias/team-a-key"]
`)
	e.must("POST", "/v1/secrets/data/team-a/new", writer, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, nil)
	raw := e.wantErr("POST", "/v1/secrets/data/team-a/new", writer, client.SecretPutRequest{Fields: map[string]string{"k": "v"}, Key: "alias/team-b-key"}, 403, "permission_denied")
	if !strings.Contains(raw, "kms:GenerateDataKey") {
		t.Fatalf("refusal does not name the key action: %s", raw)
	}
	var v client.SecretVersion
	e.must("POST", "/v1/secrets/data/team-a/new", writer, client.SecretPutRequest{Fields: map[string]string{"k": "v"}, Key: "alias/team-a-key"}, &v)
	if v.Version != 2 {
		t.Fatalf("write under its own key: %+v", v)
	}
	// The secret keeps its key for later writes, which need no key right.
	e.must("POST", "/v1/secrets/data/team-a/new", writer, client.SecretPutRequest{Fields: map[string]string{"k": "v2"}}, &v)
	// Reading a version under a named key is a use of that key: without
	// kms:Decrypt on it the read is refused and no value is sent; a
	// version under the default key needs no key right.
	raw = e.wantErr("GET", "/v1/secrets/data/team-a/new", writer, nil, 403, "permission_denied")
	if !strings.Contains(raw, "kms:Decrypt") || strings.Contains(raw, "v2") {
		t.Fatalf("refused read of a customer-key version: %s", raw)
	}
	e.must("GET", "/v1/secrets/data/team-a/new?version=1", writer, nil, &got)
	reader2 := e.policyToken("team-a-read-key", `statements:
  - effect: allow
    actions: [secret:Read]
    resources: ["secret/team-a/*"]
  - effect: allow
    actions: [kms:Decrypt]
    resources: ["alias/team-a-key"]
    conditions:
      StringEquals: {"context.coffer-secret": "team-a/new"}
`)
	e.must("GET", "/v1/secrets/data/team-a/new", reader2, nil, &got)
	if got.Fields["k"] != "v2" {
		t.Fatalf("read back: %+v", got)
	}

	// A pod reads its namespace's secrets through the template.
	e.must("PUT", "/v1/policies/ns-secrets", e.root, client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [secret:Read]
    resources: ["secret/${principal.namespace}/*"]
`}, nil)
	e.must("POST", "/v1/roles", e.root, client.Role{Name: "app", Policies: []string{"ns-secrets"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	e.registerKind()
	var pod client.CreateTokenResponse
	e.must("POST", "/v1/auth/kubernetes/login", "", client.KubernetesLoginRequest{Role: "app", JWT: e.jwtFor(e.jwtKey, nil)}, &pod)
	if pod.Namespace != "team-a" {
		t.Fatalf("pod namespace %q", pod.Namespace)
	}
	e.must("GET", "/v1/secrets/data/team-a/db", pod.Token, nil, &got)
	e.wantErr("GET", "/v1/secrets/data/team-b/db", pod.Token, nil, 403, "permission_denied")
}

// TestSecretsAuditAndMetrics: the audit file of a real server names the
// secret and version of every operation and holds no value; the metrics
// count reads and writes by action, without secret names.
func TestSecretsAuditAndMetrics(t *testing.T) {
	b, stop := runServer(t, server.Config{})
	c, err := client.New(b.Addr, client.WithToken(b.RootToken))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const planted = "planted-value-7f3a9c"
	if _, err := c.SecretPut(ctx, "audited/db", client.SecretPutRequest{Fields: map[string]string{"password": planted}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.SecretGet(ctx, "audited/db", client.SecretGetOptions{})
	if err != nil || got.Fields["password"] != planted {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := c.SecretMetadata(ctx, "audited/db"); err != nil {
		t.Fatal(err)
	}
	var ce *client.APIError
	if _, err := c.SecretPut(ctx, "audited/db", client.SecretPutRequest{Fields: map[string]string{"password": planted}, CAS: u32(0)}); !errors.As(err, &ce) || ce.Code != "cas_mismatch" || ce.CurrentVersion == nil || *ce.CurrentVersion != 1 {
		t.Fatalf("cas through the client: %v", err)
	}
	st, metrics := doJSON(t, "GET", b.Addr+"/metrics", "", nil)
	if st != http.StatusOK {
		t.Fatalf("metrics: %d", st)
	}
	for _, want := range []string{`coffer_requests_total{action="secret:Read",code="ok",door="rest"} 1`, `coffer_requests_total{action="secret:Write",code="ok",door="rest"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(string(metrics), "audited/db") {
		t.Error("a secret name is a metric label")
	}
	stop()
	all := auditBytes(t, b.AuditDir)
	if !bytes.Contains(all, []byte(`"secret/audited/db"`)) || !bytes.Contains(all, []byte("secret_version=1")) {
		t.Fatalf("the audit trail lacks the secret name or version")
	}
	if bytes.Contains(all, []byte(planted)) {
		t.Fatal("a secret value is in the audit trail")
	}
}

// auditBytes is every audit file under dir, concatenated (the trail as a
// reader of the disk sees it). A file that cannot be read fails the test.
func auditBytes(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		x, err := os.ReadFile(p)
		all = append(all, x...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}
