package client

import (
	"context"
	"net/http"
)

// Members lists the replicas that share the server's store, by id, with
// the one holding the job leadership marked (GET /v1/sys/members; needs
// sys:ReadMembers). A single-node server lists itself. With several
// endpoints it is the answer of the first that answers.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out MemberList
	if err := c.do(ctx, http.MethodGet, "/v1/sys/members", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Members, nil
}
