package server

import (
	"context"
	"net/http"
	"os"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/replica"
	"github.com/cofferkms/coffer/internal/sys"
)

// memberRoutes serves the replica list (sys:ReadMembers), read from the
// records the replicas keep in the store (internal/replica).
func (s *Server) memberRoutes() {
	if s.replica == nil {
		s.replica = singleReplica(s.sys, "", "")
	}
	s.mux.HandleFunc("GET /v1/sys/members", handle(s, route{action: "sys:ReadMembers"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.MemberList, error) {
			ms, err := s.replica.Members(ctx)
			if err != nil {
				return client.MemberList{}, err
			}
			out := client.MemberList{Members: make([]client.Member, 0, len(ms))}
			for _, m := range ms {
				out.Members = append(out.Members, client.Member{ID: m.ID, Address: m.Address, Version: m.Version, Sealed: m.Sealed,
					Started: m.Started, LastHeartbeat: m.Heartbeat, Leader: m.Leader})
			}
			return out, nil
		}))
}

// singleReplica is the replica of a single-node server: id defaults to
// the host name.
func singleReplica(s *sys.Sys, id, addr string) *replica.Single {
	if id == "" {
		id, _ = os.Hostname()
	}
	return replica.NewSingle(replica.Config{ID: id, Address: addr, Version: sys.Version, Sealed: s.Barrier.Sealed})
}
