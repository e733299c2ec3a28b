package client

import (
	"context"
	"net/http"
)

// AuditPublicKey is the answer of GET /v1/sys/audit/public-key: the key
// that verifies the audit log's checkpoints.
type AuditPublicKey struct {
	PublicKey string `json:"public_key"` // base64
	Algorithm string `json:"algorithm"`  // ed25519
}

// AuditHashRequest is the body of POST /v1/sys/audit/hash.
type AuditHashRequest struct {
	Value string `json:"value"`
}

// AuditHashResponse holds the HMAC the audit log records for a value.
type AuditHashResponse struct {
	HMAC string `json:"hmac"`
}

// AuditPublicKey returns the audit checkpoint verification key.
func (c *Client) AuditPublicKey(ctx context.Context) (*AuditPublicKey, error) {
	var out AuditPublicKey
	if err := c.do(ctx, http.MethodGet, "/v1/sys/audit/public-key", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditHash returns the HMAC under which the audit log records value (a
// token or an encryption-context value).
func (c *Client) AuditHash(ctx context.Context, value string) (*AuditHashResponse, error) {
	var out AuditHashResponse
	if err := c.do(ctx, http.MethodPost, "/v1/sys/audit/hash", nil, AuditHashRequest{Value: value}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
