package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestTrailHashesItemContexts: the trail writes a batch item's context
// values only as HMACs, like the record's own context.
func TestTrailHashesItemContexts(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	tr, err := Open(Options{Dir: dir, Keys: k})
	if err != nil {
		t.Fatal(err)
	}
	r := &Record{Time: time.Now(), Action: "kms:Decrypt", Outcome: "ok"}
	r.AddItem(Item{Resource: "k-1", KeyID: "k-1", Version: 2, Outcome: "ok", ContextValues: map[string]string{"tenant": "secret-tenant-value"}})
	r.AddItem(Item{Outcome: "error", ErrorCode: "permission_denied"})
	if err := tr.Record(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	var all []byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all = append(all, b...)
	}
	if bytes.Contains(all, []byte("secret-tenant-value")) {
		t.Fatalf("the trail holds an item's context value: %s", all)
	}
	if !bytes.Contains(all, []byte(`"context":{"tenant":"`+k.HMAC("secret-tenant-value")+`"}`)) {
		t.Fatalf("the item's context HMAC is missing: %s", all)
	}
}

// TestSearchFindsBatchItems: a search by key or by outcome finds the batch
// records one of whose items has it.
func TestSearchFindsBatchItems(t *testing.T) {
	r := &Record{Type: TypeRequest, Action: "kms:Decrypt", Outcome: "ok", Status: 200}
	r.AddItem(Item{Resource: "k-1", KeyID: "k-1", Outcome: "ok"})
	r.AddItem(Item{Resource: "alias/b", KeyID: "k-2", Outcome: "error", ErrorCode: "permission_denied"})
	for _, q := range []Query{{Resource: "k-1"}, {Resource: "k-2"}, {Resource: "alias/b"}, {Outcome: "permission_denied"}, {Outcome: "error"}} {
		if !q.Match(r) {
			t.Errorf("%+v does not match the batch record", q)
		}
	}
	for _, q := range []Query{{Resource: "k-3"}, {Outcome: "key_disabled"}} {
		if q.Match(r) {
			t.Errorf("%+v matches the batch record", q)
		}
	}
}
