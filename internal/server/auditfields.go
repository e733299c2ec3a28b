package server

import (
	"context"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/auth"
)

// DoorHeader names the front door a request came through when an adapter
// (the KMS plugin) calls the REST API on behalf of another protocol. Any
// client can send it, so it is recorded as a claim: door
// "claimed:kms-plugin", never "kms-plugin" (docs/audit.md). Only known
// values are recorded; anything else is "rest".
const DoorHeader = "X-Coffer-Door"

var knownDoors = map[string]string{"kms-plugin": "claimed:kms-plugin"}

func doorOf(r *http.Request) string {
	if d, ok := knownDoors[r.Header.Get(DoorHeader)]; ok {
		return d
	}
	return "rest"
}

// Bounds of the caller-controlled strings a record holds: whatever a
// caller sends, its record stays small (issue 13, item 7).
const (
	// maxAuditResource bounds a record's resource (a key id, alias/NAME
	// of at most 256 characters, a policy, role or access key name).
	maxAuditResource = 320
	// maxAuditName bounds each principal field (display names, roles,
	// Kubernetes names, certificate subjects).
	maxAuditName = 256
	// maxMessage bounds an error message, which may quote what the
	// caller sent.
	maxMessage = 4096
)

// auditResource is a request's resource as its record keeps it: bounded,
// and never a token or access key secret typed where a name belongs (an
// accessor, a principal, an access key id): the trail is read by more
// people than the credential's owner.
func auditResource(s string) string {
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == '/' }) {
		if k, ok := credential.Kind(part); ok && k != credential.KindAccessKeyID {
			return "(a credential, not recorded)"
		}
	}
	return boundString(s, maxAuditResource)
}

// boundString cuts s to at most n bytes, at a UTF-8 boundary, marking the
// cut with "...".
func boundString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func principalOf(p *auth.Principal) audit.Principal {
	kind := p.Kind
	if kind == "" {
		kind = auth.KindToken
	}
	acc := p.Accessor
	if p.Kind == auth.KindAccessKey {
		acc = p.ID // the key id names the credential, for alerts and their responses
	}
	b := func(s string) string { return boundString(s, maxAuditName) }
	return audit.Principal{Kind: b(kind), ID: b(p.ID), Name: b(p.DisplayName), Accessor: b(acc), Role: b(p.Role),
		Cluster: b(p.Cluster), Namespace: b(p.Namespace), ServiceAccount: b(p.ServiceAccount)}
}

// contextOf returns the encryption context of a request, whose values the
// trail records only as HMACs.
func contextOf(req any) map[string]string {
	if d, ok := req.(restFormer); ok {
		req = d.restForm() // a compatible door's request: as its REST twin
	}
	switch v := req.(type) {
	case *client.EncryptRequest:
		return v.Context
	case *client.DecryptRequest:
		return v.Context
	case *client.DataKeyRequest:
		return v.Context
	case *client.ReEncryptRequest:
		if len(v.DestinationContext) == 0 {
			return v.SourceContext
		}
		m := make(map[string]string, len(v.SourceContext)+len(v.DestinationContext))
		for k, x := range v.SourceContext {
			m["source:"+k] = x
		}
		for k, x := range v.DestinationContext {
			m["destination:"+k] = x
		}
		return m
	}
	return nil
}

// keyOf records the key id and version an answer names.
func keyOf(rec *audit.Record, resp any) {
	switch v := resp.(type) {
	case client.EncryptResponse:
		rec.KeyID, rec.Version = v.KeyID, v.KeyVersion
	case client.DecryptResponse:
		rec.KeyID, rec.Version = v.KeyID, v.KeyVersion
	case client.DataKeyResponse:
		rec.KeyID, rec.Version = v.KeyID, v.KeyVersion
	case client.ReEncryptResponse:
		rec.KeyID, rec.Version = v.KeyID, v.KeyVersion
	case client.Key:
		rec.KeyID, rec.Version = v.ID, v.PrimaryVersion
	case client.KeyPolicy:
		rec.KeyID = v.KeyID // the key a policy named by alias was read or set on
	case client.BatchEncryptResponse:
		for _, r := range v.Results {
			if r.Error == nil {
				rec.KeyID, rec.Version = r.KeyID, r.KeyVersion
				break
			}
		}
	}
}

// mutates reports whether a request changes state, so that it is recorded
// (an intent record) before the change. Cryptographic operations change
// nothing: their effect is the answer, which is withheld on audit failure.
func mutates(r *http.Request, action string) bool {
	return r.Method != http.MethodGet && !strings.HasPrefix(action, "kms:") &&
		action != "audit:Hash" && action != "token:LookupSelf" && action != "sys:SealStatus" && action != "policy:Simulate" &&
		action != "secret:List" // POST /v1/secrets/wait reads
}

// auditRoutes serve the audit public key and the HMAC of a value.
func (s *Server) auditRoutes() {
	if s.auditKeys == nil {
		return
	}
	s.mux.HandleFunc("GET /v1/sys/audit/public-key", handle(s, route{action: "audit:PublicKey", public: true, sealedOK: true}, nil,
		func(context.Context, *http.Request, auth.Principal, *empty) (client.AuditPublicKey, error) {
			return client.AuditPublicKey{PublicKey: s.auditKeys.PublicKeyString(), Algorithm: "ed25519"}, nil
		}))
	s.mux.HandleFunc("POST /v1/sys/audit/hash", handle(s, route{action: "audit:Hash"}, nil,
		func(_ context.Context, _ *http.Request, _ auth.Principal, req *client.AuditHashRequest) (client.AuditHashResponse, error) {
			if req.Value == "" {
				return client.AuditHashResponse{}, badRequest("value is required")
			}
			return client.AuditHashResponse{HMAC: s.auditKeys.HMAC(req.Value)}, nil
		}))
}
