package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/server/awskms"
	"github.com/cofferkms/coffer/internal/storage"
)

// Moving an alias (AWS's UpdateAlias, PUT /v1/aliases/{name}). A move is
// the removal of the alias from its key and its creation for another, and
// is authorized as both: key:DeleteAlias on the alias and on the key it
// points at, key:CreateAlias on the alias and on the new key (each key
// half decided on the key's id, with its names and key policy, as
// authorizeAlias does). AWS asks kms:UpdateAlias on the same three; a
// caller who may delete the alias and create it again may move it, and
// no one else. The request is audited as key:UpdateAlias, which is no
// policy action.

// actionUpdateAlias is the audit action of an alias move.
const actionUpdateAlias = "key:UpdateAlias"

// updateAlias authorizes and moves alias name to the key ref names; every
// door's alias move is this call. The key service stores the move only
// while the alias still points at the key authorized as the old one.
func (s *Server) updateAlias(ctx context.Context, r *http.Request, p *auth.Principal, name, ref string) (keys.Alias, error) {
	if !strings.HasPrefix(name, keys.AliasPrefix) {
		return keys.Alias{}, fmt.Errorf("%w: alias %q must start with %q", keys.ErrInvalidArgument, boundString(name, 300), keys.AliasPrefix)
	}
	if ref == "" {
		return keys.Alias{}, fmt.Errorf("%w: the key to point the alias at is required", keys.ErrInvalidArgument)
	}
	from, err := s.authorizeAlias(ctx, r, p, "key:DeleteAlias", name, name)
	if err != nil {
		return keys.Alias{}, err
	}
	if strings.HasPrefix(from, keys.AliasPrefix) {
		// The alias named no key when it was authorized.
		return keys.Alias{}, fmt.Errorf("%w: %q does not exist; create it first", keys.ErrAliasNotFound, name)
	}
	if rec := recordOf(ctx); rec != nil {
		// The record's key is the new one: the trail keeps the old one
		// too, or a move could not be traced back.
		rec.Detail = "previous_key_id=" + from
	}
	to, err := s.authorizeAlias(ctx, r, p, "key:CreateAlias", name, ref)
	if err != nil {
		return keys.Alias{}, err
	}
	if strings.HasPrefix(to, keys.AliasPrefix) {
		// As createAlias: not resolved again, or an alias created
		// meanwhile would decide the key.
		return keys.Alias{}, fmt.Errorf("%w: alias %q does not exist", keys.ErrNotFound, boundString(ref, 300))
	}
	// The ids, not the caller's references: the move is stored only
	// while the alias points at the key authorized as the old one, and
	// it goes to the key authorized as the new one.
	return s.sys.Keys.UpdateAlias(ctx, name, to, from)
}

// aliasMoveRoute registers PUT /v1/aliases/{name}: the REST door's alias
// move.
func (s *Server) aliasMoveRoute() {
	s.mux.HandleFunc("PUT /v1/aliases/{name}", handle(s, route{action: actionUpdateAlias, selfAuthz: true},
		func(r *http.Request, _ *client.UpdateAliasRequest) string { return r.PathValue("name") },
		func(ctx context.Context, r *http.Request, p auth.Principal, req *client.UpdateAliasRequest) (client.Alias, error) {
			return aliasAnswer(s.updateAlias(ctx, r, &p, r.PathValue("name"), req.KeyID))
		}))
}

// awsAliasRoutes registers UpdateAlias.
func (s *Server) awsAliasRoutes() {
	d := &s.aws
	awsOp(s, "UpdateAlias", actionUpdateAlias, route{selfAuthz: true},
		func(_ *http.Request, q *awskms.AliasRequest) string { return q.AliasName },
		func(ctx context.Context, r *http.Request, p auth.Principal, q *awskms.AliasRequest) (struct{}, error) {
			if q.AliasName == "" || q.TargetKeyId == "" {
				return struct{}{}, awsErr("ValidationException", "AliasName and TargetKeyId are required")
			}
			ref, err := d.ref(q.TargetKeyId)
			if err != nil {
				return struct{}{}, err
			}
			_, err = s.updateAlias(ctx, r, &p, q.AliasName, ref)
			if errors.Is(err, storage.ErrConflict) {
				// Moved by another call meanwhile: AWS's "try again
				// later" answer.
				err = &awsTypedError{typ: "ConflictException", status: http.StatusBadRequest, err: err}
			}
			return struct{}{}, err
		})
}
