package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/sys"
)

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// /readyz: whether this replica can serve (a load balancer's or
	// Kubernetes' readiness probe); status stays the machine-readable
	// word, reason says why not. Freshness comes first: it fails only on
	// an unsealed replica following a shared store, and then says more
	// than a storage error would.
	m.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.sys.Fresh(); err != nil {
			status := "stale"
			if errors.Is(err, barrier.ErrKeyringMismatch) {
				status = "keyring mismatch"
			}
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": status, "reason": err.Error()})
			return
		}
		st, err := s.sys.Status(r.Context())
		switch {
		case err != nil:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "storage unavailable",
				"reason": "the seal state could not be read from the storage (unreachable or failing); requests that need the storage fail too"})
		case !st.Initialized:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not initialized",
				"reason": "the store holds no root key yet: run `coffer operator init` once, against any replica"})
		case st.Sealed:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "sealed", "reason": sealedReason(st)})
		default:
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		}
	})

	// sys
	m.HandleFunc("GET /v1/sys/seal-status", handle(s, route{action: "sys:SealStatus", public: true, sealedOK: true}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.SealStatus, error) {
			return sealStatusAnswer(s.sys.Status(ctx))
		}))
	m.HandleFunc("POST /v1/sys/init", handle(s, route{action: "sys:Init", public: true, sealedOK: true, oneTime: true}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.InitRequest) (client.InitResponse, error) {
			return initAnswer(s.sys.Init(ctx, req.Shares, req.Threshold))
		}))
	m.HandleFunc("POST /v1/sys/unseal", handle(s, route{action: "sys:Unseal", public: true, sealedOK: true}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.UnsealRequest) (client.SealStatus, error) {
			if req.Reset {
				s.sys.ResetUnseal()
				return sealStatusAnswer(s.sys.Status(ctx))
			}
			if req.Share == "" {
				return client.SealStatus{}, badRequest("share is required (or reset: true)")
			}
			return sealStatusAnswer(s.sys.Unseal(ctx, req.Share))
		}))
	m.HandleFunc("POST /v1/sys/seal", handle(s, route{action: "sys:Seal"}, nil,
		func(context.Context, *http.Request, auth.Principal, *empty) (noContent, error) {
			s.sys.Seal()
			return noContent{}, nil
		}))

	// tokens
	m.HandleFunc("POST /v1/auth/token/create", handle(s, route{action: "token:Create", created: true}, nil,
		func(ctx context.Context, _ *http.Request, p auth.Principal, req *client.CreateTokenRequest) (client.CreateTokenResponse, error) {
			if err := s.checkTokenPolicies(&p, req.Policies); err != nil {
				return client.CreateTokenResponse{}, err
			}
			var ttl time.Duration
			if req.TTL != "" {
				d, err := keys.ParsePeriod(req.TTL)
				if err != nil {
					return client.CreateTokenResponse{}, badRequest("ttl %q: want a duration like 1h, 30m or 7d", req.TTL)
				}
				ttl = d
			}
			// The new token is bounded by its creator (scopes, networks,
			// expiry, subject) and revoked with it; its policies are
			// checked just before it is stored.
			return issued(s.sys.Tokens.Issue(ctx, auth.Spec{DisplayName: req.DisplayName, TTL: ttl, Policies: req.Policies, Parent: &p,
				Valid: s.sys.IAM.TokenPoliciesExist(req.Policies)}))
		}))
	// A Vault client (X-Vault-Token) gets Vault's shape (vault.go).
	m.HandleFunc("GET /v1/auth/token/lookup-self", orVault(s.vaultLookupSelf(), handle(s, route{action: "token:LookupSelf"}, nil,
		func(_ context.Context, _ *http.Request, p auth.Principal, _ *empty) (client.TokenInfo, error) {
			return tokenInfo(p), nil
		})))
	m.HandleFunc("POST /v1/auth/token/revoke", handle(s, route{action: "token:Revoke"},
		func(_ *http.Request, req *client.RevokeTokenRequest) string { return req.Accessor },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.RevokeTokenRequest) (noContent, error) {
			// The request is authorized and recorded on the accessor; with
			// both, the token would be revoked instead of what was decided.
			if req.Token != "" && req.Accessor != "" {
				return noContent{}, badRequest("give the token or its accessor, not both")
			}
			return noContent{}, s.sys.Tokens.Revoke(ctx, req.Token, req.Accessor)
		}))
	m.HandleFunc("POST /v1/auth/token/report-leaked", handle(s, route{action: "token:ReportLeaked"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.ReportLeakedRequest) (client.ReportLeakedResponse, error) {
			rep, err := s.sys.Tokens.ReportLeaked(ctx, req.Fingerprints)
			if err != nil {
				return client.ReportLeakedResponse{}, err
			}
			// Fingerprints of no token may be access key secrets.
			keysOff, already, err := s.sys.IAM.ReportLeaked(ctx, req.Fingerprints)
			if err != nil {
				return client.ReportLeakedResponse{}, err
			}
			// Sessions obtained with a leaked key die with it (a leaked
			// token's die with the token: they are its descendants).
			for _, id := range keysOff {
				if _, err := s.sys.IAM.RevokePrincipal(ctx, "access-key:"+id); err != nil {
					return client.ReportLeakedResponse{}, err
				}
			}
			rep.Revoked = append(rep.Revoked, keysOff...)
			rep.AlreadyRevoked += already
			rep.Unknown -= len(keysOff) + already
			if rep.Revoked == nil {
				rep.Revoked = []string{}
			}
			return client.ReportLeakedResponse{Revoked: rep.Revoked, AlreadyRevoked: rep.AlreadyRevoked, Unknown: rep.Unknown}, nil
		}))
	m.HandleFunc("POST /v1/auth/token/revoke-self", handle(s, route{action: "token:RevokeSelf"}, nil,
		func(ctx context.Context, _ *http.Request, p auth.Principal, _ *empty) (noContent, error) {
			return noContent{}, s.sys.Tokens.Revoke(ctx, "", p.Accessor)
		}))

	s.keyRoutes()
	s.kmsRoutes()
	s.iamRoutes()
	s.auditRoutes()
	s.tokenAdminRoutes()
	s.sysRoutes()
	s.memberRoutes()
	s.secretRoutes()
	s.secretWaitRoutes()
}

// pathKey is the {key} of a path: a key id or an escaped alias/NAME.
func pathKey(r *http.Request, _ *empty) string { return r.PathValue("key") }

func (s *Server) keyRoutes() {
	k := s.sys.Keys
	m := s.mux
	m.HandleFunc("POST /v1/keys", handle(s, route{action: "key:Create", created: true},
		func(_ *http.Request, req *client.CreateKeyRequest) string { return req.Alias },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.CreateKeyRequest) (client.Key, error) {
			return keyAnswer(k.Create(ctx, createKeyRequest(req)))
		}))
	m.HandleFunc("GET /v1/keys", handle(s, route{action: "key:List"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.KeyList, error) {
			return wireKeyList(k.List(ctx)), nil
		}))
	m.HandleFunc("GET /v1/keys/{key}", handle(s, route{action: "key:Describe"}, pathKey,
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.Key, error) {
			return keyAnswer(k.Describe(ctx, r.PathValue("key")))
		}))
	m.HandleFunc("PATCH /v1/keys/{key}", handle(s, route{action: "key:Update"},
		func(r *http.Request, _ *client.UpdateKeyRequest) string { return r.PathValue("key") },
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.UpdateKeyRequest) (client.Key, error) {
			return keyAnswer(k.Update(ctx, r.PathValue("key"), updateKeyRequest(req)))
		}))
	lifecycle := map[string]struct {
		action string
		fn     func(context.Context, string) (keys.Key, error)
	}{
		"enable":          {"key:Enable", k.Enable},
		"disable":         {"key:Disable", k.Disable},
		"rotate":          {"key:Rotate", k.Rotate},
		"cancel-deletion": {"key:CancelDeletion", k.CancelDeletion},
	}
	for verb, l := range lifecycle {
		m.HandleFunc("POST /v1/keys/{key}/"+verb, handle(s, route{action: l.action}, pathKey,
			func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.Key, error) {
				return keyAnswer(l.fn(ctx, r.PathValue("key")))
			}))
	}
	m.HandleFunc("POST /v1/keys/{key}/schedule-deletion", handle(s, route{action: "key:ScheduleDeletion"},
		func(r *http.Request, _ *client.ScheduleDeletionRequest) string { return r.PathValue("key") },
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.ScheduleDeletionRequest) (client.Key, error) {
			return keyAnswer(k.ScheduleDeletion(ctx, r.PathValue("key"), req.PendingDays))
		}))

	// An alias operation is an act on the alias and on its key (as AWS KMS
	// asks for both): the alias half is decided on the alias name alone,
	// the key half on the key's id, with its other names and its key
	// policy. The record names the key, also when either half refuses.
	m.HandleFunc("POST /v1/aliases", handle(s, route{action: "key:CreateAlias", created: true, selfAuthz: true},
		func(_ *http.Request, req *client.Alias) string { return req.Name },
		func(ctx context.Context, r *http.Request, p auth.Principal, req *client.Alias) (client.Alias, error) {
			return aliasAnswer(s.createAlias(ctx, r, &p, req.Name, req.KeyID))
		}))
	m.HandleFunc("GET /v1/aliases", handle(s, route{action: "key:ListAliases"}, nil,
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.AliasList, error) {
			return aliasListAnswer(k.ListAliases(ctx, r.URL.Query().Get("key_id")))
		}))
	m.HandleFunc("DELETE /v1/aliases/{name}", handle(s, route{action: "key:DeleteAlias", selfAuthz: true},
		func(r *http.Request, _ *empty) string { return r.PathValue("name") },
		func(ctx context.Context, r *http.Request, p auth.Principal, _ *empty) (noContent, error) {
			return noContent{}, s.deleteAlias(ctx, r, &p, r.PathValue("name"))
		}))
	s.aliasMoveRoute() // PUT /v1/aliases/{name} (awskms_alias.go)
}

// createAlias authorizes (authorizeAlias) and creates alias name for the
// key ref names; every door's CreateAlias is this call.
func (s *Server) createAlias(ctx context.Context, r *http.Request, p *auth.Principal, name, ref string) (keys.Alias, error) {
	id, err := s.authorizeAlias(ctx, r, p, "key:CreateAlias", name, ref)
	if err != nil {
		return keys.Alias{}, err
	}
	if strings.HasPrefix(id, keys.AliasPrefix) {
		// key_id named no key when it was authorized (as written,
		// with no key policy): it is not resolved again, or an
		// alias created meanwhile would decide the key.
		return keys.Alias{}, fmt.Errorf("%w: alias %q does not exist", keys.ErrNotFound, ref)
	}
	// The id, not the caller's reference: an alias moved meanwhile
	// cannot redirect the new one to a key not authorized.
	return s.sys.Keys.CreateAlias(ctx, name, id)
}

// deleteAlias authorizes (authorizeAlias) and deletes alias name; every
// door's DeleteAlias is this call.
func (s *Server) deleteAlias(ctx context.Context, r *http.Request, p *auth.Principal, name string) error {
	target := name
	if !strings.HasPrefix(name, keys.AliasPrefix) {
		target = "" // not an alias: authorized on the name, refused by DeleteAlias
	}
	id, err := s.authorizeAlias(ctx, r, p, "key:DeleteAlias", name, target)
	if err != nil {
		return err
	}
	// The alias must still name the key that was decided on (a
	// concurrent delete and create could have moved it).
	if now, _, err := s.sys.Keys.Names(name); err == nil && id != "" && now != id {
		return &apiError{http.StatusConflict, "conflict", name + " was pointed at another key meanwhile; retry"}
	}
	return s.sys.Keys.DeleteAlias(ctx, name)
}

// authorizeAlias authorizes an alias operation as the two acts it is:
// action on the alias name alone (iam decides key:CreateAlias and
// key:DeleteAlias on alias/NAME without the key's other names or key
// policy), and action on the key ref names, decided on the key's id (so
// with all its names and its key policy). It returns the key id and puts
// it in the request's audit record. A ref that names no key is authorized
// as written and returned as is: the caller must not let the key service
// resolve it again (an alias created meanwhile was not decided on).
func (s *Server) authorizeAlias(ctx context.Context, r *http.Request, p *auth.Principal, action, alias, ref string) (string, error) {
	id := ref
	if ref != "" {
		if kid, _, err := s.sys.Keys.Names(ref); err == nil {
			id = kid
			if rec := recordOf(ctx); rec != nil {
				rec.KeyID = id
			}
		}
	}
	if err := s.authorizeItem(ctx, r, p, action, alias, nil); err != nil {
		return "", err
	}
	if id == "" {
		return "", nil
	}
	if err := s.authorizeItem(ctx, r, p, action, id, nil); err != nil {
		return "", err
	}
	return id, nil
}

// sealedReason says why a replica is sealed and what unseals it.
func sealedReason(st sys.SealStatus) string {
	switch {
	case st.MigrationPending:
		return fmt.Sprintf("a seal migration from %s to %s is pending: submit a quorum of the current shares with `coffer operator migrate-seal`", st.Type, st.ConfiguredType)
	case st.Seal != nil && st.Seal.SealedByOperator:
		return fmt.Sprintf("sealed by an operator: restart the server, or submit a quorum of recovery shares with `coffer operator unseal` (%d of %d submitted)", st.Progress, st.RecoveryThreshold)
	case st.Seal != nil && st.Seal.LastUnsealError != "":
		return "the " + st.Seal.Type + " auto-unseal failed: " + st.Seal.LastUnsealError
	case st.Seal != nil:
		return "waiting for the " + st.Seal.Type + " auto-unseal"
	}
	return fmt.Sprintf("this replica is sealed (%d of %d shares submitted): unseal it with `coffer operator unseal`; each replica is unsealed on its own", st.Progress, st.Threshold)
}
