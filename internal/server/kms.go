package server

import (
	"context"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/ciphertext"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/policy"
)

func (s *Server) kmsRoutes() {
	k := s.sys.Keys
	m := s.mux
	m.HandleFunc("POST /v1/kms/encrypt", handle(s, route{action: "kms:Encrypt"},
		func(_ *http.Request, req *client.EncryptRequest) string { return req.KeyID },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.EncryptRequest) (client.EncryptResponse, error) {
			return s.encrypt(ctx, req)
		}))
	m.HandleFunc("POST /v1/kms/decrypt", handle(s, route{action: "kms:Decrypt"},
		func(_ *http.Request, req *client.DecryptRequest) string { return ciphertextKey(req.Ciphertext) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.DecryptRequest) (client.DecryptResponse, error) {
			return s.decrypt(ctx, req)
		}))
	m.HandleFunc("POST /v1/kms/reencrypt", handle(s, route{action: "kms:ReEncrypt", selfAuthz: true},
		func(_ *http.Request, req *client.ReEncryptRequest) string { return ciphertextKey(req.Ciphertext) },
		func(ctx context.Context, r *http.Request, p auth.Principal, req *client.ReEncryptRequest) (client.ReEncryptResponse, error) {
			if err := s.preAuthorize(&p, "kms:ReEncrypt"); err != nil {
				return client.ReEncryptResponse{}, err
			}
			if len(req.Ciphertext) == 0 {
				return client.ReEncryptResponse{}, badRequest("ciphertext is required")
			}
			if err := s.authorizeReEncrypt(ctx, r, &p, req); err != nil {
				return client.ReEncryptResponse{}, err
			}
			src, dst, err := k.ReEncrypt(ctx, req.Ciphertext, req.SourceContext, req.DestinationKeyID, req.DestinationContext)
			if err != nil {
				return client.ReEncryptResponse{}, err
			}
			return client.ReEncryptResponse{Ciphertext: dst.Ciphertext, SourceKeyID: src.KeyID, SourceKeyVersion: src.KeyVersion,
				KeyID: dst.KeyID, KeyVersion: dst.KeyVersion}, nil
		}))
	for _, withPlain := range []bool{true, false} {
		path, action := "/v1/kms/datakey", "kms:GenerateDataKey"
		if !withPlain {
			path, action = "/v1/kms/datakey-without-plaintext", "kms:GenerateDataKeyWithoutPlaintext"
		}
		m.HandleFunc("POST "+path, handle(s, route{action: action},
			func(_ *http.Request, req *client.DataKeyRequest) string { return req.KeyID },
			func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.DataKeyRequest) (client.DataKeyResponse, error) {
				dk, sealed, err := k.GenerateDataKey(ctx, req.KeyID, req.Bytes, req.Context)
				if err != nil {
					return client.DataKeyResponse{}, err
				}
				resp := client.DataKeyResponse{Ciphertext: sealed.Ciphertext, KeyID: sealed.KeyID, KeyVersion: sealed.KeyVersion}
				if withPlain {
					resp.Plaintext = dk
				} else {
					clear(dk)
				}
				return resp, nil
			}))
	}
	m.HandleFunc("POST /v1/kms/random", handle(s, route{action: "kms:GenerateRandom"}, nil,
		func(_ context.Context, _ *http.Request, _ auth.Principal, req *client.RandomRequest) (client.RandomResponse, error) {
			b, err := keys.GenerateRandom(req.Bytes)
			return client.RandomResponse{Random: b}, err
		}))
	// Batches are authorized item by item, each with its own key and
	// context, exactly as the single call of the item would be; the route
	// itself is only pre-authorized (the caller must hold some allow of the
	// action), so neither a batch key nor the route can stand in for an
	// item's own decision.
	m.HandleFunc("POST /v1/kms/encrypt-batch", handle(s, route{action: "kms:Encrypt", limit: MaxBatchBody, selfAuthz: true},
		func(_ *http.Request, req *client.BatchEncryptRequest) string { return req.KeyID },
		func(ctx context.Context, r *http.Request, p auth.Principal, req *client.BatchEncryptRequest) (client.BatchEncryptResponse, error) {
			if err := s.preAuthorize(&p, "kms:Encrypt"); err != nil {
				return client.BatchEncryptResponse{}, err
			}
			if err := checkBatch(len(req.Items)); err != nil {
				return client.BatchEncryptResponse{}, err
			}
			out := client.BatchEncryptResponse{Results: make([]client.BatchEncryptResult, len(req.Items))}
			for i := range req.Items {
				it := &req.Items[i]
				if it.KeyID == "" {
					it.KeyID = req.KeyID
				}
				var res client.EncryptResponse
				err := badRequest("key_id is required on the item or the batch")
				if it.KeyID != "" {
					if err = s.authorizeItem(ctx, r, &p, "kms:Encrypt", it.KeyID, it.Context); err == nil {
						res, err = s.encrypt(ctx, it)
					}
				}
				s.recordItem(ctx, it.KeyID, it.Context, res.KeyID, res.KeyVersion, err)
				if err != nil {
					out.Results[i].Error = itemError(err)
					continue
				}
				out.Results[i].EncryptResponse = res
			}
			return out, nil
		}))
	m.HandleFunc("POST /v1/kms/decrypt-batch", handle(s, route{action: "kms:Decrypt", limit: MaxBatchBody, selfAuthz: true}, nil,
		func(ctx context.Context, r *http.Request, p auth.Principal, req *client.BatchDecryptRequest) (client.BatchDecryptResponse, error) {
			if err := s.preAuthorize(&p, "kms:Decrypt"); err != nil {
				return client.BatchDecryptResponse{}, err
			}
			if err := checkBatch(len(req.Items)); err != nil {
				return client.BatchDecryptResponse{}, err
			}
			out := client.BatchDecryptResponse{Results: make([]client.BatchDecryptResult, len(req.Items))}
			for i := range req.Items {
				it := &req.Items[i]
				keyID, version := ciphertextRef(it.Ciphertext)
				err := s.authorizeItem(ctx, r, &p, "kms:Decrypt", keyID, it.Context)
				var res client.DecryptResponse
				if err == nil {
					res, err = s.decrypt(ctx, it)
				}
				s.recordItem(ctx, keyID, it.Context, keyID, version, err)
				if err != nil {
					out.Results[i].Error = itemError(err)
					continue
				}
				out.Results[i].DecryptResponse = res
			}
			return out, nil
		}))
}

func checkBatch(n int) error {
	if n == 0 {
		return badRequest("items is empty; send at least one item")
	}
	if n > MaxBatchItems {
		return badRequest("%d items; a batch holds at most %d", n, MaxBatchItems)
	}
	return nil
}

func itemError(err error) *client.Error {
	_, code, msg := classify(err)
	return &client.Error{Code: code, Message: msg}
}

func (s *Server) encrypt(ctx context.Context, req *client.EncryptRequest) (client.EncryptResponse, error) {
	sealed, err := s.sys.Keys.Encrypt(ctx, req.KeyID, req.Plaintext, req.Context)
	if err != nil {
		return client.EncryptResponse{}, err
	}
	return client.EncryptResponse{Ciphertext: sealed.Ciphertext, KeyID: sealed.KeyID, KeyVersion: sealed.KeyVersion}, nil
}

func (s *Server) decrypt(ctx context.Context, req *client.DecryptRequest) (client.DecryptResponse, error) {
	if len(req.Ciphertext) == 0 {
		return client.DecryptResponse{}, badRequest("ciphertext is required (standard base64)")
	}
	o, err := s.sys.Keys.Decrypt(ctx, req.Ciphertext, req.Context, req.KeyID)
	if err != nil {
		return client.DecryptResponse{}, err
	}
	return client.DecryptResponse{Plaintext: o.Plaintext, KeyID: o.KeyID, KeyVersion: o.KeyVersion}, nil
}

// ciphertextKey names the key a ciphertext was made with, for authorization
// before anything is decrypted; "" when the ciphertext does not parse (the
// decryption then fails with the parse error).
func ciphertextKey(ct []byte) string {
	id, _ := ciphertextRef(ct)
	return id
}

// ciphertextRef is ciphertextKey with the key version the ciphertext names.
func ciphertextRef(ct []byte) (keyID string, version uint32) {
	p, err := ciphertext.Parse(ct)
	if err != nil {
		return "", 0
	}
	return uuid.UUID(p.KeyID).String(), p.KeyVersion
}

// authorizeReEncrypt authorizes a ReEncrypt as the two operations it is:
// kms:ReEncrypt on the source key (the one the ciphertext names) with the
// source context, and kms:ReEncryptTo on the destination key with the
// destination context. The destination defaults to the source key and the
// destination context to the source context, exactly as keys.ReEncrypt
// does, and ReEncryptTo is checked also then: both decisions see the
// context under its own keys (context.NAME), never renamed.
func (s *Server) authorizeReEncrypt(ctx context.Context, r *http.Request, p *auth.Principal, req *client.ReEncryptRequest) error {
	src := ciphertextKey(req.Ciphertext)
	if err := s.authorizeItem(ctx, r, p, "kms:ReEncrypt", src, req.SourceContext); err != nil {
		return err
	}
	dst, dstCtx := req.DestinationKeyID, req.DestinationContext
	if dst == "" {
		dst = src
	}
	if dstCtx == nil {
		dstCtx = req.SourceContext
	}
	return s.authorizeItem(ctx, r, p, "kms:ReEncryptTo", dst, dstCtx)
}

// preAuthorizer is what preAuthorize needs of the Authorizer
// (iam.Service.PreAuthorize).
type preAuthorizer interface {
	PreAuthorize(p *auth.Principal, action string) error
}

// preAuthorize is the route-level decision of a selfAuthz route, whatever
// its body's size: the caller must hold some allow of action (or the
// request could never succeed). It cannot wrongly deny, since every item
// would be denied without such an allow, and it is no bypass, since every
// item is still decided in full; but it keeps a caller without rights from
// making the server work through, and record, a thousand denied items.
func (s *Server) preAuthorize(p *auth.Principal, action string) error {
	if pa, ok := s.authz.(preAuthorizer); ok {
		return pa.PreAuthorize(p, action)
	}
	return nil
}

// recordKey is the context key under which handle passes a call the audit
// record of its request.
type recordKey struct{}

// withRecord gives the call of a route access to its request's audit
// record, to name what only the call knows (batch items, an alias's key).
func withRecord(ctx context.Context, rec *audit.Record) context.Context {
	return context.WithValue(ctx, recordKey{}, rec)
}

// recordOf returns the audit record of the request ctx serves; nil outside
// handle.
func recordOf(ctx context.Context) *audit.Record {
	rec, _ := ctx.Value(recordKey{}).(*audit.Record)
	return rec
}

// recordItem adds one batch item to the request's audit record: the key
// as named, the key id (resolved when the operation did not get to name
// it), the version, the context (the trail keeps only HMACs of its values)
// and the outcome.
func (s *Server) recordItem(ctx context.Context, ref string, ec map[string]string, keyID string, version uint32, err error) {
	rec := recordOf(ctx)
	if rec == nil {
		return
	}
	it := audit.Item{Resource: ref, KeyID: keyID, Version: version, ContextValues: ec, Outcome: "ok"}
	if err != nil {
		_, it.ErrorCode, _ = classify(err)
		it.Outcome = "error"
	}
	if it.KeyID == "" && ref != "" {
		if id, _, nerr := s.sys.Keys.Names(ref); nerr == nil {
			it.KeyID = id
		}
	}
	rec.AddItem(it)
}

// authorizeItem authorizes one item of a batch (or a second key of one
// request) the way handle authorizes a request.
func (s *Server) authorizeItem(ctx context.Context, r *http.Request, p *auth.Principal, action, resource string, ec map[string]string) error {
	q := policy.Request{Action: action, Resource: resource, Context: ec, SourceIP: sourceAddr(r), Time: time.Now()}
	return s.authz.Authorize(ctx, p, &q)
}
