package client

import (
	"context"
	"errors"
	"net/http"
)

// Health checks GET /healthz. It returns nil when the server process is up,
// whether or not it is sealed.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// Ready checks GET /readyz. It reports true when the server is initialized
// and unsealed, false when it answers 503 (sealed or not initialized), and an
// error for any other answer or when the server cannot be reached.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
	if err == nil {
		return true, nil
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusServiceUnavailable {
		return false, nil
	}
	return false, err
}

// SealStatus returns the seal state (GET /v1/sys/seal-status). It needs no
// token. With several endpoints it is the state of the first that answers
// (Address names it afterwards).
func (c *Client) SealStatus(ctx context.Context) (*SealStatus, error) {
	var out SealStatus
	if err := c.do(ctx, http.MethodGet, "/v1/sys/seal-status", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Init initializes a new server (POST /v1/sys/init) and returns its unseal
// shares and root token, which are shown exactly once. It needs no token and
// fails with status 400 when the server is already initialized.
func (c *Client) Init(ctx context.Context, req InitRequest) (*InitResponse, error) {
	var out InitResponse
	if err := c.do(ctx, http.MethodPost, "/v1/sys/init", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Unseal submits one unseal share, or discards the shares submitted so far
// when req.Reset is set (POST /v1/sys/unseal). The answer tells the progress;
// Sealed turns false once the threshold is reached. It needs no token.
//
// Each replica is unsealed on its own, so Unseal refuses to run on a Client
// with several endpoints: use one Client per replica.
func (c *Client) Unseal(ctx context.Context, req UnsealRequest) (*SealStatus, error) {
	if err := c.oneEndpoint("Unseal"); err != nil {
		return nil, err
	}
	var out SealStatus
	if err := c.do(ctx, http.MethodPost, "/v1/sys/unseal", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Seal seals the server (POST /v1/sys/seal). It needs the root token. Like
// Unseal it acts on one replica and refuses a Client with several endpoints.
func (c *Client) Seal(ctx context.Context) error {
	if err := c.oneEndpoint("Seal"); err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/sys/seal", nil, nil, nil)
}

// GenerateRootStatus returns the generate-root attempt of this server
// (GET /v1/sys/generate-root/attempt). It needs no token.
func (c *Client) GenerateRootStatus(ctx context.Context) (*GenerateRootStatus, error) {
	var out GenerateRootStatus
	return &out, c.onOne(ctx, "GenerateRootStatus", http.MethodGet, "/v1/sys/generate-root/attempt", nil, &out)
}

// GenerateRootStart starts a generate-root attempt with a one-time pad
// (POST /v1/sys/generate-root/attempt): otp is the standard base64 of
// OTPLength random bytes. The new root token is returned XORed with it.
func (c *Client) GenerateRootStart(ctx context.Context, otp string) (*GenerateRootStatus, error) {
	var out GenerateRootStatus
	return &out, c.onOne(ctx, "GenerateRootStart", http.MethodPost, "/v1/sys/generate-root/attempt", GenerateRootRequest{OTP: otp}, &out)
}

// GenerateRootCancel discards the generate-root attempt in progress.
func (c *Client) GenerateRootCancel(ctx context.Context) error {
	return c.onOne(ctx, "GenerateRootCancel", http.MethodDelete, "/v1/sys/generate-root/attempt", nil, nil)
}

// GenerateRootSubmit submits one unseal share (Shamir) or recovery share
// (auto-unseal) to the attempt with nonce. The answer to the last share
// has Complete set and the encoded token.
func (c *Client) GenerateRootSubmit(ctx context.Context, nonce, share string) (*GenerateRootStatus, error) {
	var out GenerateRootStatus
	return &out, c.onOne(ctx, "GenerateRootSubmit", http.MethodPost, "/v1/sys/generate-root/update", ShareSubmission{Nonce: nonce, Share: share}, &out)
}

// RekeyStatus returns the rekey attempt of this server (GET
// /v1/sys/rekey/attempt). It needs no token.
func (c *Client) RekeyStatus(ctx context.Context) (*RekeyStatus, error) {
	var out RekeyStatus
	return &out, c.onOne(ctx, "RekeyStatus", http.MethodGet, "/v1/sys/rekey/attempt", nil, &out)
}

// RekeyStart starts a rekey attempt for new share counts (POST
// /v1/sys/rekey/attempt).
func (c *Client) RekeyStart(ctx context.Context, req RekeyRequest) (*RekeyStatus, error) {
	var out RekeyStatus
	return &out, c.onOne(ctx, "RekeyStart", http.MethodPost, "/v1/sys/rekey/attempt", req, &out)
}

// RekeyCancel discards the rekey attempt in progress.
func (c *Client) RekeyCancel(ctx context.Context) error {
	return c.onOne(ctx, "RekeyCancel", http.MethodDelete, "/v1/sys/rekey/attempt", nil, nil)
}

// RekeySubmit submits one current share to the rekey attempt with nonce.
// The answer to the last share has Complete set and the new shares.
func (c *Client) RekeySubmit(ctx context.Context, nonce, share string) (*RekeyStatus, error) {
	var out RekeyStatus
	return &out, c.onOne(ctx, "RekeySubmit", http.MethodPost, "/v1/sys/rekey/update", ShareSubmission{Nonce: nonce, Share: share}, &out)
}

// MigrateSeal submits one share toward a pending seal migration (POST
// /v1/sys/migrate-seal). It needs no token.
func (c *Client) MigrateSeal(ctx context.Context, req MigrateSealRequest) (*MigrateSealResponse, error) {
	var out MigrateSealResponse
	return &out, c.onOne(ctx, "MigrateSeal", http.MethodPost, "/v1/sys/migrate-seal", req, &out)
}

// onOne sends a request that concerns one replica's state (an attempt, a
// migration): it refuses a Client with several endpoints.
func (c *Client) onOne(ctx context.Context, op, method, path string, in, out any) error {
	if err := c.oneEndpoint(op); err != nil {
		return err
	}
	return c.do(ctx, method, path, nil, in, out)
}
