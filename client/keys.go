package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// keyPath returns the escaped path of a key named by id or "alias/NAME",
// followed by suffix. The slash of an alias is escaped as %2F so the name
// stays one path segment.
func keyPath(key, suffix string) (string, error) {
	if key == "" {
		return "", errors.New("client: key id or alias must not be empty")
	}
	return "/v1/keys/" + url.PathEscape(key) + suffix, nil
}

// keyCall sends a request about one key and decodes the Key answer.
func (c *Client) keyCall(ctx context.Context, method, key, suffix string, in any) (*Key, error) {
	path, err := keyPath(key, suffix)
	if err != nil {
		return nil, err
	}
	var out Key
	if err := c.do(ctx, method, path, nil, in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateKey creates a key encryption key (POST /v1/keys).
func (c *Client) CreateKey(ctx context.Context, req CreateKeyRequest) (*Key, error) {
	var out Key
	if err := c.do(ctx, http.MethodPost, "/v1/keys", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListKeys lists all keys (GET /v1/keys).
func (c *Client) ListKeys(ctx context.Context) (*KeyList, error) {
	var out KeyList
	if err := c.do(ctx, http.MethodGet, "/v1/keys", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DescribeKey returns the metadata of the key named by id or "alias/NAME"
// (GET /v1/keys/{key}).
func (c *Client) DescribeKey(ctx context.Context, key string) (*Key, error) {
	return c.keyCall(ctx, http.MethodGet, key, "", nil)
}

// UpdateKey changes a key's description, rotation period or tags (PATCH
// /v1/keys/{key}). Nil fields of req are left unchanged.
func (c *Client) UpdateKey(ctx context.Context, key string, req UpdateKeyRequest) (*Key, error) {
	return c.keyCall(ctx, http.MethodPatch, key, "", req)
}

// EnableKey enables a disabled key (POST /v1/keys/{key}/enable).
func (c *Client) EnableKey(ctx context.Context, key string) (*Key, error) {
	return c.keyCall(ctx, http.MethodPost, key, "/enable", nil)
}

// DisableKey disables a key so it can no longer encrypt or decrypt (POST
// /v1/keys/{key}/disable).
func (c *Client) DisableKey(ctx context.Context, key string) (*Key, error) {
	return c.keyCall(ctx, http.MethodPost, key, "/disable", nil)
}

// RotateKey adds a new primary version to a key (POST
// /v1/keys/{key}/rotate). Older versions still decrypt.
func (c *Client) RotateKey(ctx context.Context, key string) (*Key, error) {
	return c.keyCall(ctx, http.MethodPost, key, "/rotate", nil)
}

// ScheduleKeyDeletion schedules a key's deletion after req.PendingDays days
// (POST /v1/keys/{key}/schedule-deletion).
func (c *Client) ScheduleKeyDeletion(ctx context.Context, key string, req ScheduleDeletionRequest) (*Key, error) {
	return c.keyCall(ctx, http.MethodPost, key, "/schedule-deletion", req)
}

// CancelKeyDeletion cancels a scheduled deletion; the key comes back
// disabled (POST /v1/keys/{key}/cancel-deletion).
func (c *Client) CancelKeyDeletion(ctx context.Context, key string) (*Key, error) {
	return c.keyCall(ctx, http.MethodPost, key, "/cancel-deletion", nil)
}

// CreateAlias points the alias a.Name ("alias/NAME") at the key a.KeyID
// (POST /v1/aliases).
func (c *Client) CreateAlias(ctx context.Context, a Alias) (*Alias, error) {
	var out Alias
	if err := c.do(ctx, http.MethodPost, "/v1/aliases", nil, a, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAliases lists aliases (GET /v1/aliases). A non-empty keyID lists only
// the aliases of that key.
func (c *Client) ListAliases(ctx context.Context, keyID string) (*AliasList, error) {
	var q url.Values
	if keyID != "" {
		q = url.Values{"key_id": {keyID}}
	}
	var out AliasList
	if err := c.do(ctx, http.MethodGet, "/v1/aliases", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateAlias moves the existing alias name ("alias/NAME") to the key
// keyID names, atomically: the alias never stops naming a key (PUT
// /v1/aliases/{name}). It needs key:DeleteAlias on the alias and its
// current key and key:CreateAlias on the alias and the new key; a
// concurrent move of the same alias makes it fail with 409 (retry).
func (c *Client) UpdateAlias(ctx context.Context, name, keyID string) (*Alias, error) {
	if name == "" {
		return nil, errors.New("client: alias name must not be empty")
	}
	var out Alias
	if err := c.do(ctx, http.MethodPut, "/v1/aliases/"+url.PathEscape(name), nil, UpdateAliasRequest{KeyID: keyID}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteAlias deletes an alias named like "alias/NAME" (DELETE
// /v1/aliases/{name}). The key it pointed at is not affected.
func (c *Client) DeleteAlias(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("client: alias name must not be empty")
	}
	return c.do(ctx, http.MethodDelete, "/v1/aliases/"+url.PathEscape(name), nil, nil, nil)
}
