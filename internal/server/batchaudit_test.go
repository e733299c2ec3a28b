package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// TestBatchAuditBounded: a batch of 1,000 items, each with an encryption
// context at the per-item limits, writes a bounded audit record. Every item
// is still recorded with its key and outcome; contexts past the record's
// budget are marked context_omitted. Before the budget such a request wrote
// megabytes of audit for one call.
func TestBatchAuditBounded(t *testing.T) {
	e := newBoundsEnv(t, nil)
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/x"}, &k)
	ctx := map[string]string{}
	for i := range 64 {
		ctx[fmt.Sprintf("%060d", i)] = "v"
	}
	items := make([]client.EncryptRequest, 1000)
	for i := range items {
		items[i] = client.EncryptRequest{KeyID: "alias/x", Plaintext: []byte("p"), Context: ctx}
	}
	body, err := json.Marshal(client.BatchEncryptRequest{KeyID: "alias/x", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	before := e.auditSize()
	st, _, raw := e.send("POST", "/v1/kms/encrypt-batch", e.root, nil, bytes.NewReader(body))
	if st != http.StatusOK {
		t.Fatalf("encrypt-batch: %d %.300s", st, raw)
	}
	var resp client.BatchEncryptResponse
	if err := json.Unmarshal(raw, &resp); err != nil || len(resp.Results) != 1000 || resp.Results[999].Error != nil {
		t.Fatalf("answer: %v, %d results", err, len(resp.Results))
	}
	grew := e.auditSize() - before
	if grew > 256<<10 {
		t.Fatalf("one batch grew the audit log by %d bytes", grew)
	}
	if grew < 1000*20 {
		t.Fatalf("the audit log grew by %d bytes: are the items recorded?", grew)
	}
}

// TestAuthorizeOnWholeResource: the audit record's copy of a resource is
// cut at a bound, but authorization must see all of it: a deny on a suffix
// pattern applies to a name longer than the record keeps.
func TestAuthorizeOnWholeResource(t *testing.T) {
	e := newBoundsEnv(t, nil)
	e.must("PUT", "/v1/policies/describe-but-secret", e.root, client.PutPolicyRequest{Document: "statements:\n" +
		"  - effect: allow\n    actions: [key:Describe]\n    resources: [\"*\"]\n" +
		"  - effect: deny\n    actions: [key:Describe]\n    resources: [\"*-secret\"]\n"}, nil)
	var tr client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", e.root, client.CreateTokenRequest{Policies: []string{"describe-but-secret"}, TTL: "1h"}, &tr)
	name := strings.Repeat("k", 1000) + "-secret"
	st, _, raw := e.send("GET", "/v1/keys/"+name, tr.Token, nil, nil)
	if st != http.StatusForbidden {
		t.Fatalf("a denied name longer than the record keeps: %d %.200s", st, raw)
	}
	if st, _, raw := e.send("GET", "/v1/keys/"+strings.Repeat("k", 1000), tr.Token, nil, nil); st != http.StatusNotFound {
		t.Fatalf("an allowed long name: %d %.200s", st, raw)
	}
}
