package server_test

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/keys"
)

// TestVaultEncryptUpsert: Vault's encrypt/NAME creates a missing key when
// the token may create it. Through the stock client: without key:Create
// the missing key stays a 404 and nothing is made; with it the key is
// created (audited as a change: intent first, under the encrypt's request
// id) and used; a type other than aes256-gcm96 is a 400; a trail that
// cannot record the creation leaves no key.
func TestVaultEncryptUpsert(t *testing.T) {
	e := newVaultEnv(t)
	pt := base64.StdEncoding.EncodeToString([]byte("upsert me"))
	exists := func(name string) bool {
		_, _, err := e.sys.Keys.Names(keys.AliasPrefix + name)
		if err != nil && !errors.Is(err, keys.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	useOnly := e.client(t, e.tokenWith(t, "use-only", `statements:
  - effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: ["alias/up-*"]
`)).Logical()
	creator := e.client(t, e.tokenWith(t, "creator", `statements:
  - effect: allow
    actions: [kms:Encrypt, kms:Decrypt, key:Create]
    resources: ["alias/up-*"]
`)).Logical()
	root := e.client(t, e.root).Logical()

	if _, err := useOnly.Write("transit/encrypt/up-a", map[string]any{"plaintext": pt}); respStatus(err) != 404 {
		t.Fatalf("encrypt to a missing key without key:Create: %v, want 404", err)
	}
	if exists("up-a") {
		t.Fatal("a token without key:Create created a key through encrypt")
	}
	// Another key's create right does not count.
	if _, err := creator.Write("transit/encrypt/other-a", map[string]any{"plaintext": pt}); respStatus(err) != 403 && respStatus(err) != 404 {
		t.Fatalf("encrypt outside the token's keys: %v", err)
	}
	if exists("other-a") {
		t.Fatal("key:Create on alias/up-* created alias/other-a")
	}

	enc, err := creator.Write("transit/encrypt/up-a", map[string]any{"plaintext": pt})
	if err != nil {
		t.Fatalf("encrypt with key:Create: %v", err)
	}
	if !exists("up-a") {
		t.Fatal("no key after the upsert")
	}
	dec, err := useOnly.Write("transit/decrypt/up-a", map[string]any{"ciphertext": enc.Data["ciphertext"]})
	if err != nil || dec.Data["plaintext"] != pt {
		t.Fatalf("decrypt of the upsert's ciphertext: %v %v", dec, err)
	}
	// The creation is on the trail as a change, before the encrypt's record.
	e.trail.mu.Lock()
	var intentAt, createdAt, encryptAt = -1, -1, -1
	var createdID, encryptID string
	for i, r := range e.trail.recs {
		switch {
		case r.Action == "key:Create" && r.Resource == "alias/up-a" && r.Phase == audit.PhaseIntent:
			intentAt = i
		case r.Action == "key:Create" && r.Resource == "alias/up-a" && r.Outcome == "ok":
			createdAt, createdID = i, r.RequestID
		case r.Action == "kms:Encrypt" && r.Resource == "alias/up-a" && r.Outcome == "ok" && encryptAt < 0:
			encryptAt, encryptID = i, r.RequestID
		}
	}
	e.trail.mu.Unlock()
	if intentAt < 0 || createdAt < intentAt || encryptAt < createdAt || createdID != encryptID || createdID == "" {
		t.Fatalf("trail: intent at %d, created at %d (%q), encrypt at %d (%q)", intentAt, createdAt, createdID, encryptAt, encryptID)
	}

	// An existing key is used as is: no second creation.
	before := len(e.trail.recs)
	if _, err := creator.Write("transit/encrypt/up-a", map[string]any{"batch_input": []map[string]any{{"plaintext": pt}, {"plaintext": pt}}}); err != nil {
		t.Fatal(err)
	}
	e.trail.mu.Lock()
	for _, r := range e.trail.recs[before:] {
		if r.Action == "key:Create" {
			t.Errorf("an encrypt to an existing key recorded %+v", r)
		}
	}
	e.trail.mu.Unlock()

	if _, err := root.Write("transit/encrypt/up-rsa", map[string]any{"plaintext": pt, "type": "rsa-2048"}); respStatus(err) != 400 {
		t.Fatalf("upsert of an rsa-2048 key: %v, want 400", err)
	}
	if exists("up-rsa") {
		t.Fatal("a refused type was created")
	}

	// Fail closed: the creation's intent cannot be recorded, so no key.
	e.trail.mu.Lock()
	e.trail.fail = func(r *audit.Record) error {
		if r.Action == "key:Create" {
			return errors.New("disk full")
		}
		return nil
	}
	e.trail.mu.Unlock()
	if _, err := creator.Write("transit/encrypt/up-b", map[string]any{"plaintext": pt}); respStatus(err) != 503 {
		t.Fatalf("upsert with a failing trail: %v, want 503", err)
	}
	if exists("up-b") {
		t.Fatal("a key was created that the trail could not record")
	}
}
