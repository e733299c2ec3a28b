package client

import (
	"context"
	"net/http"
)

// RotateKeyringResponse is the answer of POST /v1/sys/rotate-keyring.
type RotateKeyringResponse struct {
	// Term is the new keyring term; every later write is sealed under it.
	Term uint32 `json:"term"`
}

// RewrapResponse is the answer of POST /v1/sys/rewrap.
type RewrapResponse struct {
	// Term is the active keyring term the entries were rewritten under.
	Term uint32 `json:"term"`
	// Scanned counts the stored entries looked at, Rewrapped those
	// rewritten under Term and Current those that already were.
	Scanned   int `json:"scanned"`
	Rewrapped int `json:"rewrapped"`
	Current   int `json:"current"`
}

// RotateKeyring adds a new keyring term and makes it the one new writes
// are sealed under (POST /v1/sys/rotate-keyring, action sys:RotateKeyring).
// Entries written before stay readable; RewrapKeyring rewrites them.
func (c *Client) RotateKeyring(ctx context.Context) (*RotateKeyringResponse, error) {
	var out RotateKeyringResponse
	if err := c.do(ctx, http.MethodPost, "/v1/sys/rotate-keyring", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RewrapKeyring rewrites every stored entry sealed under an older keyring
// term under the active one (POST /v1/sys/rewrap, action
// sys:RewrapKeyring). It is safe while the server takes writes and can be
// run again to resume after an interruption.
func (c *Client) RewrapKeyring(ctx context.Context) (*RewrapResponse, error) {
	var out RewrapResponse
	if err := c.do(ctx, http.MethodPost, "/v1/sys/rewrap", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
