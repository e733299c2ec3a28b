package server_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
)

// Writing keys/NAME of a key that exists answers the key's description:
// that is key:Describe's effect, so key:Create alone does not get it.
func TestVaultCreateExistingNeedsDescribe(t *testing.T) {
	e := newVaultEnv(t)
	root := e.client(t, e.root)
	if _, err := root.Logical().Write("transit/keys/app", nil); err != nil {
		t.Fatal(err)
	}
	tok := e.tokenWith(t, "creator", `statements:
  - effect: allow
    actions: [key:Create]
    resources: ["alias/*"]
`)
	l := e.client(t, tok).Logical()
	if s, err := l.Write("transit/keys/app", nil); respStatus(err) != 403 {
		t.Fatalf("create of an existing key without key:Describe: %v %v", s, err)
	}
	if s, err := l.Write("transit/keys/mine", nil); err != nil || s.Data["coffer_key_id"] == nil {
		t.Fatalf("create of a new key: %v %v", s, err)
	}
}

// A rewrap is authorized before the path's key is looked up: a caller
// without rights on it learns neither whether it exists nor whether a
// ciphertext is its.
func TestVaultRewrapAuthorizesBeforeLookup(t *testing.T) {
	e := newVaultEnv(t)
	root := e.client(t, e.root)
	for _, k := range []string{"transit/keys/app", "transit/keys/other"} {
		if _, err := root.Logical().Write(k, nil); err != nil {
			t.Fatal(err)
		}
	}
	enc, err := root.Logical().Write("transit/encrypt/app", map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte("x"))})
	if err != nil {
		t.Fatal(err)
	}
	tok := e.tokenWith(t, "rewrapper", `statements:
  - effect: allow
    actions: [kms:ReEncrypt, kms:ReEncryptTo]
    resources: ["alias/app"]
`)
	l := e.client(t, tok).Logical()
	for _, k := range []string{"nothere", "other"} {
		if s, err := l.Write("transit/rewrap/"+k, map[string]any{"ciphertext": enc.Data["ciphertext"]}); respStatus(err) != 403 {
			t.Fatalf("rewrap/%s: %v %v", k, s, err)
		}
	}
	if _, err := l.Write("transit/rewrap/app", map[string]any{"ciphertext": enc.Data["ciphertext"]}); err != nil {
		t.Fatal(err)
	}
}

// Vault's delete/PATH soft-deletes the versions it names and leaves the
// others readable; Coffer can only delete the whole secret, so a delete
// that does not name the current version is refused rather than taking
// the current value away.
func TestVaultDeleteVersionsKeepsCurrent(t *testing.T) {
	e := newVaultEnv(t)
	kv := e.client(t, e.root).KVv2("secret")
	bg := context.Background()
	for _, v := range []string{"1", "2"} {
		if _, err := kv.Put(bg, "app/db", map[string]any{"v": v}); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.DeleteVersions(bg, "app/db", []int{1}); respStatus(err) != 400 {
		t.Fatalf("delete of an old version: %v", err)
	}
	if _, body := e.raw(t, "POST", "/v1/secret/delete/app/db", e.root, `{}`); body != 400 {
		t.Fatalf("delete without versions: %d", body)
	}
	if s, err := kv.Get(bg, "app/db"); err != nil || s.Data["v"] != "2" {
		t.Fatalf("current after refused deletes: %v %v", s, err)
	}
	if err := kv.DeleteVersions(bg, "app/db", []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(bg, "app/db"); err == nil {
		t.Fatal("read after delete of the current version")
	}
	if err := kv.Undelete(bg, "app/db", []int{2}); err != nil {
		t.Fatal(err)
	}
	if s, err := kv.Get(bg, "app/db"); err != nil || s.Data["v"] != "2" {
		t.Fatalf("after undelete: %v %v", s, err)
	}
}

// A LIST of PATH is decided on secret/PATH/ (the REST list's prefix
// resource), so a grant on secret/team/* lists team.
func TestVaultListResource(t *testing.T) {
	e := newVaultEnv(t)
	root := e.client(t, e.root)
	bg := context.Background()
	for _, p := range []string{"team/a", "team/b"} {
		if _, err := root.KVv2("secret").Put(bg, p, map[string]any{"v": "1"}); err != nil {
			t.Fatal(err)
		}
	}
	tok := e.tokenWith(t, "lister", `statements:
  - effect: allow
    actions: [secret:List]
    resources: ["secret/team/*"]
`)
	ls, err := e.client(t, tok).Logical().List("secret/metadata/team")
	if err != nil || ls == nil || strings.Join(toStrings(ls.Data["keys"]), ",") != "a,b" {
		t.Fatalf("list: %v %v", ls, err)
	}
	// The single secret team/a is not a folder grant.
	tok2 := e.tokenWith(t, "one", `statements:
  - effect: allow
    actions: [secret:List]
    resources: ["secret/team"]
`)
	if ls, err := e.client(t, tok2).Logical().List("secret/metadata/team"); respStatus(err) != 403 {
		t.Fatalf("list with a grant on the secret team only: %v %v", ls, err)
	}
}

// A read is decided on secret/PATH whatever its query: ?list=true on a
// data path does not move the decision onto secret/PATH/ (where a grant
// on secret/team/* would match the secret team).
func TestVaultReadResourceIgnoresList(t *testing.T) {
	e := newVaultEnv(t)
	if _, err := e.client(t, e.root).KVv2("secret").Put(context.Background(), "team", map[string]any{"v": "top"}); err != nil {
		t.Fatal(err)
	}
	tok := e.tokenWith(t, "reader", `statements:
  - effect: allow
    actions: [secret:Read, secret:List]
    resources: ["secret/team/*"]
`)
	for _, p := range []string{"/v1/secret/data/team?list=true", "/v1/secret/data/team", "/v1/secret/metadata/team"} {
		if body, st := e.raw(t, "GET", p, tok, ""); st != 403 || strings.Contains(body, "top") {
			t.Fatalf("GET %s: %d %s", p, st, body)
		}
	}
}
