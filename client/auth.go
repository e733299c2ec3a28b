package client

import (
	"context"
	"errors"
	"net/http"
)

// CreateToken creates a new token (POST /v1/auth/token/create). The token in
// the answer is shown once.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (*CreateTokenResponse, error) {
	var out CreateTokenResponse
	if err := c.do(ctx, http.MethodPost, "/v1/auth/token/create", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LookupSelf describes the token the Client uses (GET
// /v1/auth/token/lookup-self).
func (c *Client) LookupSelf(ctx context.Context) (*TokenInfo, error) {
	var out TokenInfo
	if err := c.do(ctx, http.MethodGet, "/v1/auth/token/lookup-self", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LookupToken describes the token with accessor (POST
// /v1/auth/token/lookup, action token:Lookup on the accessor).
func (c *Client) LookupToken(ctx context.Context, accessor string) (*TokenInfo, error) {
	var out TokenInfo
	if err := c.do(ctx, http.MethodPost, "/v1/auth/token/lookup", nil, LookupTokenRequest{Accessor: accessor}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListTokens lists the tokens that have not expired, oldest first, without
// their values (GET /v1/auth/token/list, action token:List).
func (c *Client) ListTokens(ctx context.Context) ([]TokenInfo, error) {
	var out TokenList
	if err := c.do(ctx, http.MethodGet, "/v1/auth/token/list", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Tokens, nil
}

// RevokeToken revokes a token named by itself or by its accessor (POST
// /v1/auth/token/revoke). Exactly one of req.Token and req.Accessor must be
// set.
func (c *Client) RevokeToken(ctx context.Context, req RevokeTokenRequest) error {
	if (req.Token == "") == (req.Accessor == "") {
		return errors.New("client: RevokeToken: set exactly one of Token and Accessor")
	}
	return c.do(ctx, http.MethodPost, "/v1/auth/token/revoke", nil, req, nil)
}

// RevokeSelf revokes the token the Client uses (POST
// /v1/auth/token/revoke-self). Later requests with it fail with 401.
func (c *Client) RevokeSelf(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/auth/token/revoke-self", nil, nil, nil)
}

// ReportLeakedTokens reports Coffer tokens found leaked, by the hex SHA-256
// of each token (never the tokens): the server revokes the ones it issued
// and raises an alert if they are used again.
func (c *Client) ReportLeakedTokens(ctx context.Context, req ReportLeakedRequest) (*ReportLeakedResponse, error) {
	var out ReportLeakedResponse
	if err := c.do(ctx, http.MethodPost, "/v1/auth/token/report-leaked", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
