package server_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// TestAliasHijack: creating or deleting an alias is an act on its key too.
// A principal allowed everything on alias/team-a-* cannot point an alias of
// its own namespace at team b's key (and so gain every right on it it has
// on its own aliases); the target key's key policy must allow the alias;
// deleting an alias needs permission on the alias itself, not only on the
// key; and the records of alias operations name the key.
func TestAliasHijack(t *testing.T) {
	e := newIAMEnv(t, nil)
	var a, b client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/team-a-main"}, &a)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/team-b-main"}, &b)
	var ctB client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: "alias/team-b-main", Plaintext: []byte("b's secret")}, &ctB)

	teamA := e.policyToken("team-a", `statements:
  - effect: allow
    actions: [key:CreateAlias, key:DeleteAlias, "kms:*", key:ScheduleDeletion, key:PutKeyPolicy]
    resources: ["alias/team-a-*"]
`)
	// The hijack: point an alias of one's own namespace at another team's
	// key, by alias or by id. Refused, and nothing was created.
	for _, target := range []string{"alias/team-b-main", b.ID} {
		st, raw := e.call("POST", "/v1/aliases", teamA, client.Alias{Name: "alias/team-a-x", KeyID: target})
		if st != 403 || !strings.Contains(string(raw), "key:CreateAlias on "+b.ID) {
			t.Fatalf("alias/team-a-x -> %s: %d %s", target, st, raw)
		}
		rec, _ := e.rec.last("key:CreateAlias")
		if rec.KeyID != b.ID || rec.Resource != "alias/team-a-x" || rec.ErrorCode != "permission_denied" {
			t.Errorf("record of the refused alias: resource %q key %q code %q", rec.Resource, rec.KeyID, rec.ErrorCode)
		}
	}
	var list client.AliasList
	e.must("GET", "/v1/aliases?key_id="+b.ID, e.root, nil, &list)
	if len(list.Aliases) != 1 {
		t.Fatalf("b's aliases after the refused hijack: %+v", list.Aliases)
	}
	if st, raw := e.call("POST", "/v1/kms/decrypt", teamA, client.DecryptRequest{Ciphertext: ctB.Ciphertext}); st != 403 {
		t.Fatalf("team a decrypts b's data: %d %s", st, raw)
	}
	if st, raw := e.call("POST", "/v1/keys/"+url.PathEscape(b.ID)+"/schedule-deletion", teamA, client.ScheduleDeletionRequest{PendingDays: 7}); st != 403 {
		t.Fatalf("team a schedules b's key for deletion: %d %s", st, raw)
	}

	// An alias for one's own key is fine, and its record names the key.
	var al client.Alias
	e.must("POST", "/v1/aliases", teamA, client.Alias{Name: "alias/team-a-second", KeyID: "alias/team-a-main"}, &al)
	if al.KeyID != a.ID {
		t.Fatalf("alias %+v", al)
	}
	if rec, _ := e.rec.last("key:CreateAlias"); rec.KeyID != a.ID || rec.Outcome != "ok" {
		t.Errorf("record of the alias: key %q outcome %q", rec.KeyID, rec.Outcome)
	}
	// Its deletion too.
	if st, raw := e.call("DELETE", "/v1/aliases/"+url.PathEscape("alias/team-a-second"), teamA, nil); st != 204 {
		t.Fatalf("deleting its own alias: %d %s", st, raw)
	}
	if rec, _ := e.rec.last("key:DeleteAlias"); rec.KeyID != a.ID || rec.Resource != "alias/team-a-second" || rec.Outcome != "ok" {
		t.Errorf("record of the deletion: resource %q key %q outcome %q", rec.Resource, rec.KeyID, rec.Outcome)
	}

	// The target key's key policy must allow the alias as well.
	e.must("PUT", "/v1/keys/"+a.ID+"/policy", e.root, client.KeyPolicy{Document: `statements:
  - effect: allow
    actions: ["kms:*", key:DeleteAlias]
    resources: ["*"]
`}, nil)
	if st, raw := e.call("POST", "/v1/aliases", teamA, client.Alias{Name: "alias/team-a-third", KeyID: a.ID}); st != 403 || !strings.Contains(string(raw), "key policy") {
		t.Fatalf("an alias the key policy does not allow: %d %s", st, raw)
	}

	// Deleting an alias needs permission on the alias, not only on its key.
	keyAdmin := e.policyToken("b-key-admin", "statements:\n  - effect: allow\n    actions: [key:DeleteAlias]\n    resources: [\""+b.ID+"\"]\n")
	if st, raw := e.call("DELETE", "/v1/aliases/"+url.PathEscape("alias/team-b-main"), keyAdmin, nil); st != 403 || !strings.Contains(string(raw), "key:DeleteAlias on alias/team-b-main") {
		t.Fatalf("deleting an alias with rights on the key only: %d %s", st, raw)
	}
	if rec, _ := e.rec.last("key:DeleteAlias"); rec.KeyID != b.ID {
		t.Errorf("record of the refused deletion names key %q, want %s", rec.KeyID, b.ID)
	}
	// ... and on the key, not only on the alias.
	aliasAdmin := e.policyToken("b-alias-admin", "statements:\n  - effect: allow\n    actions: [key:DeleteAlias]\n    resources: [alias/team-b-main]\n")
	e.must("POST", "/v1/aliases", e.root, client.Alias{Name: "alias/team-b-main2", KeyID: b.ID}, nil)
	e.must("PUT", "/v1/keys/"+b.ID+"/policy", e.root, client.KeyPolicy{Document: `statements:
  - effect: allow
    actions: ["kms:*"]
    resources: ["*"]
`}, nil)
	if st, raw := e.call("DELETE", "/v1/aliases/"+url.PathEscape("alias/team-b-main"), aliasAdmin, nil); st != 403 || !strings.Contains(string(raw), "key policy") {
		t.Fatalf("deleting an alias whose key's key policy does not allow it: %d %s", st, raw)
	}
}

// TestDenyByIDAndByAlias: a deny that names a key by id holds when the
// caller names the key by an alias, and a deny on an alias holds when the
// caller names the key by id (or a ciphertext does).
func TestDenyByIDAndByAlias(t *testing.T) {
	e := newIAMEnv(t, nil)
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/prod"}, &k)
	e.must("POST", "/v1/aliases", e.root, client.Alias{Name: "alias/prod-other-name", KeyID: k.ID}, nil)
	var ct client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")}, &ct)
	allow := "statements:\n  - effect: allow\n    actions: [\"kms:*\"]\n    resources: [\"*\"]\n"
	byID := e.policyToken("deny-by-id", allow+"  - effect: deny\n    actions: [\"kms:*\"]\n    resources: [\""+k.ID+"\"]\n")
	byAlias := e.policyToken("deny-by-alias", allow+"  - effect: deny\n    actions: [\"kms:*\"]\n    resources: [alias/prod]\n")
	for name, tok := range map[string]string{"deny by id": byID, "deny by alias": byAlias} {
		for _, ref := range []string{k.ID, "alias/prod", "alias/prod-other-name"} {
			if st, raw := e.call("POST", "/v1/kms/encrypt", tok, client.EncryptRequest{KeyID: ref, Plaintext: []byte("x")}); st != 403 {
				t.Errorf("%s, encrypt naming %s: %d %s", name, ref, st, raw)
			}
			if st, raw := e.call("POST", "/v1/kms/datakey", tok, client.DataKeyRequest{KeyID: ref}); st != 403 {
				t.Errorf("%s, datakey naming %s: %d %s", name, ref, st, raw)
			}
		}
		if st, raw := e.call("POST", "/v1/kms/decrypt", tok, client.DecryptRequest{Ciphertext: ct.Ciphertext}); st != 403 {
			t.Errorf("%s, decrypt (the ciphertext names the id): %d %s", name, st, raw)
		}
		if st, raw := e.call("POST", "/v1/kms/decrypt", tok, client.DecryptRequest{Ciphertext: ct.Ciphertext, KeyID: "alias/prod"}); st != 403 {
			t.Errorf("%s, decrypt naming the alias: %d %s", name, st, raw)
		}
		st, raw := e.call("POST", "/v1/kms/decrypt-batch", tok, client.BatchDecryptRequest{Items: []client.DecryptRequest{{Ciphertext: ct.Ciphertext}}})
		if res := decodeInto[client.BatchDecryptResponse](t, raw).Results; st != 200 || res[0].Error == nil || res[0].Error.Code != "permission_denied" {
			t.Errorf("%s, decrypt-batch: %d %s", name, st, raw)
		}
	}
	// The allow alone works (the denies are what refuses).
	plain := e.policyToken("allow-only", allow)
	if st, raw := e.call("POST", "/v1/kms/encrypt", plain, client.EncryptRequest{KeyID: "alias/prod", Plaintext: []byte("x")}); st != 200 {
		t.Fatalf("allow only: %d %s", st, raw)
	}
}

// TestDenyOnAliasAndItsDeletion pins down the documented decision: a deny
// written on an alias applies to the key while the alias points at it, and
// not after the alias is deleted; a deny of every action on the alias
// therefore also refuses deleting it.
func TestDenyOnAliasAndItsDeletion(t *testing.T) {
	e := newIAMEnv(t, nil)
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/prod"}, &k)
	doc := "statements:\n  - effect: allow\n    actions: [\"kms:*\", key:DeleteAlias]\n    resources: [\"*\"]\n  - effect: deny\n    actions: [%s]\n    resources: [alias/prod]\n"
	pinned := e.policyToken("deny-all-on-alias", strings.Replace(doc, "%s", `"*"`, 1))
	if st, raw := e.call("DELETE", "/v1/aliases/"+url.PathEscape("alias/prod"), pinned, nil); st != 403 {
		t.Fatalf("deleting an alias a deny of every action names: %d %s", st, raw)
	}
	kmsOnly := e.policyToken("deny-kms-on-alias", strings.Replace(doc, "%s", `"kms:*"`, 1))
	if st, raw := e.call("POST", "/v1/kms/encrypt", kmsOnly, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")}); st != 403 {
		t.Fatalf("encrypt by id while the alias exists: %d %s", st, raw)
	}
	if st, raw := e.call("DELETE", "/v1/aliases/"+url.PathEscape("alias/prod"), kmsOnly, nil); st != 204 {
		t.Fatalf("deleting the alias: %d %s", st, raw)
	}
	if st, raw := e.call("POST", "/v1/kms/encrypt", kmsOnly, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")}); st != 200 {
		t.Fatalf("encrypt by id after the alias is gone: %d %s (the documented behaviour changed: update docs/policy.md)", st, raw)
	}
}

// TestRevokeTokenAndAccessorTogether: a revocation names one token, by
// value or by accessor; both together are refused and revoke nothing.
func TestRevokeTokenAndAccessorTogether(t *testing.T) {
	e := newIAMEnv(t, nil)
	var t1, t2 client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", e.root, client.CreateTokenRequest{TTL: "1h"}, &t1)
	e.must("POST", "/v1/auth/token/create", e.root, client.CreateTokenRequest{TTL: "1h"}, &t2)
	st, raw := e.call("POST", "/v1/auth/token/revoke", e.root, client.RevokeTokenRequest{Token: t1.Token, Accessor: t2.Accessor})
	if st != 400 || !strings.Contains(string(raw), "not both") {
		t.Fatalf("revoke with token and accessor: %d %s", st, raw)
	}
	for _, tok := range []string{t1.Token, t2.Token} {
		if st, raw := e.call("GET", "/v1/auth/token/lookup-self", tok, nil); st != 200 {
			t.Fatalf("a token is gone after the refused revocation: %d %s", st, raw)
		}
	}
	e.must("POST", "/v1/auth/token/revoke", e.root, client.RevokeTokenRequest{Accessor: t2.Accessor}, nil)
	if st, _ := e.call("GET", "/v1/auth/token/lookup-self", t2.Token, nil); st != 401 {
		t.Fatalf("revoked by accessor, still works: %d", st)
	}
}
