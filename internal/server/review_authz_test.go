package server_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// Tests from a security review of the authorization fixes of issue 13
// (items 2, 3, 4, 8, 19): ways around them an attacker holding a limited
// policy might try, and records that must name the key.

// TestReviewAliasNamesReachableByPath: every alias the API lets one create
// can be deleted again (and named in a key route), by root at least. Names
// with "." or ".." segments or empty segments were accepted by CreateAlias
// but every path naming them is refused as not canonical, so such an alias
// could be neither deleted nor used in a key route by anyone until its key
// was destroyed.
func TestReviewAliasNamesReachableByPath(t *testing.T) {
	e := newIAMEnv(t, nil)
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/rv"}, &k)
	for _, name := range []string{"alias/rv/../x", "alias/rv//x", "alias/rv/./x", "alias/rv/..", "alias/rv/.", "alias/..", "alias/rv/"} {
		for _, how := range []string{"create-alias", "create-key"} {
			var st int
			var raw []byte
			if how == "create-alias" {
				st, raw = e.call("POST", "/v1/aliases", e.root, client.Alias{Name: name, KeyID: k.ID})
			} else {
				st, raw = e.call("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: name})
			}
			if st >= 500 {
				t.Fatalf("%s %q: %d %s", how, name, st, raw)
			}
			if st/100 != 2 {
				continue // refused: nothing to reach
			}
			path := url.PathEscape(name)
			if st, raw := e.call("GET", "/v1/keys/"+path, e.root, nil); st != 200 {
				t.Errorf("%s %q was accepted, but GET /v1/keys/%s answers %d %s", how, name, path, st, raw)
			}
			if st, raw := e.call("DELETE", "/v1/aliases/"+path, e.root, nil); st != 204 {
				t.Errorf("%s %q was accepted, but root cannot delete it: %d %s", how, name, st, raw)
			}
		}
	}
}

// TestReviewKeyPolicyRecordNamesKey: reading or replacing a key policy
// through an alias is recorded with the key's id, not only the alias (which
// can later point elsewhere): the record of a request that changes who may
// use a key names that key.
func TestReviewKeyPolicyRecordNamesKey(t *testing.T) {
	e := newIAMEnv(t, nil)
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/pol"}, &k)
	path := "/v1/keys/" + url.PathEscape("alias/pol") + "/policy"
	e.must("PUT", path, e.root, client.KeyPolicy{Document: "statements:\n  - effect: allow\n    actions: [\"kms:*\"]\n    resources: [\"*\"]\n"}, nil)
	if rec, _ := e.rec.last("key:PutKeyPolicy"); rec.KeyID != k.ID || rec.Resource != "alias/pol" {
		t.Errorf("record of PutKeyPolicy through an alias: resource %q key %q, want key %s", rec.Resource, rec.KeyID, k.ID)
	}
	e.must("GET", path, e.root, nil, nil)
	if rec, _ := e.rec.last("key:GetKeyPolicy"); rec.KeyID != k.ID {
		t.Errorf("record of GetKeyPolicy through an alias: key %q, want %s", rec.KeyID, k.ID)
	}
}

// TestReviewNonCanonicalKeyRefs: a key is known by its canonical id (lower
// case, dashed) and its aliases only. Other spellings of the id (upper
// case, braces, urn:uuid:, no dashes, surrounding space) name no key, so a
// deny written on the canonical id cannot be stepped around with them: no
// route answers 2xx (nor 5xx) for them.
func TestReviewNonCanonicalKeyRefs(t *testing.T) {
	e := newIAMEnv(t, nil)
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/guarded"}, &k)
	var own client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/own"}, &own)
	var ct client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: own.ID, Plaintext: []byte("x")}, &ct)
	tok := e.policyToken("deny-guarded-by-id", `statements:
  - effect: allow
    actions: ["kms:*", "key:*"]
    resources: ["*"]
  - effect: deny
    actions: ["kms:*", "key:*"]
    resources: ["`+k.ID+`"]
`)
	refs := []string{strings.ToUpper(k.ID), "{" + k.ID + "}", "urn:uuid:" + k.ID, strings.ReplaceAll(k.ID, "-", ""),
		" " + k.ID, k.ID + " ", k.ID + "\n", k.ID + "/", "./" + k.ID, "alias/../" + k.ID}
	for _, ref := range refs {
		calls := []struct {
			method, path string
			body         any
		}{
			{"POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: ref, Plaintext: []byte("x")}},
			{"POST", "/v1/kms/datakey", client.DataKeyRequest{KeyID: ref}},
			{"POST", "/v1/kms/reencrypt", client.ReEncryptRequest{Ciphertext: ct.Ciphertext, DestinationKeyID: ref}},
			{"POST", "/v1/aliases", client.Alias{Name: "alias/own-" + strings.Repeat("x", 1+len(ref)%7), KeyID: ref}},
			{"POST", "/v1/kms/decrypt", client.DecryptRequest{Ciphertext: ct.Ciphertext, KeyID: ref}},
			{"GET", "/v1/keys/" + url.PathEscape(ref), nil},
			{"POST", "/v1/keys/" + url.PathEscape(ref) + "/disable", nil},
			{"PUT", "/v1/keys/" + url.PathEscape(ref) + "/policy", client.KeyPolicy{Document: "statements: []\n"}},
		}
		for _, c := range calls {
			st, raw := e.call(c.method, c.path, tok, c.body)
			if st/100 == 2 || st >= 500 {
				t.Errorf("%s %s naming %q: %d %s", c.method, c.path, ref, st, raw)
			}
		}
		st, raw := e.call("POST", "/v1/kms/encrypt-batch", tok, client.BatchEncryptRequest{KeyID: ref, Items: []client.EncryptRequest{{Plaintext: []byte("x")}}})
		if res := decodeInto[client.BatchEncryptResponse](t, raw).Results; st != 200 || len(res) != 1 || res[0].Error == nil {
			t.Errorf("encrypt-batch naming %q: %d %s", ref, st, raw)
		}
	}
	var got client.Key
	e.must("GET", "/v1/keys/"+k.ID, e.root, nil, &got)
	if got.State != client.KeyEnabled {
		t.Fatalf("the guarded key was changed: %+v", got)
	}
}

// TestReviewBatchDuplicateAndCaseFoldedKeys: encoding/json takes the last
// of duplicate members and matches member names without regard to case;
// whatever the item's key ends up as, it is the key that was authorized and
// the key that encrypted. A denied key smuggled in a duplicate or a
// differently cased member is refused, and an allowed one encrypts under
// itself.
func TestReviewBatchDuplicateAndCaseFoldedKeys(t *testing.T) {
	e := newIAMEnv(t, nil)
	var ok, denied client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/ok"}, &ok)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/denied"}, &denied)
	tok := e.policyToken("ok-only", "statements:\n  - effect: allow\n    actions: [kms:Encrypt]\n    resources: [alias/ok]\n")
	bodies := []struct {
		raw     string
		wantKey string // "" when the item must be denied
	}{
		{`{"key_id":"alias/ok","items":[{"plaintext":"eA==","key_id":"alias/ok","key_id":"alias/denied"}]}`, ""},
		{`{"key_id":"alias/ok","items":[{"plaintext":"eA==","key_id":"alias/ok","KEY_ID":"alias/denied"}]}`, ""},
		{`{"key_id":"alias/ok","items":[{"plaintext":"eA==","Key_Id":"alias/denied","key_id":""}]}`, ok.ID},
		{`{"key_id":"alias/denied","KEY_ID":"alias/ok","items":[{"plaintext":"eA=="}]}`, ok.ID},
		{`{"key_id":"alias/ok","key_id":"alias/denied","items":[{"plaintext":"eA=="}]}`, ""},
	}
	for _, b := range bodies {
		st, raw := e.call("POST", "/v1/kms/encrypt-batch", tok, json.RawMessage(b.raw))
		if st != 200 {
			t.Fatalf("%s: %d %s", b.raw, st, raw)
		}
		res := decodeInto[client.BatchEncryptResponse](t, raw).Results
		switch {
		case b.wantKey == "" && (res[0].Error == nil || res[0].Error.Code != "permission_denied"):
			t.Errorf("%s: %+v, want permission_denied", b.raw, res[0])
		case b.wantKey != "" && (res[0].Error != nil || res[0].KeyID != b.wantKey):
			t.Errorf("%s: %+v, want a ciphertext under %s", b.raw, res[0], b.wantKey)
		}
	}
}

// TestReviewCreateAliasRefResolvedOnce: an alias is created on the key that
// was authorized, never on one its key_id names only later. A key_id that
// names no key when the request is authorized is decided as written (no key
// names, no key policy); if the key service resolved it again afterwards, an
// alias created meanwhile (here by its owner, in a loop) would point the new
// alias at a key whose key policy refuses the caller. The race is driven
// for a bounded time; on the old code it shows within a few hundred tries.
func TestReviewCreateAliasRefResolvedOnce(t *testing.T) {
	e := newIAMEnv(t, nil)
	var b client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/team-b-main"}, &b)
	// Team b's key policy lets nobody but root make aliases for it.
	e.must("PUT", "/v1/keys/"+b.ID+"/policy", e.root, client.KeyPolicy{Document: "statements:\n  - effect: allow\n    actions: [\"kms:*\"]\n    resources: [\"*\"]\n"}, nil)
	attacker := e.policyToken("alias-maker", "statements:\n  - effect: allow\n    actions: [key:CreateAlias, key:DeleteAlias]\n    resources: [\"*\"]\n")
	if st, raw := e.call("POST", "/v1/aliases", attacker, client.Alias{Name: "alias/team-a-x", KeyID: "alias/team-b-main"}); st != 403 {
		t.Fatalf("the key policy does not hold to begin with: %d %s", st, raw)
	}

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the owner moves alias/team-b-new in and out
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.do("POST", "/v1/aliases", bearer(e.root), client.Alias{Name: "alias/team-b-new", KeyID: b.ID})
			e.do("DELETE", "/v1/aliases/"+url.PathEscape("alias/team-b-new"), bearer(e.root), nil)
		}
	}()
	defer func() { close(stop); <-done }()
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var won atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && won.Load() == 0 {
				st, _, _ := e.do("POST", "/v1/aliases", bearer(attacker), client.Alias{Name: "alias/team-a-x", KeyID: "alias/team-b-new"})
				if st == 201 {
					won.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := won.Load(); n > 0 {
		var list client.AliasList
		e.must("GET", "/v1/aliases?key_id="+b.ID, e.root, nil, &list)
		t.Fatalf("an alias was created on a key whose key policy refuses its maker (it named the key by an alias that appeared after authorization): %+v", list.Aliases)
	}
}

// TestReviewHostileBodiesBelow500: odd but well-formed bodies on the routes
// the authorization fixes changed answer below 500.
func TestReviewHostileBodiesBelow500(t *testing.T) {
	e := newIAMEnv(t, nil)
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/h"}, &k)
	var ct client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")}, &ct)
	// A ciphertext naming the key with the largest version, and one naming
	// a key that does not exist.
	bigVersion := append([]byte(nil), ct.Ciphertext...)
	copy(bigVersion[19:23], []byte{0xff, 0xff, 0xff, 0xff})
	otherKey := append([]byte(nil), ct.Ciphertext...)
	otherKey[3] ^= 0xff
	tok := e.policyToken("h-all", "statements:\n  - effect: allow\n    actions: [\"kms:*\", \"key:*\"]\n    resources: [\"*\"]\n")
	bodies := []struct{ path, body string }{
		{"/v1/kms/encrypt-batch", `{"key_id":"alias/h","items":[null]}`},
		{"/v1/kms/encrypt-batch", `{"items":[{}]}`},
		{"/v1/kms/encrypt-batch", `{"key_id":"alias/","items":[{"plaintext":""}]}`},
		{"/v1/kms/decrypt-batch", `{"items":[null,{}]}`},
		{"/v1/kms/reencrypt", `{"ciphertext":null,"destination_context":null}`},
		{"/v1/kms/reencrypt", `{"ciphertext":"AAAA","destination_key_id":"alias/h","destination_context":{}}`},
		{"/v1/aliases", `{"name":"alias/h2","key_id":"alias/"}`},
		{"/v1/aliases", `{"name":"alias/h2","key_id":""}`},
		{"/v1/aliases", `{}`},
		{"/v1/auth/token/revoke", `{"token":"","accessor":""}`},
	}
	for _, b := range bodies {
		for _, who := range []string{e.root, tok} {
			if st, raw := e.call("POST", b.path, who, json.RawMessage(b.body)); st >= 500 {
				t.Errorf("%s %s: %d %s", b.path, b.body, st, raw)
			}
		}
	}
	for _, c := range [][]byte{bigVersion, otherKey} {
		for _, who := range []string{e.root, tok} {
			if st, raw := e.call("POST", "/v1/kms/decrypt-batch", who, client.BatchDecryptRequest{Items: []client.DecryptRequest{{Ciphertext: c}}}); st >= 500 {
				t.Errorf("decrypt-batch of a doctored ciphertext: %d %s", st, raw)
			}
			if st, raw := e.call("POST", "/v1/kms/reencrypt", who, client.ReEncryptRequest{Ciphertext: c}); st >= 500 {
				t.Errorf("reencrypt of a doctored ciphertext: %d %s", st, raw)
			}
		}
	}
	for _, name := range []string{"alias%2F", "alias%2Fnone", "x", k.ID, "alias%2F%FF"} {
		if st, raw := e.call("DELETE", "/v1/aliases/"+name, tok, nil); st >= 500 || st/100 == 2 {
			t.Errorf("DELETE /v1/aliases/%s: %d %s", name, st, raw)
		}
	}
}
