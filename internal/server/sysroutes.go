package server

import (
	"context"
	"net/http"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
)

// sysRoutes serves the barrier keyring operations: rotating the keyring
// (sys:RotateKeyring), after which new writes are sealed under a new term,
// and rewrapping (sys:RewrapKeyring), which rewrites the entries sealed
// under older terms. Both are operator actions: the root token, or a
// policy that names them.
func (s *Server) sysRoutes() {
	m := s.mux
	m.HandleFunc("POST /v1/sys/rotate-keyring", handle(s, route{action: "sys:RotateKeyring"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.RotateKeyringResponse, error) {
			term, err := s.sys.RotateKeyring(ctx)
			return client.RotateKeyringResponse{Term: term}, err
		}))
	m.HandleFunc("POST /v1/sys/rewrap", handle(s, route{action: "sys:RewrapKeyring"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.RewrapResponse, error) {
			res, err := s.sys.Rewrap(ctx)
			return client.RewrapResponse{Term: res.Term, Scanned: res.Scanned, Rewrapped: res.Rewrapped, Current: res.Current}, err
		}))

	s.quorumRoutes()
}

// quorumRoutes serves the operations a quorum of shares authorises: a new
// root token (generate-root), new shares (rekey) and a seal migration.
// Like init and unseal they take no token (the root token may be the very
// thing lost): the shares are the authorisation, each attempt runs under a
// nonce every submission repeats, and each request is audited like any
// other (never with a share or token in the record).
func (s *Server) quorumRoutes() {
	m := s.mux
	pub := func(action string) route { return route{action: action, public: true} }
	m.HandleFunc("GET /v1/sys/generate-root/attempt", handle(s, pub("sys:GenerateRootStatus"), nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.GenerateRootStatus, error) {
			return generateRootAnswer(s.sys.GenerateRootStatus(ctx))
		}))
	m.HandleFunc("POST /v1/sys/generate-root/attempt", handle(s, pub("sys:GenerateRootStart"), nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.GenerateRootRequest) (client.GenerateRootStatus, error) {
			return generateRootAnswer(s.sys.GenerateRootStart(ctx, req.OTP))
		}))
	m.HandleFunc("DELETE /v1/sys/generate-root/attempt", handle(s, pub("sys:GenerateRootCancel"), nil,
		func(context.Context, *http.Request, auth.Principal, *empty) (noContent, error) {
			s.sys.GenerateRootCancel()
			return noContent{}, nil
		}))
	oneTime := func(action string) route { return route{action: action, public: true, oneTime: true} }
	m.HandleFunc("POST /v1/sys/generate-root/update", handle(s, oneTime("sys:GenerateRoot"), nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.ShareSubmission) (client.GenerateRootStatus, error) {
			if req.Nonce == "" || req.Share == "" {
				return client.GenerateRootStatus{}, badRequest("nonce and share are required")
			}
			return generateRootAnswer(s.sys.GenerateRootSubmit(ctx, req.Nonce, req.Share))
		}))
	m.HandleFunc("GET /v1/sys/rekey/attempt", handle(s, pub("sys:RekeyStatus"), nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.RekeyStatus, error) {
			return rekeyAnswer(s.sys.RekeyStatus(ctx))
		}))
	m.HandleFunc("POST /v1/sys/rekey/attempt", handle(s, pub("sys:RekeyStart"), nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.RekeyRequest) (client.RekeyStatus, error) {
			return rekeyAnswer(s.sys.RekeyStart(ctx, req.Shares, req.Threshold))
		}))
	m.HandleFunc("DELETE /v1/sys/rekey/attempt", handle(s, pub("sys:RekeyCancel"), nil,
		func(context.Context, *http.Request, auth.Principal, *empty) (noContent, error) {
			s.sys.RekeyCancel()
			return noContent{}, nil
		}))
	m.HandleFunc("POST /v1/sys/rekey/update", handle(s, oneTime("sys:Rekey"), nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.ShareSubmission) (client.RekeyStatus, error) {
			if req.Nonce == "" || req.Share == "" {
				return client.RekeyStatus{}, badRequest("nonce and share are required")
			}
			return rekeyAnswer(s.sys.RekeySubmit(ctx, req.Nonce, req.Share))
		}))
	m.HandleFunc("POST /v1/sys/migrate-seal", handle(s, route{action: "sys:MigrateSeal", public: true, sealedOK: true, oneTime: true}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.MigrateSealRequest) (client.MigrateSealResponse, error) {
			if !req.Reset && req.Share == "" {
				return client.MigrateSealResponse{}, badRequest("share is required (or reset: true)")
			}
			return migrateSealAnswer(s.sys.MigrateSeal(ctx, migrateSealRequest(req)))
		}))
}
