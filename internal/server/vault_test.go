package server_test

// The Vault-compatible door driven by the stock Vault client
// (github.com/hashicorp/vault/api) over HTTPS on 127.0.0.1.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

type memTrail struct {
	mu   sync.Mutex
	recs []audit.Record
	fail func(*audit.Record) error // a trail that cannot write these records
}

func (m *memTrail) Record(_ context.Context, r *audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		if err := m.fail(r); err != nil {
			return err
		}
	}
	m.recs = append(m.recs, *r)
	return nil
}

func (m *memTrail) find(action, outcome string) *audit.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.recs) - 1; i >= 0; i-- {
		if m.recs[i].Action == action && m.recs[i].Outcome == outcome && m.recs[i].Phase == "" {
			return &m.recs[i]
		}
	}
	return nil
}

type vaultEnv struct {
	sys   *sys.Sys
	url   string
	hc    *http.Client
	root  string
	trail *memTrail
}

func newVaultEnv(t *testing.T) *vaultEnv {
	t.Helper()
	s := sys.New(barrier.New(inmem.New()), nil)
	_, root, err := s.DevBootstrap(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	e := &vaultEnv{sys: s, root: root, trail: &memTrail{}}
	api := server.New(s, server.Options{Audit: e.trail})
	if err := api.Err(); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(api)
	t.Cleanup(ts.Close)
	e.url, e.hc = ts.URL, ts.Client()
	return e
}

func (e *vaultEnv) client(t *testing.T, token string) *vault.Client {
	t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = e.url
	cfg.HttpClient = e.hc
	cfg.MaxRetries = 0
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

func respStatus(err error) int {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func TestVaultTransit(t *testing.T) {
	e := newVaultEnv(t)
	c := e.client(t, e.root)
	l := c.Logical()
	if _, err := l.Write("transit/keys/app", map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatal(err)
	}
	pt := base64.StdEncoding.EncodeToString([]byte("hello vault"))
	ctx := base64.StdEncoding.EncodeToString([]byte("tenant-1"))
	enc, err := l.Write("transit/encrypt/app", map[string]any{"plaintext": pt, "context": ctx})
	if err != nil {
		t.Fatal(err)
	}
	ct := enc.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:v1:") {
		t.Fatalf("ciphertext %q", ct)
	}
	dec, err := l.Write("transit/decrypt/app", map[string]any{"ciphertext": ct, "context": ctx})
	if err != nil || dec.Data["plaintext"] != pt {
		t.Fatalf("decrypt: %v %v", dec, err)
	}
	// The context is bound: another one does not decrypt.
	if _, err := l.Write("transit/decrypt/app", map[string]any{"ciphertext": ct, "context": base64.StdEncoding.EncodeToString([]byte("tenant-2"))}); respStatus(err) != 400 {
		t.Fatalf("other context: %v", err)
	}
	// An edited version prefix is refused.
	if _, err := l.Write("transit/decrypt/app", map[string]any{"ciphertext": strings.Replace(ct, "vault:v1:", "vault:v2:", 1), "context": ctx}); respStatus(err) != 400 {
		t.Fatalf("edited prefix: %v", err)
	}
	// Another key's path does not decrypt it.
	if _, err := l.Write("transit/keys/other", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write("transit/decrypt/other", map[string]any{"ciphertext": ct, "context": ctx}); err == nil {
		t.Fatal("decrypted under another key's path")
	}

	// Batch.
	batch, err := l.Write("transit/encrypt/app", map[string]any{"batch_input": []map[string]any{{"plaintext": pt}, {"plaintext": "!!notbase64"}}})
	if err != nil {
		t.Fatal(err)
	}
	res := batch.Data["batch_results"].([]any)
	if len(res) != 2 || res[0].(map[string]any)["ciphertext"] == nil || res[1].(map[string]any)["error"] == nil {
		t.Fatalf("batch results %v", res)
	}
	bct := res[0].(map[string]any)["ciphertext"].(string)
	bdec, err := l.Write("transit/decrypt/app", map[string]any{"batch_input": []map[string]any{{"ciphertext": bct}}})
	if err != nil || bdec.Data["batch_results"].([]any)[0].(map[string]any)["plaintext"] != pt {
		t.Fatalf("batch decrypt %v %v", bdec, err)
	}

	// Rotate, read, rewrap.
	if _, err := l.Write("transit/keys/app/rotate", nil); err != nil {
		t.Fatal(err)
	}
	kr, err := l.Read("transit/keys/app")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := kr.Data["latest_version"].(jsonNumber); v.String() != "2" {
		t.Fatalf("latest_version %v", kr.Data["latest_version"])
	}
	if ks := kr.Data["keys"].(map[string]any); len(ks) != 2 || ks["1"] == nil || ks["2"] == nil {
		t.Fatalf("keys %v", kr.Data["keys"])
	}
	rw, err := l.Write("transit/rewrap/app", map[string]any{"ciphertext": ct, "context": ctx})
	if err != nil {
		t.Fatal(err)
	}
	nct := rw.Data["ciphertext"].(string)
	if !strings.HasPrefix(nct, "vault:v2:") {
		t.Fatalf("rewrapped %q", nct)
	}
	if dec, err := l.Write("transit/decrypt/app", map[string]any{"ciphertext": nct, "context": ctx}); err != nil || dec.Data["plaintext"] != pt {
		t.Fatalf("decrypt rewrapped: %v", err)
	}
	// Config: auto rotation.
	if _, err := l.Write("transit/keys/app/config", map[string]any{"auto_rotate_period": "48h"}); err != nil {
		t.Fatal(err)
	}
	kr, _ = l.Read("transit/keys/app")
	if v, _ := kr.Data["auto_rotate_period"].(jsonNumber); v.String() != "172800" {
		t.Fatalf("auto_rotate_period %v", kr.Data["auto_rotate_period"])
	}
	if _, err := l.Write("transit/keys/app/config", map[string]any{"exportable": true}); respStatus(err) != 400 {
		t.Fatalf("exportable: %v", err)
	}

	// Data keys.
	dk, err := l.Write("transit/datakey/plaintext/app", map[string]any{"bits": 256})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(dk.Data["plaintext"].(string))
	if len(raw) != 32 {
		t.Fatalf("data key %d bytes", len(raw))
	}
	back, err := l.Write("transit/decrypt/app", map[string]any{"ciphertext": dk.Data["ciphertext"]})
	if err != nil || back.Data["plaintext"] != dk.Data["plaintext"] {
		t.Fatalf("data key decrypt: %v", err)
	}
	wr, err := l.Write("transit/datakey/wrapped/app", nil)
	if err != nil || wr.Data["plaintext"] != nil || wr.Data["ciphertext"] == nil {
		t.Fatalf("wrapped: %v %v", wr, err)
	}

	// Random.
	rnd, err := l.Write("transit/random/16", nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := base64.StdEncoding.DecodeString(rnd.Data["random_bytes"].(string)); len(b) != 16 {
		t.Fatalf("random %v", rnd.Data)
	}
	rnd, err = l.Write("transit/random", map[string]any{"bytes": 8, "format": "hex"})
	if err != nil || len(rnd.Data["random_bytes"].(string)) != 16 {
		t.Fatalf("random hex %v %v", rnd, err)
	}
	if rec := e.trail.find("kms:Encrypt", "ok"); rec == nil || rec.Door != "vault" {
		t.Fatalf("encrypt record %+v", rec)
	}
}

func TestVaultKV(t *testing.T) {
	e := newVaultEnv(t)
	c := e.client(t, e.root)
	kv := c.KVv2("secret")
	bg := context.Background()
	if _, err := kv.Put(bg, "team/app", map[string]any{"password": "one"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(bg, "team/app", map[string]any{"password": "two"}, vault.WithCheckAndSet(1)); err != nil {
		t.Fatal(err)
	}
	// A stale check-and-set fails as Vault's does.
	_, err := kv.Put(bg, "team/app", map[string]any{"password": "three"}, vault.WithCheckAndSet(1))
	if respStatus(err) != 400 {
		t.Fatalf("cas conflict: %v", err)
	}
	got, err := kv.Get(bg, "team/app")
	if err != nil || got.Data["password"] != "two" || got.VersionMetadata.Version != 2 {
		t.Fatalf("get: %+v %v", got, err)
	}
	old, err := kv.GetVersion(bg, "team/app", 1)
	if err != nil || old.Data["password"] != "one" {
		t.Fatalf("version 1: %+v %v", old, err)
	}
	if _, err := kv.Put(bg, "team/db", map[string]any{"u": "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(bg, "top", map[string]any{"u": "x"}); err != nil {
		t.Fatal(err)
	}
	ls, err := c.Logical().List("secret/metadata/team")
	if err != nil || ls == nil || strings.Join(toStrings(ls.Data["keys"]), ",") != "app,db" {
		t.Fatalf("list: %v %v", ls, err)
	}
	ls, err = c.Logical().List("secret/metadata/")
	if err != nil || strings.Join(toStrings(ls.Data["keys"]), ",") != "team/,top" {
		t.Fatalf("root list: %v %v", ls, err)
	}
	md, err := kv.GetMetadata(bg, "team/app")
	if err != nil || md.CurrentVersion != 2 || len(md.Versions) != 2 {
		t.Fatalf("metadata %+v %v", md, err)
	}
	if err := kv.PutMetadata(bg, "team/app", vault.KVMetadataPutInput{MaxVersions: 5, CustomMetadata: map[string]any{"owner": "ops"}}); err != nil {
		t.Fatal(err)
	}
	md, err = kv.GetMetadata(bg, "team/app")
	if err != nil || md.MaxVersions != 5 || md.CustomMetadata["owner"] != "ops" {
		t.Fatalf("metadata after put %+v %v", md, err)
	}
	if err := kv.PutMetadata(bg, "team/app", vault.KVMetadataPutInput{CustomMetadata: map[string]any{"tier": "1"}}); err != nil {
		t.Fatal(err)
	}
	md, _ = kv.GetMetadata(bg, "team/app")
	if md.MaxVersions != 5 || md.CustomMetadata["owner"] != nil || md.CustomMetadata["tier"] != "1" {
		t.Fatalf("custom metadata not replaced: %+v", md)
	}
	if err := kv.PutMetadata(bg, "team/app", vault.KVMetadataPutInput{CASRequired: true}); respStatus(err) != 400 {
		t.Fatalf("cas_required: %v", err)
	}
	if err := kv.Destroy(bg, "team/app", []int{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.GetVersion(bg, "team/app", 1); err == nil {
		t.Fatal("destroyed version read")
	}
	if err := kv.Delete(bg, "team/app"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(bg, "team/app"); err == nil {
		t.Fatal("deleted secret read")
	}
	if err := kv.Undelete(bg, "team/app", []int{2}); err != nil {
		t.Fatal(err)
	}
	if got, err := kv.Get(bg, "team/app"); err != nil || got.Data["password"] != "two" {
		t.Fatalf("after undelete %v %v", got, err)
	}
	// Non-string values are refused, not mangled.
	if _, err := kv.Put(bg, "num", map[string]any{"n": 1}); respStatus(err) != 400 {
		t.Fatalf("number value: %v", err)
	}
	if rec := e.trail.find("secret:Write", "ok"); rec == nil || rec.Door != "vault" {
		t.Fatalf("write record %+v", rec)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

type jsonNumber = interface{ String() string }

func TestVaultAuthAndErrors(t *testing.T) {
	e := newVaultEnv(t)
	root := e.client(t, e.root)
	if _, err := root.Logical().Write("transit/keys/app", nil); err != nil {
		t.Fatal(err)
	}
	// lookup-self in Vault's shape.
	self, err := root.Auth().Token().LookupSelf()
	if err != nil || self.Data["type"] != "service" || self.Data["policies"] == nil {
		t.Fatalf("lookup-self %v %v", self, err)
	}
	// The mount checks the stock clients make.
	m, err := root.Logical().Read("sys/internal/ui/mounts/secret")
	if err != nil || m.Data["type"] != "kv" || m.Data["options"].(map[string]any)["version"] != "2" {
		t.Fatalf("kv mount %v %v", m, err)
	}
	m, err = root.Logical().Read("sys/internal/ui/mounts/transit")
	if err != nil || m.Data["type"] != "transit" {
		t.Fatalf("transit mount %v %v", m, err)
	}

	// A token without a policy: 403, audited.
	tok, _, err := e.sys.Tokens.Issue(context.Background(), auth.Spec{DisplayName: "nopol", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	nopol := e.client(t, tok)
	self, err = nopol.Auth().Token().LookupSelf()
	if err != nil {
		t.Fatal(err)
	}
	if ttl, err := self.TokenTTL(); err != nil || ttl < 59*time.Minute || ttl > time.Hour {
		t.Fatalf("ttl %v %v", ttl, err)
	}
	if exp, _ := self.Data["expire_time"].(string); exp == "" {
		t.Fatalf("expire_time %v", self.Data["expire_time"])
	}
	if pol, _ := self.TokenPolicies(); len(pol) != 0 {
		t.Fatalf("policies of a token without any: %v", pol)
	}
	_, err = nopol.Logical().Write("transit/encrypt/app", map[string]any{"plaintext": "aGk="})
	if respStatus(err) != 403 {
		t.Fatalf("no policy: %v", err)
	}
	if rec := e.trail.find("kms:Encrypt", "error"); rec == nil || rec.Door != "vault" || rec.ErrorCode != "permission_denied" {
		t.Fatalf("denial record %+v", rec)
	}
	if _, err := nopol.KVv2("secret").Get(context.Background(), "x"); respStatus(err) != 403 {
		t.Fatalf("kv no policy: %v", err)
	}

	// No token, a bad token: 403 as Vault answers.
	for _, token := range []string{"", "not-a-token"} {
		body, status := e.raw(t, "POST", "/v1/transit/encrypt/app", token, `{"plaintext":"aGk="}`)
		if status != 403 || !strings.Contains(body, `"errors":[`) {
			t.Fatalf("token %q: %d %s", token, status, body)
		}
	}
	// Bearer is accepted too.
	req, _ := http.NewRequest("GET", e.url+"/v1/transit/keys/app", nil)
	req.Header.Set("Authorization", "Bearer "+e.root)
	if resp, err := e.hc.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("bearer: %v %v", resp, err)
	}
	// Unknown path: Vault-shaped 404, audited under the door.
	body, status := e.raw(t, "POST", "/v1/transit/nosuch/app", e.root, `{}`)
	if status != 404 || !strings.HasPrefix(body, `{"errors":[`) {
		t.Fatalf("unknown path: %d %s", status, body)
	}
	if rec := e.trail.find("api:UnknownRoute", "error"); rec == nil || rec.Door != "vault" {
		t.Fatalf("unknown route record %+v", rec)
	}
	// Not found key: 404.
	if _, err := root.Logical().Read("transit/keys/missing"); err != nil {
		if respStatus(err) != 404 {
			t.Fatalf("missing key: %v", err)
		}
	}
	// Bad input: 400 Vault-shaped.
	body, status = e.raw(t, "POST", "/v1/transit/encrypt/app", e.root, `{"plaintext":"%%%"}`)
	if status != 400 || !strings.HasPrefix(body, `{"errors":[`) {
		t.Fatalf("bad plaintext: %d %s", status, body)
	}
	// A body over the limit without a token is refused before it is read.
	big := strings.Repeat("a", 20<<20)
	_, status = e.raw(t, "POST", "/v1/transit/encrypt/app", "", `{"plaintext":"`+big+`"}`)
	if status != 403 {
		t.Fatalf("big anonymous body: %d", status)
	}
	_, status = e.raw(t, "POST", "/v1/transit/encrypt/app", e.root, `{"plaintext":"`+big+`"}`)
	if status != 413 {
		t.Fatalf("big body: %d", status)
	}
	// Sealed: 503.
	e.sys.Seal()
	body, status = e.raw(t, "GET", "/v1/secret/data/x", e.root, "")
	if status != 503 || !strings.HasPrefix(body, `{"errors":[`) {
		t.Fatalf("sealed: %d %s", status, body)
	}
}

func (e *vaultEnv) raw(t *testing.T, method, path, token, body string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String(), resp.StatusCode
}

func TestVaultMountCollision(t *testing.T) {
	s := sys.New(barrier.New(inmem.New()), nil)
	for _, m := range []server.VaultMounts{{Transit: "secrets"}, {KV: "keys"}, {KV: "kms"}, {Transit: "a", KV: "a/b"}, {KV: "sys"}, {Transit: "x/../y"}} {
		if err := server.New(s, server.Options{Vault: m}).Err(); err == nil {
			t.Errorf("mounts %+v accepted", m)
		}
	}
	if err := server.New(s, server.Options{Vault: server.VaultMounts{Transit: "tr", KV: "kv/prod"}}).Err(); err != nil {
		t.Fatal(err)
	}
}

// coffer sends one REST request as root (setup of policies and tokens).
func (e *vaultEnv) coffer(t *testing.T, method, path, body string, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.root)
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b.String())
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

// tokenWith makes a token whose one policy is doc.
func (e *vaultEnv) tokenWith(t *testing.T, name, doc string) string {
	t.Helper()
	pol, _ := json.Marshal(map[string]string{"document": doc})
	e.coffer(t, "PUT", "/v1/policies/"+name, string(pol), nil)
	var tr struct {
		Token string `json:"token"`
	}
	e.coffer(t, "POST", "/v1/auth/token/create", `{"display_name":"`+name+`","ttl":"1h","policies":["`+name+`"]}`, &tr)
	return tr.Token
}

// The door decides every item as Coffer's own API does: on the key,
// with the context; list entries one by one; a customer key's read also
// on the key.
func TestVaultAuthorizesItems(t *testing.T) {
	e := newVaultEnv(t)
	root := e.client(t, e.root)
	for _, k := range []string{"transit/keys/app", "transit/keys/other"} {
		if _, err := root.Logical().Write(k, nil); err != nil {
			t.Fatal(err)
		}
	}
	tenant := base64.StdEncoding.EncodeToString([]byte("tenant-1"))
	tok := e.tokenWith(t, "app-tenant", `statements:
  - effect: allow
    actions: [kms:Encrypt, kms:Decrypt, kms:ReEncrypt, kms:ReEncryptTo]
    resources: ["alias/app"]
    conditions:
      StringEquals:
        context.vault_context: `+tenant+`
  - effect: allow
    actions: [secret:List, secret:Read]
    resources: ["secret/team/*", "secret/"]
`)
	c := e.client(t, tok)
	l := c.Logical()
	pt := base64.StdEncoding.EncodeToString([]byte("x"))
	enc, err := l.Write("transit/encrypt/app", map[string]any{"plaintext": pt, "context": tenant})
	if err != nil {
		t.Fatal(err)
	}
	// Another context, another key: denied.
	if _, err := l.Write("transit/encrypt/app", map[string]any{"plaintext": pt, "context": base64.StdEncoding.EncodeToString([]byte("tenant-2"))}); respStatus(err) != 403 {
		t.Fatalf("other context: %v", err)
	}
	if _, err := l.Write("transit/encrypt/other", map[string]any{"plaintext": pt, "context": tenant}); respStatus(err) != 403 {
		t.Fatalf("other key: %v", err)
	}
	// In a batch, each item alone.
	b, err := l.Write("transit/encrypt/app", map[string]any{"batch_input": []map[string]any{{"plaintext": pt, "context": tenant}, {"plaintext": pt}}})
	if err != nil {
		t.Fatal(err)
	}
	res := b.Data["batch_results"].([]any)
	if res[0].(map[string]any)["ciphertext"] == nil || res[1].(map[string]any)["error"] == nil {
		t.Fatalf("batch %v", res)
	}
	if _, err := l.Write("transit/decrypt/app", map[string]any{"batch_input": []map[string]any{{"ciphertext": enc.Data["ciphertext"], "context": tenant}}}); err != nil {
		t.Fatal(err)
	}
	// Decryption is decided on its own context: a ciphertext made under
	// another tenant's context is not opened for this token.
	t2 := base64.StdEncoding.EncodeToString([]byte("tenant-2"))
	ct2, err := root.Logical().Write("transit/encrypt/app", map[string]any{"plaintext": pt, "context": t2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write("transit/decrypt/app", map[string]any{"ciphertext": ct2.Data["ciphertext"], "context": t2}); respStatus(err) != 403 {
		t.Fatalf("decrypt under another context: %v", err)
	}
	// Rewrap through a key path of another key's ciphertext is refused.
	oct, err := root.Logical().Write("transit/encrypt/other", map[string]any{"plaintext": pt})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("transit/rewrap/app", map[string]any{"ciphertext": oct.Data["ciphertext"]}); respStatus(err) != 400 {
		t.Fatalf("rewrap of another key's ciphertext: %v", err)
	}

	// KV: the list shows only what the token may list.
	bg := context.Background()
	for _, p := range []string{"team/a", "team/b", "ops/c"} {
		if _, err := root.KVv2("secret").Put(bg, p, map[string]any{"v": "1"}); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := l.List("secret/metadata/")
	if err != nil || strings.Join(toStrings(ls.Data["keys"]), ",") != "team/" {
		t.Fatalf("filtered list: %v %v", ls, err)
	}
	// A secret under a customer key needs kms:Decrypt on it to be read.
	e.coffer(t, "POST", "/v1/secrets/data/team/cust", `{"fields":{"v":"1"},"key":"alias/other"}`, nil)
	if _, err := c.KVv2("secret").Get(bg, "team/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KVv2("secret").Get(bg, "team/cust"); respStatus(err) != 403 {
		t.Fatalf("customer key read: %v", err)
	}
}
