package server_test

import (
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// TestReEncryptAuthorization: a ReEncrypt is kms:ReEncrypt on the source
// key with the source context and kms:ReEncryptTo on the destination key
// (the source key when none is named) with the destination context (the
// source context when none is given), and both decisions see the context
// keys as written: context.tier, never a renamed key.
func TestReEncryptAuthorization(t *testing.T) {
	e := newIAMEnv(t, nil)
	var a, b client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/a"}, &a)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/b"}, &b)
	restricted := map[string]string{"tier": "restricted"}
	public := map[string]string{"tier": "public"}
	var ctPublic, ctRestricted client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: "alias/a", Plaintext: []byte("p"), Context: public}, &ctPublic)
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: "alias/a", Plaintext: []byte("r"), Context: restricted}, &ctRestricted)

	allowAll := `  - effect: allow
    actions: [kms:ReEncrypt, kms:ReEncryptTo]
    resources: ["*"]
`
	noRestrictedDest := e.policyToken("no-restricted-dest", "statements:\n"+allowAll+`  - effect: deny
    actions: [kms:ReEncryptTo]
    resources: ["*"]
    conditions:
      StringEquals:
        context.tier: restricted
`)
	noRestrictedSource := e.policyToken("no-restricted-source", "statements:\n"+allowAll+`  - effect: deny
    actions: [kms:ReEncrypt]
    resources: ["*"]
    conditions:
      StringEquals:
        context.tier: restricted
`)
	publicOnly := e.policyToken("public-only", `statements:
  - effect: allow
    actions: [kms:ReEncrypt, kms:ReEncryptTo]
    resources: ["*"]
    conditions:
      StringEquals:
        context.tier: public
`)
	notToB := e.policyToken("not-to-b", "statements:\n"+allowAll+`  - effect: deny
    actions: [kms:ReEncryptTo]
    resources: [alias/b]
`)
	sourceOnly := e.policyToken("source-only", "statements:\n  - effect: allow\n    actions: [kms:ReEncrypt]\n    resources: [\"*\"]\n")
	toBOnly := e.policyToken("to-b-only", `statements:
  - effect: allow
    actions: [kms:ReEncrypt]
    resources: [alias/a]
  - effect: allow
    actions: [kms:ReEncryptTo]
    resources: [alias/b]
`)

	cases := []struct {
		name   string
		tok    string
		req    client.ReEncryptRequest
		status int
		msg    string
	}{
		{"deny on the destination context", noRestrictedDest,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public, DestinationContext: restricted}, 403, "kms:ReEncryptTo on " + a.ID},
		{"deny on the destination context, to another key", noRestrictedDest,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public, DestinationKeyID: "alias/b", DestinationContext: restricted}, 403, "kms:ReEncryptTo on alias/b"},
		{"deny on the destination context kept from the source", noRestrictedDest,
			client.ReEncryptRequest{Ciphertext: ctRestricted.Ciphertext, SourceContext: restricted}, 403, "kms:ReEncryptTo"},
		{"destination context allowed", noRestrictedDest,
			client.ReEncryptRequest{Ciphertext: ctRestricted.Ciphertext, SourceContext: restricted, DestinationContext: public}, 200, ""},
		{"deny on the source context", noRestrictedSource,
			client.ReEncryptRequest{Ciphertext: ctRestricted.Ciphertext, SourceContext: restricted, DestinationContext: public}, 403, "kms:ReEncrypt on " + a.ID},
		{"source context allowed", noRestrictedSource,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public, DestinationContext: restricted}, 200, ""},
		{"allow only for a public destination", publicOnly,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public, DestinationContext: restricted}, 403, "kms:ReEncryptTo"},
		{"allow only for a public source", publicOnly,
			client.ReEncryptRequest{Ciphertext: ctRestricted.Ciphertext, SourceContext: restricted, DestinationContext: public}, 403, "kms:ReEncrypt on"},
		{"public to public", publicOnly,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public, DestinationKeyID: "alias/b", DestinationContext: public}, 200, ""},
		{"ReEncryptTo denied on the destination key", notToB,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public, DestinationKeyID: "alias/b"}, 403, "kms:ReEncryptTo on alias/b"},
		{"ReEncryptTo denied on the destination key named by id", notToB,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public, DestinationKeyID: b.ID}, 403, "kms:ReEncryptTo on " + b.ID},
		{"ReEncryptTo to the source key, not denied", notToB,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public}, 200, ""},
		{"no ReEncryptTo at all, destination omitted", sourceOnly,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public}, 403, "kms:ReEncryptTo on " + a.ID},
		{"ReEncryptTo only on b, destination omitted (a)", toBOnly,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public}, 403, "kms:ReEncryptTo on " + a.ID},
		{"ReEncryptTo only on b, to b", toBOnly,
			client.ReEncryptRequest{Ciphertext: ctPublic.Ciphertext, SourceContext: public, DestinationKeyID: "alias/b"}, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, raw := e.call("POST", "/v1/kms/reencrypt", c.tok, c.req)
			if st != c.status || !strings.Contains(string(raw), c.msg) {
				t.Fatalf("%d %s, want %d naming %q", st, raw, c.status, c.msg)
			}
		})
	}
}
