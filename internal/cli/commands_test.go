package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeAPI is a canned Coffer API: it answers "METHOD /escaped/path" with a
// status and body and records each request.
type fakeAPI struct {
	srv    *httptest.Server
	mu     sync.Mutex
	routes map[string]cannedReply
	reqs   []seenRequest
}

type cannedReply struct {
	status int
	body   string
}

type seenRequest struct {
	route string // METHOD /escaped/path
	query string
	auth  string
	body  string
}

func newFakeAPI(t *testing.T, routes map[string]cannedReply) *fakeAPI {
	t.Helper()
	f := &fakeAPI{routes: routes}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		route := r.Method + " " + r.URL.EscapedPath()
		f.mu.Lock()
		f.reqs = append(f.reqs, seenRequest{route: route, query: r.URL.RawQuery, auth: r.Header.Get("Authorization"), body: string(b)})
		reply, ok := f.routes[route]
		f.mu.Unlock()
		if !ok {
			reply = cannedReply{404, `{"error":{"code":"not_found","message":"no route ` + route + `"}}`}
		}
		if reply.status != http.StatusNoContent {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(reply.status)
		_, _ = io.WriteString(w, reply.body)
	}))
	t.Cleanup(f.srv.Close)
	t.Setenv("COFFER_ADDR", f.srv.URL)
	t.Setenv("COFFER_TOKEN", "test-token")
	t.Setenv("COFFER_CACERT", "")
	t.Setenv("COFFER_SKIP_VERIFY", "")
	return f
}

// set changes the reply of a route.
func (f *fakeAPI) set(route string, reply cannedReply) {
	f.mu.Lock()
	f.routes[route] = reply
	f.mu.Unlock()
}

// last returns the last request the fake saw.
func (f *fakeAPI) last(t *testing.T) seenRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	return f.reqs[len(f.reqs)-1]
}

// runCLI runs the command line in process.
func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// sameJSON fails unless got and want hold the same JSON value.
func sameJSON(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("not JSON: %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %q: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("JSON = %s, want %s", gb, wb)
	}
}

const testKey = `{"id":"k1","aliases":["alias/app"],"description":"app data","state":"Enabled",
"created_at":"2026-01-02T03:04:05Z","primary_version":2,
"versions":[{"version":1,"created_at":"2026-01-02T03:04:05Z"},{"version":2,"created_at":"2026-02-02T03:04:05Z"}],
"rotation_period":"90d","last_rotated_at":"2026-02-02T03:04:05Z","next_rotation_at":"2026-05-03T03:04:05Z",
"tags":{"team":"pay","env":"prod"}}`

func TestKeyDescribeHuman(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{"GET /v1/keys/alias%2Fapp": {200, testKey}})
	code, out, errOut := runCLI(t, "", "key", "describe", "alias/app")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got := f.last(t); got.auth != "Bearer test-token" {
		t.Errorf("Authorization = %q", got.auth)
	}
	want := `ID:               k1
Aliases:          alias/app
Description:      app data
State:            Enabled
Created:          2026-01-02T03:04:05Z
Primary version:  2
Versions:         2
Rotation period:  90d
Last rotated:     2026-02-02T03:04:05Z
Next rotation:    2026-05-03T03:04:05Z
Tags:             env=prod, team=pay
`
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

func TestKeyDescribeJSON(t *testing.T) {
	newFakeAPI(t, map[string]cannedReply{"GET /v1/keys/k1": {200, testKey}})
	code, out, errOut := runCLI(t, "", "-o", "json", "key", "describe", "k1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameJSON(t, out, testKey)
	if !strings.HasPrefix(out, "{\n  \"id\"") {
		t.Errorf("JSON not indented: %q", out)
	}
}

func TestKeyList(t *testing.T) {
	newFakeAPI(t, map[string]cannedReply{"GET /v1/keys": {200, `{"keys":[` + testKey + `,{"id":"k2","aliases":[],"state":"Disabled","created_at":"2026-03-01T00:00:00Z","primary_version":1,"versions":[]}]}`}})
	code, out, errOut := runCLI(t, "", "key", "list")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `ID  ALIASES    STATE     VERSION  ROTATION  CREATED               DESCRIPTION
k1  alias/app  Enabled   2        90d       2026-01-02T03:04:05Z  app data
k2  -          Disabled  1        -         2026-03-01T00:00:00Z  -
`
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

func TestKeyListEmpty(t *testing.T) {
	newFakeAPI(t, map[string]cannedReply{"GET /v1/keys": {200, `{"keys":null}`}})
	code, out, errOut := runCLI(t, "", "key", "list")
	if code != 0 || out != "" || errOut != "No keys.\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, "", "key", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	sameJSON(t, out, `{"keys":[]}`)
}

func TestKeyCreate(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{"POST /v1/keys": {201, testKey}})
	code, _, errOut := runCLI(t, "", "key", "create", "--alias", "alias/app", "--description", "app data",
		"--rotation-period", "90d", "--tag", "team=pay", "--tag", "env=prod=yes")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"alias":"alias/app","description":"app data","rotation_period":"90d","tags":{"team":"pay","env":"prod=yes"}}`)
}

func TestKeyUpdate(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{"PATCH /v1/keys/alias%2Fapp": {200, testKey}})
	if code, _, errOut := runCLI(t, "", "key", "update", "alias/app", "--rotation-period", "off"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"rotation_period":""}`)
	if code, _, errOut := runCLI(t, "", "key", "update", "alias/app", "--description", ""); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"description":""}`)
}

func TestKeyActions(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"POST /v1/keys/alias%2Fapp/enable":            {200, testKey},
		"POST /v1/keys/alias%2Fapp/disable":           {200, testKey},
		"POST /v1/keys/alias%2Fapp/rotate":            {200, testKey},
		"POST /v1/keys/alias%2Fapp/cancel-deletion":   {200, testKey},
		"POST /v1/keys/alias%2Fapp/schedule-deletion": {200, testKey},
	})
	for _, action := range []string{"enable", "disable", "rotate", "cancel-deletion", "schedule-deletion"} {
		args := []string{"key", action, "alias/app"}
		if action == "schedule-deletion" {
			args = append(args, "--yes")
		}
		if code, _, errOut := runCLI(t, "", args...); code != 0 {
			t.Errorf("%s: exit %d: %s", action, code, errOut)
		}
		if got := f.last(t).route; got != "POST /v1/keys/alias%2Fapp/"+action {
			t.Errorf("%s: route %s", action, got)
		}
	}
	sameJSON(t, f.last(t).body, `{"pending_days":30}`)
}

func TestAliases(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"POST /v1/aliases":             {201, `{"name":"alias/x","key_id":"k1"}`},
		"GET /v1/aliases":              {200, `{"aliases":[{"name":"alias/app","key_id":"k1"},{"name":"alias/x","key_id":"k1"}]}`},
		"DELETE /v1/aliases/alias%2Fx": {204, ""},
	})
	code, out, errOut := runCLI(t, "", "key", "alias", "create", "alias/x", "k1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"name":"alias/x","key_id":"k1"}`)
	if out != "Alias:   alias/x\nKey ID:  k1\n" {
		t.Errorf("create stdout %q", out)
	}

	code, out, _ = runCLI(t, "", "key", "alias", "list", "--key", "k1")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if q := f.last(t).query; q != "key_id=k1" {
		t.Errorf("query %q", q)
	}
	if out != "ALIAS      KEY ID\nalias/app  k1\nalias/x    k1\n" {
		t.Errorf("list stdout %q", out)
	}

	code, out, _ = runCLI(t, "", "key", "alias", "delete", "alias/x")
	if code != 0 || out != "Deleted alias/x\n" {
		t.Errorf("delete: exit %d, stdout %q", code, out)
	}
}

func TestEncryptDecrypt(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"POST /v1/kms/encrypt":   {200, `{"ciphertext":"AQIDBA==","key_id":"k1","key_version":2}`},
		"POST /v1/kms/decrypt":   {200, `{"plaintext":"aGVsbG8K","key_id":"k1","key_version":2}`},
		"POST /v1/kms/reencrypt": {200, `{"ciphertext":"BQYH","source_key_id":"k1","source_key_version":1,"key_id":"k2","key_version":1}`},
	})

	// Plaintext from stdin, byte for byte.
	code, out, errOut := runCLI(t, "hello\n", "kms", "encrypt", "--key", "alias/app", "--context", "tenant=acme")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if out != "AQIDBA==\n" {
		t.Errorf("encrypt stdout %q", out)
	}
	sameJSON(t, f.last(t).body, `{"key_id":"alias/app","plaintext":"aGVsbG8K","context":{"tenant":"acme"}}`)

	// --plaintext, even empty.
	if code, _, errOut := runCLI(t, "ignored", "kms", "encrypt", "--key", "k1", "--plaintext", ""); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"key_id":"k1","plaintext":""}`)

	// Decrypt from stdin (base64 with line breaks), raw output.
	code, out, errOut = runCLI(t, "AQID\nBA==\n", "kms", "decrypt", "--context", "tenant=acme")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if out != "hello\n" {
		t.Errorf("decrypt stdout %q", out)
	}
	sameJSON(t, f.last(t).body, `{"ciphertext":"AQIDBA==","context":{"tenant":"acme"}}`)

	// Decrypt an argument, base64 output.
	code, out, _ = runCLI(t, "", "kms", "decrypt", "--base64", "AQIDBA")
	if code != 0 || out != "aGVsbG8K\n" {
		t.Errorf("decrypt --base64: exit %d, stdout %q", code, out)
	}

	// JSON output is the whole response.
	code, out, _ = runCLI(t, "", "-o", "json", "kms", "decrypt", "AQIDBA==")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	sameJSON(t, out, `{"plaintext":"aGVsbG8K","key_id":"k1","key_version":2}`)

	// Re-encrypt keeps the source context unless told otherwise.
	code, out, _ = runCLI(t, "", "kms", "reencrypt", "--dest-key", "k2", "--source-context", "a=b", "AQIDBA==")
	if code != 0 || out != "BQYH\n" {
		t.Errorf("reencrypt: exit %d, stdout %q", code, out)
	}
	sameJSON(t, f.last(t).body, `{"ciphertext":"AQIDBA==","source_context":{"a":"b"},"destination_key_id":"k2"}`)
}

func TestDataKeyAndRandom(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"POST /v1/kms/datakey":                   {200, `{"plaintext":"AQID","ciphertext":"BAUG","key_id":"k1","key_version":3}`},
		"POST /v1/kms/datakey-without-plaintext": {200, `{"ciphertext":"BAUG","key_id":"k1","key_version":3}`},
		"POST /v1/kms/random":                    {200, `{"random":"3q2+7w=="}`},
	})
	code, out, _ := runCLI(t, "", "kms", "datakey", "--key", "k1", "--bytes", "16")
	if code != 0 || out != "Key ID:       k1\nKey version:  3\nPlaintext:    AQID\nCiphertext:   BAUG\n" {
		t.Errorf("datakey: exit %d, stdout %q", code, out)
	}
	sameJSON(t, f.last(t).body, `{"key_id":"k1","bytes":16}`)

	code, out, _ = runCLI(t, "", "kms", "datakey", "--key", "k1", "--no-plaintext")
	if code != 0 || strings.Contains(out, "Plaintext") || f.last(t).route != "POST /v1/kms/datakey-without-plaintext" {
		t.Errorf("datakey --no-plaintext: exit %d, stdout %q", code, out)
	}

	code, out, _ = runCLI(t, "", "kms", "random", "--bytes", "4", "--hex")
	if code != 0 || out != "deadbeef\n" {
		t.Errorf("random --hex: exit %d, stdout %q", code, out)
	}
	sameJSON(t, f.last(t).body, `{"bytes":4}`)
	code, out, _ = runCLI(t, "", "kms", "random", "--bytes", "4")
	if code != 0 || out != "3q2+7w==\n" {
		t.Errorf("random: exit %d, stdout %q", code, out)
	}
}

func TestOperator(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"POST /v1/sys/init":   {200, `{"shares":["s-one","s-two","s-three"],"root_token":"root-tok"}`},
		"POST /v1/sys/unseal": {200, `{"initialized":true,"sealed":true,"threshold":2,"shares":3,"progress":1}`},
		"POST /v1/sys/seal":   {204, ""},
	})
	code, out, errOut := runCLI(t, "", "operator", "init", "--shares", "3", "--threshold", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"shares":3,"threshold":2}`)
	for _, want := range []string{"Unseal share 1:  s-one\n", "Unseal share 3:  s-three\n", "Root token:      root-tok\n", "WARNING: The unseal shares and the root token are shown only once."} {
		if !strings.Contains(out, want) {
			t.Errorf("init stdout lacks %q:\n%s", want, out)
		}
	}

	// The share comes from one line of stdin.
	code, out, errOut = runCLI(t, "s-one\nignored\n", "operator", "unseal")
	if code != 0 || out != "Unseal progress: 1/2\n" {
		t.Errorf("unseal: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	sameJSON(t, f.last(t).body, `{"share":"s-one"}`)

	f.set("POST /v1/sys/unseal", cannedReply{200, `{"initialized":true,"sealed":false,"threshold":2,"shares":3,"progress":0}`})
	code, out, _ = runCLI(t, "", "operator", "unseal", "s-two")
	if code != 0 || out != "Unsealed\n" {
		t.Errorf("unseal: exit %d, stdout %q", code, out)
	}
	code, _, _ = runCLI(t, "", "operator", "unseal", "--reset")
	if code != 0 {
		t.Errorf("unseal --reset: exit %d", code)
	}
	sameJSON(t, f.last(t).body, `{"reset":true}`)

	code, out, _ = runCLI(t, "", "operator", "seal", "--yes")
	if code != 0 || out != "Sealed\n" {
		t.Errorf("seal: exit %d, stdout %q", code, out)
	}
}

func TestOperatorStatusExitCode(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"GET /v1/sys/seal-status": {200, `{"initialized":true,"sealed":true,"threshold":3,"shares":5,"progress":2,"version":"0.1.0"}`},
	})
	code, out, errOut := runCLI(t, "", "operator", "status")
	if code != exitNo || errOut != "" {
		t.Errorf("sealed: exit %d, stderr %q", code, errOut)
	}
	want := "Initialized:      true\nSealed:           true\nTotal shares:     5\nThreshold:        3\nUnseal progress:  2/3\nVersion:          0.1.0\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if got := f.last(t).auth; got != "Bearer test-token" {
		t.Errorf("Authorization = %q", got)
	}

	f.set("GET /v1/sys/seal-status", cannedReply{200, `{"initialized":true,"sealed":false,"threshold":3,"shares":5}`})
	code, out, _ = runCLI(t, "", "operator", "status", "-o", "json")
	if code != 0 {
		t.Errorf("unsealed: exit %d", code)
	}
	sameJSON(t, out, `{"initialized":true,"sealed":false,"threshold":3,"shares":5,"progress":0,"version":""}`)
}

func TestTokens(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"POST /v1/auth/token/create":     {201, `{"token":"new-tok","accessor":"acc-1","display_name":"ci","root":false,"created_at":"2026-01-02T03:04:05Z","expires_at":"2026-01-02T04:04:05Z"}`},
		"GET /v1/auth/token/lookup-self": {200, `{"accessor":"acc-0","root":true,"created_at":"2026-01-02T03:04:05Z"}`},
		"POST /v1/auth/token/revoke":     {204, ""},
	})
	code, out, errOut := runCLI(t, "", "token", "create", "--ttl", "1h", "--display-name", "ci")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"ttl":"1h","display_name":"ci"}`)
	want := "Token:         new-tok\nAccessor:      acc-1\nDisplay name:  ci\nRoot:          false\nCreated:       2026-01-02T03:04:05Z\nExpires:       2026-01-02T04:04:05Z\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}

	code, out, _ = runCLI(t, "", "token", "lookup")
	if code != 0 || !strings.Contains(out, "Root:          true\n") || !strings.Contains(out, "Expires:       never\n") {
		t.Errorf("lookup: exit %d, stdout %q", code, out)
	}

	code, out, _ = runCLI(t, "", "token", "revoke", "--accessor", "acc-1", "--yes")
	if code != 0 || out != "Revoked\n" {
		t.Errorf("revoke: exit %d, stdout %q", code, out)
	}
	sameJSON(t, f.last(t).body, `{"accessor":"acc-1"}`)
}

func TestAPIErrorOutput(t *testing.T) {
	newFakeAPI(t, map[string]cannedReply{
		"GET /v1/keys/alias%2Fnope": {404, `{"error":{"code":"key_not_found","message":"key \"alias/nope\" does not exist","request_id":"r-1"}}`},
	})
	code, out, errOut := runCLI(t, "", "key", "describe", "alias/nope")
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
	if want := "coffer: error: key_not_found: key \"alias/nope\" does not exist (request id r-1)\n"; errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
}

func TestUnauthorizedHint(t *testing.T) {
	newFakeAPI(t, map[string]cannedReply{
		"GET /v1/keys": {401, `{"error":{"code":"unauthorized","message":"missing token"}}`},
	})
	t.Setenv("COFFER_TOKEN", "")
	code, _, errOut := runCLI(t, "", "key", "list")
	if code != 1 || !strings.Contains(errOut, "unauthorized: missing token (no token given: pass --token or set COFFER_TOKEN)") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestTokenFlagWinsOverEnv(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{"GET /v1/keys": {200, `{"keys":[]}`}})
	if code, _, errOut := runCLI(t, "", "--token", "flag-token", "key", "list"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got := f.last(t).auth; got != "Bearer flag-token" {
		t.Errorf("Authorization = %q", got)
	}
}

func TestNotACofferServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html>welcome to nginx</html>")
	}))
	t.Cleanup(srv.Close)
	t.Setenv("COFFER_ADDR", srv.URL)
	code, _, errOut := runCLI(t, "", "key", "list")
	if code != 1 || !strings.Contains(errOut, "is not a valid Coffer JSON answer (Content-Type text/html)") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestTLSHints(t *testing.T) {
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(tlsSrv.Close)
	t.Setenv("COFFER_TOKEN", "")
	t.Setenv("COFFER_CACERT", "")
	t.Setenv("COFFER_SKIP_VERIFY", "")

	// A self-signed certificate is refused, with a hint.
	t.Setenv("COFFER_ADDR", tlsSrv.URL)
	code, _, errOut := runCLI(t, "", "key", "list")
	if code != 1 || !strings.Contains(errOut, "certificate") || !strings.Contains(errOut, "pass --ca-cert or set COFFER_CACERT") {
		t.Errorf("untrusted: exit %d, stderr %q", code, errOut)
	}

	// Plain HTTP to a TLS port.
	plain := "http://" + strings.TrimPrefix(tlsSrv.URL, "https://")
	code, _, errOut = runCLI(t, "", "--address", plain, "key", "list")
	if code != 1 || !strings.Contains(errOut, "the server speaks HTTPS; use an https:// address") {
		t.Errorf("http to https: exit %d, stderr %q", code, errOut)
	}

	// TLS to a plain HTTP port.
	plainSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plainSrv.Close)
	secure := "https://" + strings.TrimPrefix(plainSrv.URL, "http://")
	code, _, errOut = runCLI(t, "", "--address", secure, "key", "list")
	if code != 1 || !strings.Contains(errOut, "the server speaks plain HTTP; use an http:// address") {
		t.Errorf("https to http: exit %d, stderr %q", code, errOut)
	}
}
