package server_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// TestSecretKeyRightNamesTheSecret: the kms:GenerateDataKey decision a
// write with --key needs carries the secret's name as context
// coffer-secret, so a policy can let team a's writers use a key for
// team-a/x and not for team-a/y.
func TestSecretKeyRightNamesTheSecret(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/team-a-key"}, nil)
	w := e.policyToken("key-for-x-only", `statements:
  - effect: allow
    actions: [secret:Write]
    resources: ["secret/team-a/*"]
  - effect: allow
    actions: [kms:GenerateDataKey]
    resources: [alias/team-a-key]
    conditions:
      StringEquals:
        context.coffer-secret: team-a/x
`)
	put := client.SecretPutRequest{Fields: map[string]string{"k": "v"}, Key: "alias/team-a-key"}
	e.must("POST", "/v1/secrets/data/team-a/x", w, put, nil)
	e.wantErr("POST", "/v1/secrets/data/team-a/y", w, put, 403, "permission_denied")
	// Nothing was written for the refused one.
	e.wantErr("GET", "/v1/secrets/metadata/team-a/y", e.root, nil, 404, "secret_not_found")
}

// TestSecretDestructiveRightsAreSecretDelete: a caller with every right
// but secret:Delete can neither delete, undelete nor destroy, and
// secret:Delete alone reads no value.
func TestSecretDestructiveRightsAreSecretDelete(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/secrets/data/team-a/db", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, nil)
	e.must("POST", "/v1/secrets/data/team-a/gone", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, nil)
	e.must("POST", "/v1/secrets/delete/team-a/gone", e.root, client.SecretDeleteRequest{}, nil)
	rw := e.policyToken("rw", `statements:
  - effect: allow
    actions: [secret:Read, secret:Write, secret:List, secret:Rotate]
    resources: ["secret/team-a/*"]
`)
	e.wantErr("POST", "/v1/secrets/delete/team-a/db", rw, client.SecretDeleteRequest{}, 403, "permission_denied")
	e.wantErr("POST", "/v1/secrets/undelete/team-a/gone", rw, nil, 403, "permission_denied")
	e.wantErr("POST", "/v1/secrets/destroy/team-a/db", rw, client.SecretDestroyRequest{Versions: []uint32{1}}, 403, "permission_denied")
	del := e.policyToken("del", `statements:
  - effect: allow
    actions: [secret:Delete]
    resources: ["secret/team-a/*"]
`)
	e.wantErr("GET", "/v1/secrets/data/team-a/db", del, nil, 403, "permission_denied")
	e.wantErr("GET", "/v1/secrets/metadata/team-a/db", del, nil, 403, "permission_denied")
	e.wantErr("POST", "/v1/secrets/data/team-a/db", del, client.SecretPutRequest{Fields: map[string]string{"k": "x"}}, 403, "permission_denied")
	e.must("POST", "/v1/secrets/undelete/team-a/gone", del, nil, nil)
}

// TestSecretPathTricks: a caller allowed secret/a/* reads nothing outside
// it through escaped slashes, dot segments or a shared name prefix.
func TestSecretPathTricks(t *testing.T) {
	e := newIAMEnv(t, nil)
	const planted = "b-value-91c2"
	for _, n := range []string{"a/x", "b", "ab"} {
		e.must("POST", "/v1/secrets/data/"+n, e.root, client.SecretPutRequest{Fields: map[string]string{"k": planted + n}}, nil)
	}
	r := e.policyToken("a-only", `statements:
  - effect: allow
    actions: [secret:Read, secret:List, secret:Write, secret:Delete]
    resources: ["secret/a/*"]
`)
	for _, p := range []string{"a%2F..%2Fb", "a/%2E%2E/b", "a/./../b", "ab", "a%2Fx%2F..%2F..%2Fb", "A/x/../../b"} {
		for _, kind := range []string{"data", "metadata"} {
			st, raw := e.call("GET", "/v1/secrets/"+kind+"/"+p, r, nil)
			if st < 400 || st >= 500 || strings.Contains(string(raw), planted) {
				t.Errorf("GET %s %s: %d %s", kind, p, st, raw)
			}
		}
		for _, w := range []struct {
			path string
			body any
		}{
			{"/v1/secrets/data/", client.SecretPutRequest{Fields: map[string]string{"k": "overwritten"}}},
			{"/v1/secrets/delete/", client.SecretDeleteRequest{}},
			{"/v1/secrets/destroy/", client.SecretDestroyRequest{Versions: []uint32{1}}},
		} {
			if st, raw := e.call("POST", w.path+p, r, w.body); st < 400 || st >= 500 {
				t.Errorf("POST %s%s: %d %s", w.path, p, st, raw)
			}
		}
	}
	// The secrets outside a/ are untouched.
	for _, n := range []string{"b", "ab"} {
		var got client.SecretValue
		e.must("GET", "/v1/secrets/data/"+n, e.root, nil, &got)
		if got.Version != 1 || got.Fields["k"] != planted+n {
			t.Fatalf("%s changed: %+v", n, got)
		}
	}
	// A list cannot climb out of the prefix either.
	for _, prefix := range []string{"a/../", "a/..", "a%2F..%2F"} {
		st, raw := e.call("GET", "/v1/secrets?prefix="+url.QueryEscape(prefix), r, nil)
		if st >= 500 || strings.Contains(string(raw), `"name":"b"`) || strings.Contains(string(raw), `"name":"ab"`) {
			t.Errorf("list %q: %d %s", prefix, st, raw)
		}
	}
}

// TestSecretBadInputIs4xx sends junk to every secrets route: each answer
// is the documented 4xx, never a 5xx, and none echoes a field value.
func TestSecretBadInputIs4xx(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/secrets/data/a/b", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, nil)
	const planted = "planted-4e1d"
	cases := []struct {
		m, p, body string
		status     int
		code       string
	}{
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"v"},"cas":-1}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"v"},"cas":1e99}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"v"},"cas":4294967296}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"v"},"cas":"1"}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"` + planted + `"},"cas":7}`, 409, "cas_mismatch"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":null}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"bad name":"` + planted + `"}}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":1}}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"` + planted + `"},"key":"alias/nope"}`, 404, "key_not_found"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"` + planted + `"},"extra":1}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `[]`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"` + planted + `"}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b", `{"fields":{"k":"` + strings.Repeat("x", 64<<10) + `"}}`, 413, "secret_too_large"},
		{"POST", "/v1/secrets/data/", `{"fields":{"k":"v"}}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b/", `{"fields":{"k":"v"}}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/%C3%A9", `{"fields":{"k":"v"}}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/a/b%00", `{"fields":{"k":"v"}}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/data/" + strings.Repeat("a", 300), `{"fields":{"k":"v"}}`, 400, "invalid_request"},
		{"GET", "/v1/secrets/data/a/b?version=-1", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets/data/a/b?version=0", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets/data/a/b?version=4294967295", ``, 404, "version_not_found"},
		{"GET", "/v1/secrets/data/a/b?version=99999999999999999999", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets/data/a/b?stage=bogus", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets/data/a/b?stage=pending", ``, 404, "version_not_found"},
		{"GET", "/v1/secrets/data/a/b?version=1&stage=current", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets?limit=-1", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets?limit=1001", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets?limit=99999999999999999999999", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets?prefix=%C3%A9", ``, 400, "invalid_request"},
		{"GET", "/v1/secrets?prefix=a&after=" + strings.Repeat("z", 400), ``, 400, "invalid_request"},
		{"PATCH", "/v1/secrets/metadata/a/b", `{"max_versions":0}`, 400, "invalid_request"},
		{"PATCH", "/v1/secrets/metadata/a/b", `{"max_versions":-5}`, 400, "invalid_request"},
		{"PATCH", "/v1/secrets/metadata/a/b", `{"max_versions":99999999999999999999}`, 400, "invalid_request"},
		{"PATCH", "/v1/secrets/metadata/a/b", `{"set":{"":"x"}}`, 400, "invalid_request"},
		{"PATCH", "/v1/secrets/metadata/a/b", `{"set":{"k":"` + strings.Repeat("x", 2000) + `"}}`, 400, "invalid_request"},
		{"PATCH", "/v1/secrets/metadata/nope", `{}`, 404, "secret_not_found"},
		{"POST", "/v1/secrets/destroy/a/b", `{"versions":[]}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/destroy/a/b", `{"versions":null}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/destroy/a/b", `{"versions":[-1]}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/destroy/a/b", `{"versions":[99]}`, 404, "version_not_found"},
		{"POST", "/v1/secrets/delete/a/b", `{"window":"0d"}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/delete/a/b", `{"window":"-1d"}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/delete/a/b", `{"window":"99999999999999d"}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/delete/a/b", `{"window":"1h"}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/delete/a/b", `{"window":"31d"}`, 400, "invalid_request"},
		{"POST", "/v1/secrets/undelete/a/b", ``, 409, "secret_not_deleted"},
		{"POST", "/v1/secrets/undelete/nope", ``, 404, "secret_not_found"},
	}
	for _, c := range cases {
		st, raw := e.rawCall(c.m, c.p, e.root, c.body)
		if st != c.status || !strings.Contains(string(raw), `"code":"`+c.code+`"`) {
			t.Errorf("%s %.60s %.60s: %d %.300s, want %d %s", c.m, c.p, c.body, st, raw, c.status, c.code)
		}
		if strings.Contains(string(raw), planted) {
			t.Errorf("%s %.60s: the answer echoes a value: %.300s", c.m, c.p, raw)
		}
	}
	// Nothing of the refused writes landed.
	var md client.SecretMetadata
	e.must("GET", "/v1/secrets/metadata/a/b", e.root, nil, &md)
	if md.LatestVersion != 1 || md.DeletedAt != nil {
		t.Fatalf("a refused request changed the secret: %+v", md)
	}
}

// rawCall sends body as it is (it need not be JSON) and returns the
// status and the answer.
func (e *iamEnv) rawCall(method, path, token, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}
