package client

import (
	"context"
	"net/http"
)

// kmsCall posts req to /v1/kms/{op} and decodes the answer into out.
func (c *Client) kmsCall(ctx context.Context, op string, req, out any) error {
	return c.do(ctx, http.MethodPost, "/v1/kms/"+op, nil, req, out)
}

// Encrypt encrypts req.Plaintext under the key req.KeyID, an id or
// "alias/NAME" (POST /v1/kms/encrypt). The same req.Context must be given to
// decrypt.
func (c *Client) Encrypt(ctx context.Context, req EncryptRequest) (*EncryptResponse, error) {
	var out EncryptResponse
	if err := c.kmsCall(ctx, "encrypt", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Decrypt decrypts a ciphertext made by Encrypt or GenerateDataKey (POST
// /v1/kms/decrypt). The ciphertext names its key.
func (c *Client) Decrypt(ctx context.Context, req DecryptRequest) (*DecryptResponse, error) {
	var out DecryptResponse
	if err := c.kmsCall(ctx, "decrypt", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReEncrypt decrypts a ciphertext and encrypts its plaintext again, under
// another key or the same key's primary version, without the plaintext
// leaving the server (POST /v1/kms/reencrypt).
func (c *Client) ReEncrypt(ctx context.Context, req ReEncryptRequest) (*ReEncryptResponse, error) {
	var out ReEncryptResponse
	if err := c.kmsCall(ctx, "reencrypt", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GenerateDataKey returns a fresh data key in plaintext and encrypted under
// req.KeyID (POST /v1/kms/datakey), for envelope encryption.
func (c *Client) GenerateDataKey(ctx context.Context, req DataKeyRequest) (*DataKeyResponse, error) {
	var out DataKeyResponse
	if err := c.kmsCall(ctx, "datakey", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GenerateDataKeyWithoutPlaintext is GenerateDataKey without the plaintext
// copy (POST /v1/kms/datakey-without-plaintext).
func (c *Client) GenerateDataKeyWithoutPlaintext(ctx context.Context, req DataKeyRequest) (*DataKeyResponse, error) {
	var out DataKeyResponse
	if err := c.kmsCall(ctx, "datakey-without-plaintext", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GenerateRandom returns req.Bytes random bytes from the server's CSPRNG
// (POST /v1/kms/random).
func (c *Client) GenerateRandom(ctx context.Context, req RandomRequest) (*RandomResponse, error) {
	var out RandomResponse
	if err := c.kmsCall(ctx, "random", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// EncryptBatch encrypts many plaintexts in one request (POST
// /v1/kms/encrypt-batch). Each item succeeds or fails on its own: check
// every result's Error. Results keep the order of req.Items.
func (c *Client) EncryptBatch(ctx context.Context, req BatchEncryptRequest) (*BatchEncryptResponse, error) {
	var out BatchEncryptResponse
	if err := c.kmsCall(ctx, "encrypt-batch", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DecryptBatch decrypts many ciphertexts in one request (POST
// /v1/kms/decrypt-batch). Each item succeeds or fails on its own: check
// every result's Error. Results keep the order of req.Items.
func (c *Client) DecryptBatch(ctx context.Context, req BatchDecryptRequest) (*BatchDecryptResponse, error) {
	var out BatchDecryptResponse
	if err := c.kmsCall(ctx, "decrypt-batch", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
