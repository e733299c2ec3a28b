package server_test

// Bad input over real HTTP: every way a caller can get a request wrong must
// give the documented status, a stable JSON error code and a message that
// says what to fix, and never a 5xx (except 503 while sealed).

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// apiEnv is one Coffer API (in-memory storage) and a way to call it.
type apiEnv struct {
	t      testing.TB
	api    *server.Server
	send   func(method, path string, hdr http.Header, body []byte) (int, http.Header, []byte)
	root   string // root token
	user   string // non-root token
	shares []string
}

func newAPI(t testing.TB) *apiEnv {
	t.Helper()
	bar := barrier.New(inmem.New())
	s := sys.New(bar, nil)
	return &apiEnv{t: t, api: server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})}
}

// newHTTPEnv serves a fresh API on a loopback httptest server.
func newHTTPEnv(t testing.TB) *apiEnv {
	e := newAPI(t)
	ts := httptest.NewServer(e.api)
	t.Cleanup(ts.Close)
	hc := ts.Client()
	e.send = func(method, path string, hdr http.Header, body []byte) (int, http.Header, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, ts.URL+path, rd)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: reading the answer: %v", method, path, err)
		}
		return resp.StatusCode, resp.Header, raw
	}
	return e
}

// newRecorderEnv calls the handler in-process with httptest.NewRecorder.
func newRecorderEnv(t testing.TB) *apiEnv {
	e := newAPI(t)
	e.send = func(method, path string, hdr http.Header, body []byte) (int, http.Header, []byte) {
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		for k, v := range hdr {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		e.api.ServeHTTP(rec, req)
		return rec.Code, rec.Header(), rec.Body.Bytes()
	}
	return e
}

func bearer(tok string) http.Header {
	if tok == "" {
		return http.Header{}
	}
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// call sends in (raw bytes, a string, or a value to marshal) with token and
// returns the status and body.
func (e *apiEnv) call(method, path, token string, in any) (int, []byte) {
	e.t.Helper()
	var body []byte
	switch v := in.(type) {
	case nil:
	case []byte:
		body = v
	case string:
		body = []byte(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			e.t.Fatal(err)
		}
		body = b
	}
	st, _, raw := e.send(method, path, bearer(token), body)
	return st, raw
}

// must calls and decodes a 2xx answer into out.
func (e *apiEnv) must(method, path, token string, in, out any) {
	e.t.Helper()
	st, raw := e.call(method, path, token, in)
	if st/100 != 2 {
		e.t.Fatalf("%s %s: status %d: %s", method, path, st, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
}

// bootstrap initializes the server through the API and, when unseal is set,
// unseals it and creates a non-root token.
func (e *apiEnv) bootstrap(shares, threshold int, unseal bool) {
	e.t.Helper()
	var ir client.InitResponse
	e.must("POST", "/v1/sys/init", "", client.InitRequest{Shares: shares, Threshold: threshold}, &ir)
	e.root, e.shares = ir.RootToken, ir.Shares
	if !unseal {
		return
	}
	var st client.SealStatus
	for _, sh := range ir.Shares[:threshold] {
		e.must("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: sh}, &st)
	}
	if st.Sealed {
		e.t.Fatalf("still sealed after %d shares: %+v", threshold, st)
	}
	// The user token may use and manage keys, nothing else.
	e.must("PUT", "/v1/policies/keys-user", e.root, client.PutPolicyRequest{Document: keysUserPolicy}, nil)
	var tr client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", e.root, client.CreateTokenRequest{DisplayName: "app", TTL: "1h", Policies: []string{"keys-user"}}, &tr)
	if tr.Root {
		e.t.Fatal("the created token is root")
	}
	e.user = tr.Token
}

// keysUserPolicy lets a token use and manage every key.
const keysUserPolicy = `statements:
  - sid: Keys
    effect: allow
    actions: ["kms:*", "key:*"]
    resources: ["*"]
  - sid: KeyLists
    effect: allow
    actions: [key:List, key:ListAliases, kms:GenerateRandom]
    resources: ["*"]
`

func (e *apiEnv) createKey(req client.CreateKeyRequest) client.Key {
	e.t.Helper()
	var k client.Key
	e.must("POST", "/v1/keys", e.root, req, &k)
	return k
}

func (e *apiEnv) encrypt(keyID string, pt []byte, ec map[string]string) []byte {
	e.t.Helper()
	var r client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: keyID, Plaintext: pt, Context: ec}, &r)
	return r.Ciphertext
}

// fixtures are the keys and ciphertexts the bad-input cases point at.
type fixtures struct {
	a, b, disabled, pending client.Key
	ctA                     []byte // under a, version 1, context tenant=t1; a is now at version 2
	ctDisabled, ctPending   []byte
	ctx                     map[string]string
}

func makeFixtures(e *apiEnv) *fixtures {
	e.t.Helper()
	fx := &fixtures{ctx: map[string]string{"tenant": "t1"}}
	fx.a = e.createKey(client.CreateKeyRequest{Alias: "alias/app", Description: "bad input tests"})
	fx.ctA = e.encrypt(fx.a.ID, []byte("hello, coffer"), fx.ctx)
	e.must("POST", "/v1/keys/"+fx.a.ID+"/rotate", e.root, nil, &fx.a)
	if fx.a.PrimaryVersion != 2 {
		e.t.Fatalf("after rotate: primary version %d", fx.a.PrimaryVersion)
	}
	fx.b = e.createKey(client.CreateKeyRequest{})
	fx.disabled = e.createKey(client.CreateKeyRequest{})
	fx.ctDisabled = e.encrypt(fx.disabled.ID, []byte("d"), nil)
	e.must("POST", "/v1/keys/"+fx.disabled.ID+"/disable", e.root, nil, nil)
	fx.pending = e.createKey(client.CreateKeyRequest{})
	fx.ctPending = e.encrypt(fx.pending.ID, []byte("p"), nil)
	e.must("POST", "/v1/keys/"+fx.pending.ID+"/schedule-deletion", e.root, client.ScheduleDeletionRequest{PendingDays: 7}, nil)
	return fx
}

// Who a case calls as.
const (
	asRoot = ""
	asUser = "user"
	asAnon = "anon" // no credential at all
)

type badCase struct {
	name   string
	method string
	path   string
	as     string      // asRoot, asUser or asAnon
	hdr    http.Header // replaces the credential when set
	body   []byte
	sealed bool // against the sealed server

	status int
	code   string
	msg    string // substring of the message
}

func js(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// mutate returns a copy of ct with f applied.
func mutate(ct []byte, f func(c []byte) []byte) []byte { return f(bytes.Clone(ct)) }

func decryptBody(ct []byte, ec map[string]string) []byte {
	return js(client.DecryptRequest{Ciphertext: ct, Context: ec})
}

// badCases builds the table. Bodies only depend on fx and a foreign share
// (a share of another server).
func badCases(fx *fixtures, foreignShare string, ownShare string) []badCase {
	const (
		enc  = "/v1/kms/encrypt"
		dec  = "/v1/kms/decrypt"
		dk   = "/v1/kms/datakey"
		rnd  = "/v1/kms/random"
		benc = "/v1/kms/encrypt-batch"
		bdec = "/v1/kms/decrypt-batch"
		bad  = http.StatusBadRequest
		inv  = "invalid_request"
		ivc  = "invalid_ciphertext"
	)
	okEnc := `{"key_id":"alias/app","plaintext":"aGk="}`
	ct := fx.ctA
	setVersion := func(v byte) func([]byte) []byte {
		return func(c []byte) []byte { c[19], c[20], c[21], c[22] = 0, 0, 0, v; return c }
	}
	flip := func(i int) func([]byte) []byte {
		return func(c []byte) []byte {
			if i < 0 {
				i += len(c)
			}
			c[i] ^= 0x01
			return c
		}
	}
	corrupt := func(share string) string {
		raw, err := base64.StdEncoding.DecodeString(share)
		if err != nil {
			panic(err)
		}
		raw[5] ^= 0x40
		return b64(raw)
	}
	big := make([]byte, keys.MaxPlaintext+1)
	items := func(n int) []client.EncryptRequest {
		its := make([]client.EncryptRequest, n)
		for i := range its {
			its[i] = client.EncryptRequest{Plaintext: []byte{byte(i)}}
		}
		return its
	}
	unknownID := "0b5e5c6a-9d1f-4c3e-8a7b-2f4d6e8a0c1d"

	return []badCase{
		// Malformed JSON.
		{name: "truncated JSON", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintext":`), status: bad, code: inv, msg: "truncated JSON"},
		{name: "unquoted key", method: "POST", path: enc, body: []byte(`{key_id:"alias/app"}`), status: bad, code: inv, msg: "malformed JSON at byte 2"},
		{name: "trailing comma", method: "POST", path: dec, body: []byte(`{"ciphertext":"AAAA",}`), status: bad, code: inv, msg: "malformed JSON"},
		{name: "not JSON at all", method: "POST", path: "/v1/keys", body: []byte(`alias=app`), status: bad, code: inv, msg: "malformed JSON at byte 1"},
		// Unknown fields.
		{name: "unknown field", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintxt":"aGk="}`), status: bad, code: inv, msg: `unknown field "plaintxt"`},
		{name: "unknown field on create", method: "POST", path: "/v1/keys", body: []byte(`{"alias":"alias/x1","rotation":"90d"}`), status: bad, code: inv, msg: `unknown field "rotation"`},
		{name: "unknown field in batch item", method: "POST", path: benc, body: []byte(`{"key_id":"alias/app","items":[{"plaintext":"aGk=","foo":1}]}`), status: bad, code: inv, msg: `unknown field "foo"`},
		// Wrong JSON types.
		{name: "key_id number", method: "POST", path: enc, body: []byte(`{"key_id":123,"plaintext":"aGk="}`), status: bad, code: inv, msg: `field "key_id" must be a string, not a JSON number`},
		{name: "plaintext number", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintext":12}`), status: bad, code: inv, msg: `field "plaintext" must be a base64 string`},
		{name: "context string", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintext":"aGk=","context":"x"}`), status: bad, code: inv, msg: `field "context" must be an object, not a JSON string`},
		{name: "context value number", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintext":"aGk=","context":{"a":1}}`), status: bad, code: inv, msg: `field "context" must be an object with a string as each value`},
		{name: "bytes string", method: "POST", path: dk, body: []byte(`{"key_id":"alias/app","bytes":"32"}`), status: bad, code: inv, msg: `field "bytes" must be an integer, not a JSON string`},
		{name: "bytes fraction", method: "POST", path: rnd, body: []byte(`{"bytes":1.5}`), status: bad, code: inv, msg: `field "bytes" must be an integer, not a JSON number 1.5`},
		{name: "body is an array", method: "POST", path: enc, body: []byte(`[1,2]`), status: bad, code: inv, msg: "must be a JSON object, not a JSON array"},
		{name: "body is a string", method: "POST", path: dec, body: []byte(`"CF"`), status: bad, code: inv, msg: "must be a JSON object, not a JSON string"},
		{name: "reset not bool", method: "POST", path: "/v1/sys/unseal", body: []byte(`{"reset":"yes"}`), status: bad, code: inv, msg: `field "reset" must be true or false`},
		{name: "shares string", method: "POST", path: "/v1/sys/init", body: []byte(`{"shares":"5","threshold":3}`), status: bad, code: inv, msg: `field "shares" must be an integer`},
		{name: "items not array", method: "POST", path: benc, body: []byte(`{"key_id":"alias/app","items":"x"}`), status: bad, code: inv, msg: `field "items" must be an array`},
		{name: "batch item context wrong", method: "POST", path: bdec, body: []byte(`{"items":[{"ciphertext":"AAAA","context":{"a":[]}}]}`), status: bad, code: inv, msg: `field "items.context" must be an object with a string as each value`},
		// Bad base64.
		{name: "plaintext not base64", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintext":"not base64!"}`), status: bad, code: inv, msg: "not valid standard base64"},
		{name: "ciphertext url-safe base64", method: "POST", path: dec, body: []byte(`{"ciphertext":"Q0YB-_-_"}`), status: bad, code: inv, msg: "not URL-safe"},
		{name: "plaintext unpadded base64", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintext":"aGk"}`), status: bad, code: inv, msg: "with = padding"},
		// Empty body and trailing data.
		{name: "empty body", method: "POST", path: enc, body: nil, status: bad, code: inv, msg: "request body is empty"},
		{name: "whitespace body", method: "POST", path: "/v1/keys", body: []byte(" \n\t "), status: bad, code: inv, msg: "request body is empty"},
		{name: "second object", method: "POST", path: enc, body: []byte(okEnc + `{}`), status: bad, code: inv, msg: "data after the JSON object"},
		{name: "trailing garbage", method: "POST", path: enc, body: []byte(okEnc + ` garbage`), status: bad, code: inv, msg: "send exactly one object"},
		// Size limits.
		{name: "body over 1 MiB", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintext":"` + strings.Repeat("A", server.MaxBody) + `"}`),
			status: http.StatusRequestEntityTooLarge, code: "body_too_large", msg: fmt.Sprintf("exceeds %d bytes", server.MaxBody)},
		{name: "padding over 1 MiB after the object", method: "POST", path: enc, body: []byte(okEnc + strings.Repeat(" ", server.MaxBody)),
			status: http.StatusRequestEntityTooLarge, code: "body_too_large", msg: "exceeds"},
		{name: "plaintext over 64 KiB", method: "POST", path: enc, body: js(client.EncryptRequest{KeyID: "alias/app", Plaintext: big}),
			status: bad, code: "plaintext_too_large", msg: "envelope encryption"},
		{name: "batch item over 64 KiB", method: "POST", path: benc, body: js(client.BatchEncryptRequest{KeyID: "alias/app", Items: []client.EncryptRequest{{Plaintext: big}}}),
			status: http.StatusOK},
		// Unknown keys.
		{name: "unknown key id", method: "POST", path: enc, body: js(client.EncryptRequest{KeyID: unknownID, Plaintext: []byte("x")}), status: 404, code: "key_not_found", msg: "does not exist"},
		{name: "describe unknown key", method: "GET", path: "/v1/keys/" + unknownID, status: 404, code: "key_not_found", msg: unknownID},
		{name: "unknown alias", method: "POST", path: enc, body: js(client.EncryptRequest{KeyID: "alias/nope", Plaintext: []byte("x")}), status: 404, code: "key_not_found", msg: `alias "alias/nope" does not exist`},
		{name: "neither uuid nor alias", method: "POST", path: enc, body: js(client.EncryptRequest{KeyID: "my-key", Plaintext: []byte("x")}), status: 404, code: "key_not_found", msg: `aliases start with "alias/"`},
		{name: "missing key_id", method: "POST", path: enc, body: []byte(`{"plaintext":"aGk="}`), status: bad, code: inv, msg: "key_id is required"},
		{name: "datakey unknown alias", method: "POST", path: dk, body: []byte(`{"key_id":"alias/nope"}`), status: 404, code: "key_not_found", msg: "alias/nope"},
		// Key states.
		{name: "encrypt disabled key", method: "POST", path: enc, body: js(client.EncryptRequest{KeyID: fx.disabled.ID, Plaintext: []byte("x")}), status: 409, code: "key_disabled", msg: "enable it"},
		{name: "decrypt disabled key", method: "POST", path: dec, body: decryptBody(fx.ctDisabled, nil), status: 409, code: "key_disabled", msg: fx.disabled.ID},
		{name: "datakey disabled key", method: "POST", path: dk, body: js(client.DataKeyRequest{KeyID: fx.disabled.ID}), status: 409, code: "key_disabled", msg: "disabled"},
		{name: "encrypt pending key", method: "POST", path: enc, body: js(client.EncryptRequest{KeyID: fx.pending.ID, Plaintext: []byte("x")}), status: 409, code: "key_pending_deletion", msg: "cancel the deletion"},
		{name: "decrypt pending key", method: "POST", path: dec, body: decryptBody(fx.ctPending, nil), status: 409, code: "key_pending_deletion", msg: "scheduled for deletion"},
		{name: "rotate disabled key", method: "POST", path: "/v1/keys/" + fx.disabled.ID + "/rotate", status: 409, code: "invalid_key_state", msg: "only enabled keys rotate"},
		{name: "pending_days 3", method: "POST", path: "/v1/keys/" + fx.b.ID + "/schedule-deletion", body: []byte(`{"pending_days":3}`), status: bad, code: inv, msg: "between 7 and 30, not 3"},
		{name: "pending_days 31", method: "POST", path: "/v1/keys/" + fx.b.ID + "/schedule-deletion", body: []byte(`{"pending_days":31}`), status: bad, code: inv, msg: "between 7 and 30, not 31"},
		{name: "schedule deletion twice", method: "POST", path: "/v1/keys/" + fx.pending.ID + "/schedule-deletion", body: []byte(`{}`), status: 409, code: "invalid_key_state", msg: "already pending deletion"},
		// Ciphertexts.
		{name: "ciphertext missing", method: "POST", path: dec, body: []byte(`{}`), status: bad, code: inv, msg: "ciphertext is required"},
		{name: "ciphertext truncated", method: "POST", path: dec, body: decryptBody(ct[:30], fx.ctx), status: bad, code: ivc, msg: "it was truncated"},
		{name: "ciphertext too short", method: "POST", path: dec, body: decryptBody(ct[:2], fx.ctx), status: bad, code: ivc, msg: "too short"},
		{name: "ciphertext cut in the tag", method: "POST", path: dec, body: decryptBody(ct[:len(ct)-1], fx.ctx), status: bad, code: ivc, msg: "authentication failed"},
		{name: "not a coffer ciphertext", method: "POST", path: dec, body: decryptBody([]byte("hello world, hello world, hello world, hello world"), nil), status: bad, code: ivc, msg: "magic bytes"},
		{name: "format version 2", method: "POST", path: dec, body: decryptBody(mutate(ct, func(c []byte) []byte { c[2] = 2; return c }), fx.ctx), status: bad, code: ivc, msg: "format version 2 is not supported"},
		{name: "flipped body byte", method: "POST", path: dec, body: decryptBody(mutate(ct, flip(36)), fx.ctx), status: bad, code: ivc, msg: "authentication failed"},
		{name: "flipped tag byte", method: "POST", path: dec, body: decryptBody(mutate(ct, flip(-1)), fx.ctx), status: bad, code: ivc, msg: "the ciphertext was altered"},
		{name: "flipped nonce byte", method: "POST", path: dec, body: decryptBody(mutate(ct, flip(24)), fx.ctx), status: bad, code: ivc, msg: "authentication failed"},
		{name: "key version changed to an existing one", method: "POST", path: dec, body: decryptBody(mutate(ct, setVersion(2)), fx.ctx), status: bad, code: ivc, msg: "authentication failed"},
		{name: "key version that does not exist", method: "POST", path: dec, body: decryptBody(mutate(ct, setVersion(9)), fx.ctx), status: bad, code: ivc, msg: "has no version 9"},
		{name: "key version 0", method: "POST", path: dec, body: decryptBody(mutate(ct, setVersion(0)), fx.ctx), status: bad, code: ivc, msg: "key version 0 is invalid"},
		{name: "flipped key id byte", method: "POST", path: dec, body: decryptBody(mutate(ct, flip(10)), fx.ctx), status: 404, code: "key_not_found", msg: "does not exist on this server"},
		{name: "wrong encryption context", method: "POST", path: dec, body: decryptBody(ct, map[string]string{"tenant": "t2"}), status: bad, code: ivc, msg: "encryption context differs"},
		{name: "missing encryption context", method: "POST", path: dec, body: decryptBody(ct, nil), status: bad, code: ivc, msg: "encryption context differs"},
		{name: "extra encryption context pair", method: "POST", path: dec, body: decryptBody(ct, map[string]string{"tenant": "t1", "x": "y"}), status: bad, code: ivc, msg: "encryption context differs"},
		{name: "empty context key", method: "POST", path: enc, body: []byte(`{"key_id":"alias/app","plaintext":"aGk=","context":{"":"v"}}`), status: bad, code: inv, msg: "empty key"},
		{name: "decrypt with another key_id", method: "POST", path: dec, body: js(client.DecryptRequest{Ciphertext: ct, Context: fx.ctx, KeyID: fx.b.ID}), status: bad, code: ivc, msg: "was made with key " + fx.a.ID + ", not " + fx.b.ID},
		{name: "decrypt with unknown key_id", method: "POST", path: dec, body: js(client.DecryptRequest{Ciphertext: ct, Context: fx.ctx, KeyID: "alias/nope"}), status: 404, code: "key_not_found", msg: "alias/nope"},
		// Data keys and random bytes.
		{name: "datakey 2000 bytes", method: "POST", path: dk, body: []byte(`{"key_id":"alias/app","bytes":2000}`), status: bad, code: inv, msg: "data key size must be 1..1024 bytes, not 2000"},
		{name: "datakey negative bytes", method: "POST", path: "/v1/kms/datakey-without-plaintext", body: []byte(`{"key_id":"alias/app","bytes":-1}`), status: bad, code: inv, msg: "not -1"},
		{name: "random 0 bytes", method: "POST", path: rnd, body: []byte(`{"bytes":0}`), status: bad, code: inv, msg: "bytes must be 1..1024, not 0"},
		{name: "random 5000 bytes", method: "POST", path: rnd, body: []byte(`{"bytes":5000}`), status: bad, code: inv, msg: "not 5000"},
		{name: "random huge number", method: "POST", path: rnd, body: []byte(`{"bytes":99999999999999999999999}`), status: bad, code: inv, msg: `field "bytes" must be an integer`},
		// Batches.
		{name: "encrypt batch of 0", method: "POST", path: benc, body: js(client.BatchEncryptRequest{KeyID: "alias/app", Items: []client.EncryptRequest{}}), status: bad, code: inv, msg: "items is empty"},
		{name: "encrypt batch without items", method: "POST", path: benc, body: []byte(`{"key_id":"alias/app"}`), status: bad, code: inv, msg: "send at least one item"},
		{name: "encrypt batch of 1001", method: "POST", path: benc, body: js(client.BatchEncryptRequest{KeyID: "alias/app", Items: items(server.MaxBatchItems + 1)}), status: bad, code: inv, msg: "1001 items; a batch holds at most 1000"},
		{name: "decrypt batch of 0", method: "POST", path: bdec, body: []byte(`{"items":[]}`), status: bad, code: inv, msg: "items is empty"},
		// Identity: policies, roles, access keys, clusters, logins.
		{name: "policy with unknown action", method: "PUT", path: "/v1/policies/p1", body: js(client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:Encrpyt]\n    resources: [\"*\"]\n"}), status: bad, code: inv, msg: "p1:3:"},
		{name: "policy with bad glob", method: "PUT", path: "/v1/policies/p1", body: js(client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:Encrypt]\n    resources: [\"alias/**x\"]\n"}), status: bad, code: inv, msg: "p1:4:"},
		{name: "policy with bad condition", method: "PUT", path: "/v1/policies/p1", body: js(client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:Encrypt]\n    resources: [\"*\"]\n    conditions:\n      IpAddress:\n        source_ip: [not-a-cidr]\n"}), status: bad, code: inv, msg: "p1:7:"},
		{name: "policy not YAML", method: "PUT", path: "/v1/policies/p1", body: js(client.PutPolicyRequest{Document: "statements: [{"}), status: bad, code: inv, msg: "p1:"},
		{name: "policy empty document", method: "PUT", path: "/v1/policies/p1", body: []byte(`{}`), status: bad, code: inv, msg: "p1"},
		{name: "policy bad name", method: "PUT", path: "/v1/policies/-x", body: js(client.PutPolicyRequest{Document: "statements: []\n"}), status: bad, code: inv, msg: "policy name"},
		{name: "get unknown policy", method: "GET", path: "/v1/policies/nope", status: 404, code: "not_found", msg: `policy "nope" does not exist`},
		{name: "role with unknown field", method: "POST", path: "/v1/roles", body: []byte(`{"name":"r","polices":["x"]}`), status: bad, code: inv, msg: `unknown field "polices"`},
		{name: "role with unknown policy", method: "POST", path: "/v1/roles", body: js(client.Role{Name: "r", Policies: []string{"nope"}}), status: bad, code: inv, msg: `policy "nope" does not exist`},
		{name: "role above the hard ttl cap", method: "POST", path: "/v1/roles", body: js(client.Role{Name: "r", MaxTTL: "24h"}), status: bad, code: inv, msg: "hard cap of 12h"},
		{name: "role renamed on update", method: "PUT", path: "/v1/roles/a", body: js(client.Role{Name: "b"}), status: bad, code: inv, msg: "cannot be renamed"},
		{name: "assume unknown role", method: "POST", path: "/v1/auth/assume-role", body: js(client.AssumeRoleRequest{Role: "nope"}), status: 404, code: "not_found", msg: `role "nope" does not exist`},
		{name: "access key with unknown policy", method: "POST", path: "/v1/access-keys", body: js(client.CreateAccessKeyRequest{Policies: []string{"nope"}}), status: bad, code: inv, msg: "does not exist"},
		{name: "access key bad expiry", method: "POST", path: "/v1/access-keys", body: js(client.CreateAccessKeyRequest{ExpiresIn: "-1d"}), status: bad, code: inv, msg: "expires_in"},
		{name: "get access key by bad id", method: "GET", path: "/v1/access-keys/AKIA123", status: bad, code: inv, msg: "not an access key id"},
		{name: "cluster with unknown mode", method: "POST", path: "/v1/auth/kubernetes/clusters", body: js(client.Cluster{Name: "c", Mode: "oidc"}), status: bad, code: inv, msg: "want jwks or tokenreview"},
		{name: "cluster jwks not a key set", method: "POST", path: "/v1/auth/kubernetes/clusters", body: js(client.Cluster{Name: "c", Mode: "jwks", Issuer: "https://i", JWKS: "{}"}), status: bad, code: inv, msg: `cluster "c"`},
		{name: "cluster bad CA", method: "POST", path: "/v1/auth/kubernetes/clusters", body: js(client.Cluster{Name: "c", Mode: "tokenreview", APIServer: "https://127.0.0.1:1", ReviewerToken: "t", CACert: "nope"}), status: bad, code: inv, msg: "no PEM certificate"},
		{name: "kubernetes login without jwt", method: "POST", path: "/v1/auth/kubernetes/login", as: asAnon, body: []byte(`{"role":"nope"}`), status: bad, code: inv, msg: "jwt is required"},
		{name: "cert login without TLS", method: "POST", path: "/v1/auth/cert/login", as: asAnon, body: []byte(`{"role":"nope"}`), status: 401, code: "unauthenticated", msg: "no verified client certificate"},
		{name: "simulate unknown action", method: "POST", path: "/v1/policies/simulate", body: js(client.SimulateRequest{Principal: "role:x", Action: "kms:Nope"}), status: bad, code: inv, msg: "unknown action"},
		{name: "simulate bad principal", method: "POST", path: "/v1/policies/simulate", body: js(client.SimulateRequest{Principal: "bob", Action: "kms:Encrypt"}), status: bad, code: inv, msg: "want role:NAME"},
		{name: "key policy of unknown key", method: "PUT", path: "/v1/keys/alias%2Fnope/policy", body: js(client.KeyPolicy{Document: "statements: []\n"}), status: 404, code: "key_not_found", msg: "alias/nope"},
		{name: "revoke bogus principal", method: "POST", path: "/v1/auth/token/revoke-principal", body: js(client.RevokePrincipalRequest{Principal: "bogus"}), status: bad, code: inv, msg: "want access-key:ID"},
		{name: "renew a non-renewable token", method: "POST", path: "/v1/auth/token/renew-self", as: asUser, body: []byte(`{}`), status: bad, code: inv, msg: "not renewable"},
		{name: "token create without token:Create", method: "POST", path: "/v1/auth/token/create", as: asUser, body: js(client.CreateTokenRequest{Policies: []string{"keys-user"}}), status: 403, code: "permission_denied", msg: "token:Create"},
		// Aliases.
		{name: "duplicate alias", method: "POST", path: "/v1/aliases", body: js(client.Alias{Name: "alias/app", KeyID: fx.b.ID}), status: 409, code: "alias_exists", msg: `"alias/app" already points to a key`},
		{name: "create key with taken alias", method: "POST", path: "/v1/keys", body: []byte(`{"alias":"alias/app"}`), status: 409, code: "alias_exists", msg: "pick another name"},
		{name: "alias without prefix", method: "POST", path: "/v1/aliases", body: js(client.Alias{Name: "app2", KeyID: fx.b.ID}), status: bad, code: inv, msg: "must look like alias/NAME"},
		{name: "reserved alias", method: "POST", path: "/v1/aliases", body: js(client.Alias{Name: "alias/coffer/x", KeyID: fx.b.ID}), status: bad, code: inv, msg: "reserved"},
		{name: "alias with a space", method: "POST", path: "/v1/aliases", body: js(client.Alias{Name: "alias/has space", KeyID: fx.b.ID}), status: bad, code: inv, msg: "letters, digits"},
		{name: "alias too long", method: "POST", path: "/v1/keys", body: js(client.CreateKeyRequest{Alias: "alias/" + strings.Repeat("x", 300)}), status: bad, code: inv, msg: "at most 256 characters"},
		{name: "empty alias name", method: "POST", path: "/v1/aliases", body: js(client.Alias{Name: "alias/", KeyID: fx.b.ID}), status: bad, code: inv, msg: "must look like alias/NAME"},
		{name: "alias to unknown key", method: "POST", path: "/v1/aliases", body: js(client.Alias{Name: "alias/new", KeyID: unknownID}), status: 404, code: "key_not_found", msg: unknownID},
		{name: "delete unknown alias", method: "DELETE", path: "/v1/aliases/" + url.PathEscape("alias/nope"), status: 404, code: "alias_not_found", msg: `"alias/nope" does not exist`},
		{name: "delete alias without prefix", method: "DELETE", path: "/v1/aliases/app", status: bad, code: inv, msg: `must start with "alias/"`},
		// Rotation periods.
		{name: "rotation banana", method: "POST", path: "/v1/keys", body: []byte(`{"rotation_period":"banana"}`), status: bad, code: inv, msg: "want a positive duration like 90d"},
		{name: "rotation 10s", method: "POST", path: "/v1/keys", body: []byte(`{"rotation_period":"10s"}`), status: bad, code: inv, msg: "shorter than the minimum 1m0s"},
		{name: "rotation 0d", method: "POST", path: "/v1/keys", body: []byte(`{"rotation_period":"0d"}`), status: bad, code: inv, msg: "positive number of days"},
		{name: "rotation overflowing days", method: "POST", path: "/v1/keys", body: []byte(`{"rotation_period":"99999999999d"}`), status: bad, code: inv, msg: "too long"},
		{name: "update rotation banana", method: "PATCH", path: "/v1/keys/" + fx.b.ID, body: []byte(`{"rotation_period":"banana"}`), status: bad, code: inv, msg: `"banana"`},
		// Authentication and authorization.
		{name: "no token", method: "POST", path: enc, as: asAnon, body: []byte(okEnc), status: 401, code: "unauthenticated", msg: "send Authorization: Bearer <token>"},
		{name: "unknown token", method: "POST", path: enc, hdr: http.Header{"Authorization": {"Bearer cft_0000000000000000000000000000000000000000"}}, body: []byte(okEnc), status: 401, code: "unauthenticated", msg: "malformed"},
		{name: "garbage authorization", method: "GET", path: "/v1/keys", hdr: http.Header{"Authorization": {"garbage"}}, status: 401, code: "unauthenticated", msg: `must be "Bearer <token>"`},
		{name: "basic auth", method: "GET", path: "/v1/keys", hdr: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, status: 401, code: "unauthenticated", msg: "is not an access key id"},
		{name: "empty bearer", method: "GET", path: "/v1/keys", hdr: http.Header{"Authorization": {"Bearer "}}, status: 401, code: "unauthenticated", msg: `must be "Bearer <token>"`},
		{name: "garbage X-Coffer-Token", method: "GET", path: "/v1/keys", hdr: http.Header{"X-Coffer-Token": {"garbage-token"}}, status: 401, code: "unauthenticated", msg: "malformed"},
		{name: "non-root seals", method: "POST", path: "/v1/sys/seal", as: asUser, status: 403, code: "permission_denied", msg: "may not sys:Seal"},
		{name: "non-root creates token", method: "POST", path: "/v1/auth/token/create", as: asUser, body: []byte(`{}`), status: 403, code: "permission_denied", msg: "token:Create"},
		{name: "token ttl banana", method: "POST", path: "/v1/auth/token/create", body: []byte(`{"ttl":"banana"}`), status: bad, code: inv, msg: "want a duration like 1h"},
		{name: "revoke non-accessor", method: "POST", path: "/v1/auth/token/revoke", body: []byte(`{"accessor":"foo"}`), status: bad, code: inv, msg: "start with acc_"},
		// Sealed server and system calls.
		{name: "sealed encrypt", sealed: true, method: "POST", path: enc, body: []byte(okEnc), status: 503, code: "sealed", msg: "unseal it"},
		{name: "sealed list keys", sealed: true, method: "GET", path: "/v1/keys", status: 503, code: "sealed", msg: "sealed"},
		{name: "sealed decrypt", sealed: true, method: "POST", path: dec, body: decryptBody(ct, fx.ctx), status: 503, code: "sealed", msg: "sealed"},
		{name: "init twice", method: "POST", path: "/v1/sys/init", body: []byte(`{"shares":3,"threshold":2}`), status: 409, code: "already_initialized", msg: "already initialized"},
		{name: "init threshold above shares", method: "POST", path: "/v1/sys/init", body: []byte(`{"shares":2,"threshold":3}`), status: bad, code: inv, msg: "threshold <= shares"},
		{name: "unseal share not base64", sealed: true, method: "POST", path: "/v1/sys/unseal", body: []byte(`{"share":"not a share!"}`), status: bad, code: "invalid_share", msg: "paste the share exactly"},
		{name: "unseal share with a typo", sealed: true, method: "POST", path: "/v1/sys/unseal", body: js(client.UnsealRequest{Share: corrupt(ownShare)}), status: bad, code: "invalid_share", msg: "checksum mismatch"},
		{name: "unseal share of another server", sealed: true, method: "POST", path: "/v1/sys/unseal", body: js(client.UnsealRequest{Share: foreignShare}), status: bad, code: "invalid_share", msg: "do not belong to this server"},
		{name: "unseal without share", sealed: true, method: "POST", path: "/v1/sys/unseal", body: []byte(`{}`), status: bad, code: inv, msg: "share is required"},
		// Routing.
		{name: "unknown route", method: "GET", path: "/v1/nope", status: 404, code: "not_found", msg: "no API route GET /v1/nope"},
		{name: "unescaped alias in path", method: "GET", path: "/v1/keys/alias/app", status: 404, code: "not_found", msg: "alias%2FNAME"},
		{name: "wrong method", method: "DELETE", path: enc, status: 405, code: "method_not_allowed", msg: "use POST"},
		{name: "GET on a POST route", method: "GET", path: "/v1/sys/init", status: 405, code: "method_not_allowed", msg: "use POST"},
	}
}

func TestBadInput(t *testing.T) {
	live := newHTTPEnv(t)
	live.bootstrap(3, 2, true)
	fx := makeFixtures(live)

	sealed := newHTTPEnv(t)
	sealed.bootstrap(1, 1, false)

	cases := badCases(fx, live.shares[0], sealed.shares[0])
	if len(cases) < 35 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := live
			if c.sealed {
				e = sealed
			}
			hdr := c.hdr
			if hdr == nil {
				switch c.as {
				case asRoot:
					hdr = bearer(e.root)
				case asUser:
					hdr = bearer(e.user)
				case asAnon:
					hdr = http.Header{}
				}
			}
			status, h, raw := e.send(c.method, c.path, hdr, c.body)
			if status >= 500 && status != http.StatusServiceUnavailable {
				t.Fatalf("server fault %d: %s", status, raw)
			}
			if status != c.status {
				t.Fatalf("status %d, want %d: %.300s", status, c.status, raw)
			}
			if c.status/100 == 2 {
				return
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var eb client.ErrorBody
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&eb); err != nil {
				t.Fatalf("error body %q is not client.ErrorBody: %v", raw, err)
			}
			if eb.Error.Code != c.code {
				t.Errorf("code %q, want %q (message %q)", eb.Error.Code, c.code, eb.Error.Message)
			}
			if !strings.Contains(eb.Error.Message, c.msg) {
				t.Errorf("message %q does not contain %q", eb.Error.Message, c.msg)
			}
			if strings.Contains(eb.Error.Message, "\n") {
				t.Errorf("message %q spans lines", eb.Error.Message)
			}
			if eb.Error.RequestID == "" || eb.Error.RequestID != h.Get("X-Request-Id") {
				t.Errorf("request id %q, header %q", eb.Error.RequestID, h.Get("X-Request-Id"))
			}
			if c.status == http.StatusMethodNotAllowed && h.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}

	// The good neighbours of the bad cases.
	t.Run("sealed seal-status is 200", func(t *testing.T) {
		var st client.SealStatus
		sealed.must("GET", "/v1/sys/seal-status", "", nil, &st)
		if !st.Initialized || !st.Sealed || st.Threshold != 1 {
			t.Fatalf("seal status %+v", st)
		}
	})
	t.Run("datakey 0 bytes means 32", func(t *testing.T) {
		var r client.DataKeyResponse
		live.must("POST", "/v1/kms/datakey", live.user, client.DataKeyRequest{KeyID: "alias/app", Bytes: 0}, &r)
		if len(r.Plaintext) != keys.DefaultDataKeyBytes || len(r.Ciphertext) == 0 || r.KeyID != fx.a.ID || r.KeyVersion != 2 {
			t.Fatalf("datakey %+v", r)
		}
		var d client.DecryptResponse
		live.must("POST", "/v1/kms/decrypt", live.user, client.DecryptRequest{Ciphertext: r.Ciphertext}, &d)
		if !bytes.Equal(d.Plaintext, r.Plaintext) {
			t.Fatal("the wrapped data key does not decrypt to the data key")
		}
	})
	t.Run("non-root may use keys", func(t *testing.T) {
		var d client.DecryptResponse
		live.must("POST", "/v1/kms/decrypt", live.user, client.DecryptRequest{Ciphertext: fx.ctA, Context: fx.ctx, KeyID: "alias/app"}, &d)
		if string(d.Plaintext) != "hello, coffer" || d.KeyVersion != 1 {
			t.Fatalf("decrypt %+v", d)
		}
	})
	t.Run("batch with one bad item", func(t *testing.T) {
		req := client.BatchEncryptRequest{KeyID: "alias/app", Items: []client.EncryptRequest{
			{Plaintext: []byte("zero"), Context: map[string]string{"i": "0"}},
			{Plaintext: []byte("one"), KeyID: "alias/nope"},
			{Plaintext: []byte("two"), Context: map[string]string{"i": "2"}},
			{Plaintext: make([]byte, keys.MaxPlaintext+1)},
			{Plaintext: []byte("four"), KeyID: fx.b.ID},
		}}
		var r client.BatchEncryptResponse
		live.must("POST", "/v1/kms/encrypt-batch", live.user, req, &r)
		if len(r.Results) != len(req.Items) {
			t.Fatalf("%d results for %d items", len(r.Results), len(req.Items))
		}
		wantErr := map[int]string{1: "key_not_found", 3: "plaintext_too_large"}
		var dreq client.BatchDecryptRequest
		for i, res := range r.Results {
			if code, bad := wantErr[i]; bad {
				if res.Error == nil || res.Error.Code != code || res.Error.Message == "" || len(res.Ciphertext) != 0 {
					t.Errorf("item %d: %+v, want error %s", i, res, code)
				}
				dreq.Items = append(dreq.Items, client.DecryptRequest{Ciphertext: []byte("garbage")})
				continue
			}
			if res.Error != nil || len(res.Ciphertext) == 0 {
				t.Fatalf("item %d failed: %+v", i, res.Error)
			}
			dreq.Items = append(dreq.Items, client.DecryptRequest{Ciphertext: res.Ciphertext, Context: req.Items[i].Context})
		}
		if r.Results[4].KeyID != fx.b.ID || r.Results[0].KeyID != fx.a.ID {
			t.Errorf("items encrypted under %s and %s", r.Results[0].KeyID, r.Results[4].KeyID)
		}
		// Decrypting the batch back proves the order was kept.
		var d client.BatchDecryptResponse
		live.must("POST", "/v1/kms/decrypt-batch", live.user, dreq, &d)
		for i, res := range d.Results {
			if _, bad := wantErr[i]; bad {
				if res.Error == nil || res.Error.Code != "invalid_ciphertext" {
					t.Errorf("decrypt item %d: %+v", i, res)
				}
				continue
			}
			if res.Error != nil || !bytes.Equal(res.Plaintext, req.Items[i].Plaintext) {
				t.Errorf("decrypt item %d: %q, %+v; want %q", i, res.Plaintext, res.Error, req.Items[i].Plaintext)
			}
		}
	})
	t.Run("a repeated init leaves the server unsealed", func(t *testing.T) {
		var st client.SealStatus
		live.must("GET", "/v1/sys/seal-status", "", nil, &st)
		if st.Sealed {
			t.Fatal("the server sealed itself")
		}
	})
}

// FuzzDecodeRequest posts arbitrary bodies to /v1/kms/encrypt and
// /v1/kms/decrypt: the answer is never a 5xx, every non-2xx answer is a JSON
// error body, and what encrypt accepts decrypts back to its plaintext.
func FuzzDecodeRequest(f *testing.F) {
	e := newRecorderEnv(f)
	e.bootstrap(1, 1, true)
	fx := makeFixtures(e)
	foreign := newRecorderEnv(f)
	foreign.bootstrap(1, 1, false)
	for _, c := range badCases(fx, foreign.shares[0], foreign.shares[0]) {
		if len(c.body) <= 8<<10 { // big seeds make minimization crawl
			f.Add(c.body)
		}
	}
	f.Add(decryptBody(fx.ctA, fx.ctx))
	f.Add(js(client.EncryptRequest{KeyID: fx.a.ID, Plaintext: []byte("seed"), Context: map[string]string{"a": "b", "c": ""}}))

	rawA := fx.ctA[3:19] // this process's key a, for retargeting
	hdr := bearer(e.root)
	check := func(t *testing.T, path string, body []byte) []byte {
		status, h, raw := e.send("POST", path, hdr, body)
		if status >= 500 {
			t.Fatalf("POST %s %q: status %d: %s", path, body, status, raw)
		}
		if status/100 == 2 {
			return raw
		}
		var eb client.ErrorBody
		if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
			t.Fatalf("POST %s %q: status %d with a body that is no JSON error: %q (%v)", path, body, status, raw, err)
		}
		if ct := h.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("POST %s: Content-Type %q", path, ct)
		}
		return nil
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if raw := check(t, "/v1/kms/encrypt", body); raw != nil {
			var req client.EncryptRequest
			var resp client.EncryptResponse
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("the server accepted %q, encoding/json does not: %v", body, err)
			}
			if err := json.Unmarshal(raw, &resp); err != nil {
				t.Fatal(err)
			}
			var d client.DecryptResponse
			st, _, draw := e.send("POST", "/v1/kms/decrypt", hdr, js(client.DecryptRequest{Ciphertext: resp.Ciphertext, Context: req.Context}))
			if st != http.StatusOK || json.Unmarshal(draw, &d) != nil {
				t.Fatalf("decrypting what encrypt returned for %q: status %d: %s", body, st, draw)
			}
			if !bytes.Equal(d.Plaintext, req.Plaintext) || d.KeyID != resp.KeyID {
				t.Fatalf("round trip of %q: got %q", req.Plaintext, d.Plaintext)
			}
		}
		check(t, "/v1/kms/decrypt", body)
		// Ciphertexts of seeds name keys of the process that made them:
		// point a Coffer-looking ciphertext at this process's key so
		// mutations reach the version checks and AES-GCM.
		var req client.DecryptRequest
		if json.Unmarshal(body, &req) == nil && len(req.Ciphertext) >= 19 && bytes.HasPrefix(req.Ciphertext, []byte("CF")) {
			copy(req.Ciphertext[3:19], rawA)
			check(t, "/v1/kms/decrypt", js(req))
		}
	})
}
