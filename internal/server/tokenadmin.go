package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/auth"
)

// tokenAdminRoutes serves the token administration reads: looking a token
// up by its accessor (token:Lookup on the accessor) and listing tokens
// (token:List). Neither ever returns a token value.
func (s *Server) tokenAdminRoutes() {
	m := s.mux
	m.HandleFunc("POST /v1/auth/token/lookup", handle(s, route{action: "token:Lookup"},
		func(_ *http.Request, req *client.LookupTokenRequest) string { return req.Accessor },
		func(_ context.Context, _ *http.Request, _ auth.Principal, req *client.LookupTokenRequest) (client.TokenInfo, error) {
			if req.Accessor == "" {
				return client.TokenInfo{}, badRequest("accessor is required")
			}
			p, ok := s.sys.Tokens.Get(req.Accessor)
			if !ok {
				if _, isCred := credential.Kind(req.Accessor); isCred {
					// Not repeated: it may be the very token.
					return client.TokenInfo{}, badRequest("that is a credential, not an accessor (they start with acc_); treat it as exposed")
				}
				return client.TokenInfo{}, fmt.Errorf("%w: no such token or accessor %q", auth.ErrNotFound, req.Accessor)
			}
			return tokenInfo(p), nil
		}))
	m.HandleFunc("GET /v1/auth/token/list", handle(s, route{action: "token:List"}, nil,
		func(context.Context, *http.Request, auth.Principal, *empty) (client.TokenList, error) {
			l := client.TokenList{Tokens: []client.TokenInfo{}}
			for _, p := range s.sys.Tokens.List() {
				l.Tokens = append(l.Tokens, tokenInfo(p))
			}
			return l, nil
		}))
}
