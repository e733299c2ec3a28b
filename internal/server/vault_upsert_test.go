package server_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
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
	var intent, created, encrypt audit.Record
	for i, r := range e.trail.recs {
		switch {
		case r.Action == "key:Create" && r.Resource == "alias/up-a" && r.Phase == audit.PhaseIntent:
			intentAt, intent = i, r
		case r.Action == "key:Create" && r.Resource == "alias/up-a" && r.Outcome == "ok":
			createdAt, created = i, r
		case r.Action == "kms:Encrypt" && r.Resource == "alias/up-a" && r.Outcome == "ok" && encryptAt < 0:
			encryptAt, encrypt = i, r
		}
	}
	e.trail.mu.Unlock()
	if intentAt < 0 || createdAt < intentAt || encryptAt < createdAt || created.RequestID != encrypt.RequestID || created.RequestID == "" {
		t.Fatalf("trail: intent at %d, created at %d (%q), encrypt at %d (%q)", intentAt, createdAt, created.RequestID, encryptAt, encrypt.RequestID)
	}
	// The creation names who made it as the encrypt's record does.
	for _, r := range []audit.Record{intent, created} {
		// (This test's trail keeps the token as given; the real one keeps
		// only its HMAC, made from this field.)
		if r.Principal != encrypt.Principal || r.Door != "vault" || r.Token == "" || r.Token != encrypt.Token {
			t.Errorf("creation record %+v\nencrypt record %+v", r, encrypt)
		}
	}
	if id, _, _ := e.sys.Keys.Names("alias/up-a"); created.KeyID != id {
		t.Errorf("creation record names key %q, the alias names %q", created.KeyID, id)
	}

	// An existing key is used as is: no second creation.
	e.trail.mu.Lock()
	before := len(e.trail.recs)
	e.trail.mu.Unlock()
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

	// Key options Coffer does not have are refused as keys/NAME refuses
	// them, and a request whose every item is malformed creates nothing.
	for _, body := range []map[string]any{
		{"plaintext": pt, "convergent_encryption": true},
		{"plaintext": pt, "derived": true},
		{"plaintext": "not base64!"},
		{"plaintext": pt, "context": "not base64!"},
	} {
		if _, err := root.Write("transit/encrypt/up-opt", body); respStatus(err) != 400 {
			t.Errorf("upsert with %v: %v, want 400", body, err)
		}
	}
	if exists("up-opt") {
		t.Fatal("a refused request created its key")
	}

	// A credential typed into the path is not made a key name, and is not
	// written to the trail.
	if _, err := root.Write("transit/encrypt/"+e.root, map[string]any{"plaintext": pt}); respStatus(err) != 404 {
		t.Errorf("encrypt to a key named like a token: %v, want 404", err)
	}
	if exists(e.root) {
		t.Fatal("a key was named after a token")
	}
	e.trail.mu.Lock()
	for _, r := range e.trail.recs {
		if strings.Contains(r.Resource, e.root) || strings.Contains(r.Detail, e.root) {
			t.Errorf("the trail holds the token: %+v", r)
		}
	}
	e.trail.mu.Unlock()

	// Concurrent upserts of one key: one creates it, the others use it,
	// and every ciphertext decrypts.
	const racers = 12
	var wg sync.WaitGroup
	cts := make([]any, racers)
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			s, err := creator.Write("transit/encrypt/up-race", map[string]any{"plaintext": pt})
			if err == nil {
				cts[i] = s.Data["ciphertext"]
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i := range racers {
		if errs[i] != nil {
			t.Fatalf("racer %d: %v", i, errs[i])
		}
		if dec, err := useOnly.Write("transit/decrypt/up-race", map[string]any{"ciphertext": cts[i]}); err != nil || dec.Data["plaintext"] != pt {
			t.Fatalf("racer %d's ciphertext: %v", i, err)
		}
	}
	e.trail.mu.Lock()
	outcomes := map[string]int{}
	for _, r := range e.trail.recs {
		if r.Action == "key:Create" && r.Resource == "alias/up-race" && r.Phase == "" {
			outcomes[r.Outcome+"/"+r.ErrorCode]++
		}
	}
	e.trail.mu.Unlock()
	for o, n := range outcomes {
		if o == "ok/" && n != 1 || o != "ok/" && o != "error/alias_exists" {
			t.Fatalf("creation outcomes of the race: %v, want one ok and the rest alias_exists", outcomes)
		}
	}
	t.Logf("creation outcomes of %d racers: %v", racers, outcomes)
	if outcomes["ok/"] != 1 {
		t.Fatalf("creation outcomes of the race: %v, want exactly one ok", outcomes)
	}

	// Another request creates the key between this one's decision and its
	// creation (forced: the trail creates it as it records the intent):
	// this one's creation is recorded as alias_exists with that key, and
	// its encrypt uses that key.
	var other string
	e.trail.mu.Lock()
	e.trail.fail = func(r *audit.Record) error {
		if r.Action == "key:Create" && r.Resource == "alias/up-late" && r.Phase == audit.PhaseIntent {
			k, err := e.sys.Keys.Create(context.Background(), keys.CreateRequest{Alias: "alias/up-late"})
			other = k.ID
			return err
		}
		return nil
	}
	e.trail.mu.Unlock()
	late, err := creator.Write("transit/encrypt/up-late", map[string]any{"plaintext": pt})
	if err != nil || other == "" {
		t.Fatalf("encrypt that lost the creation race: %v (other key %q)", err, other)
	}
	e.trail.mu.Lock()
	e.trail.fail = nil
	e.trail.mu.Unlock()
	lost := e.trail.find("key:Create", "error")
	if lost == nil || lost.Resource != "alias/up-late" || lost.ErrorCode != "alias_exists" || lost.KeyID != other {
		t.Fatalf("the lost creation's record: %+v, want alias_exists naming %s", lost, other)
	}
	if dec, err := useOnly.Write("transit/decrypt/up-late", map[string]any{"ciphertext": late.Data["ciphertext"]}); err != nil || dec.Data["plaintext"] != pt {
		t.Fatalf("the late encrypt's ciphertext: %v", err)
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
