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
}
