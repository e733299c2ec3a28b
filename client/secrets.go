package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SecretPutRequest writes a new version of a secret (POST
// /v1/secrets/data/NAME).
type SecretPutRequest struct {
	// Fields are the version's values by field name (at most 64 KiB of
	// names and values in all).
	Fields map[string]string `json:"fields"`
	// Key is the Coffer key (id or alias/NAME) of this and later
	// versions; empty keeps the secret's key (the default secrets key for
	// a new secret).
	Key string `json:"key,omitempty"`
	// CAS, when set, is the current version the secret must be at (0: the
	// secret must not exist); otherwise the write fails with 409
	// cas_mismatch.
	CAS *uint32 `json:"cas,omitempty"`
}

// SecretVersion describes one version of a secret, without its value.
type SecretVersion struct {
	Version uint32 `json:"version"`
	// Stages the version holds: current, previous, pending.
	Stages      []string   `json:"stages,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	KeyID       string     `json:"key_id"`
	KeyVersion  uint32     `json:"key_version"`
	Destroyed   bool       `json:"destroyed,omitempty"`
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
}

// SecretValue is one version of a secret with its fields (GET
// /v1/secrets/data/NAME).
type SecretValue struct {
	Name       string            `json:"name"`
	Version    uint32            `json:"version"`
	Stages     []string          `json:"stages,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	KeyID      string            `json:"key_id"`
	KeyVersion uint32            `json:"key_version"`
	Fields     map[string]string `json:"fields"`
}

// SecretMetadata describes a secret and its versions, without values (GET
// /v1/secrets/metadata/NAME).
type SecretMetadata struct {
	Name            string            `json:"name"`
	Key             string            `json:"key"`
	MaxVersions     int               `json:"max_versions"`
	Custom          map[string]string `json:"custom,omitempty"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"`
	CurrentVersion  uint32            `json:"current_version"`
	PreviousVersion uint32            `json:"previous_version,omitempty"`
	PendingVersion  uint32            `json:"pending_version,omitempty"`
	LatestVersion   uint32            `json:"latest_version"`
	// DeletedAt and PurgeAt are set while the secret is soft-deleted.
	DeletedAt *time.Time      `json:"deleted_at,omitempty"`
	PurgeAt   *time.Time      `json:"purge_at,omitempty"`
	Versions  []SecretVersion `json:"versions"`
	// Rotation is set when the secret has a rotation configuration.
	Rotation *SecretRotation `json:"rotation,omitempty"`
}

// SecretRotation is a secret's rotation configuration and state.
type SecretRotation struct {
	// Every is the rotation period ("30d" or a Go duration).
	Every string `json:"every"`
	// With is random:length=N,charset=...,field=NAME, webhook:URL, or
	// webhook:length=N,charset=...,field=NAME,url=URL.
	With string `json:"with"`
	// NextAt is when the next rotation (or retry) is due.
	NextAt time.Time `json:"next_at"`
	// State is idle, pending (a rotation in progress) or failed.
	State string `json:"state"`
	// Attempts counts failed attempts since the last success.
	Attempts int `json:"attempts,omitempty"`
	// LastError describes the last failure (never a value).
	LastError   string     `json:"last_error,omitempty"`
	LastRotated *time.Time `json:"last_rotated,omitempty"`
	// Unsigned: a webhook rotation configured before calls were signed;
	// its calls carry no Coffer-Signature until rotation is set again.
	Unsigned bool `json:"unsigned,omitempty"`
	// SigningKey (base64, 32 bytes) is set only in the answer of the
	// rotation set that made it: the webhook's signing key, shown this
	// once. Verify calls with VerifyWebhookSignature.
	SigningKey string `json:"signing_key,omitempty"`
}

// SecretRotationRequest configures a secret's rotation (PUT
// /v1/secrets/rotation/NAME).
type SecretRotationRequest struct {
	Every string `json:"every"`
	With  string `json:"with"`
	// RollSigningKey replaces a webhook rotation's signing key (the new
	// one is in the answer); otherwise setting the rotation again keeps it.
	RollSigningKey bool `json:"roll_signing_key,omitempty"`
}

// SecretRotateResult is a completed rotation (POST /v1/secrets/rotate/NAME).
type SecretRotateResult struct {
	Name            string `json:"name"`
	CurrentVersion  uint32 `json:"current_version"`
	PreviousVersion uint32 `json:"previous_version"`
	// Resumed: the rotation continued the pending version of an earlier
	// attempt.
	Resumed bool `json:"resumed,omitempty"`
}

// SecretMetadataUpdate changes a secret's metadata (PATCH
// /v1/secrets/metadata/NAME); nil or empty fields change nothing.
type SecretMetadataUpdate struct {
	MaxVersions *int              `json:"max_versions,omitempty"`
	Set         map[string]string `json:"set,omitempty"`
	Unset       []string          `json:"unset,omitempty"`
}

// SecretDeleteRequest soft-deletes a secret (POST /v1/secrets/delete/NAME).
type SecretDeleteRequest struct {
	// Window is the recovery window, 1d to 30d (default 7d).
	Window string `json:"window,omitempty"`
}

// SecretDestroyRequest destroys versions (POST /v1/secrets/destroy/NAME).
type SecretDestroyRequest struct {
	Versions []uint32 `json:"versions"`
}

// SecretListEntry is one secret of a list page.
type SecretListEntry struct {
	Name           string     `json:"name"`
	CurrentVersion uint32     `json:"current_version"`
	UpdatedAt      time.Time  `json:"updated_at"`
	DeletedAt      *time.Time `json:"deleted_at,omitempty"`
}

// SecretList is one page of GET /v1/secrets; Next, when set, is the after
// of the next page.
type SecretList struct {
	Secrets []SecretListEntry `json:"secrets"`
	Next    string            `json:"next,omitempty"`
}

// SecretGetOptions choose the version a read returns: Version when not 0,
// else Stage (current when empty).
type SecretGetOptions struct {
	Version uint32
	Stage   string
}

// SecretListOptions bound a list: names starting with Prefix, after the
// name After, at most Limit (0: the server's default, 100).
type SecretListOptions struct {
	Prefix string
	After  string
	Limit  int
}

// secretPath is /v1/secrets/KIND/NAME with each segment of the name
// escaped.
func secretPath(kind, name string) (string, error) {
	if name == "" {
		return "", errors.New("client: secret name must not be empty")
	}
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/v1/secrets/" + kind + "/" + strings.Join(segs, "/"), nil
}

func (c *Client) secretCall(ctx context.Context, method, kind, name string, query url.Values, in, out any) error {
	p, err := secretPath(kind, name)
	if err != nil {
		return err
	}
	return c.do(ctx, method, p, query, in, out)
}

// SecretPut writes a new version of the secret name and makes it current.
// A check-and-set mismatch is an *Error with code "cas_mismatch" whose
// message names the current version.
func (c *Client) SecretPut(ctx context.Context, name string, req SecretPutRequest) (*SecretVersion, error) {
	var out SecretVersion
	if err := c.secretCall(ctx, http.MethodPost, "data", name, nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretGet reads a version of the secret name (the current one by default).
func (c *Client) SecretGet(ctx context.Context, name string, opt SecretGetOptions) (*SecretValue, error) {
	q := url.Values{}
	if opt.Version != 0 {
		q.Set("version", strconv.FormatUint(uint64(opt.Version), 10))
	}
	if opt.Stage != "" {
		q.Set("stage", opt.Stage)
	}
	var out SecretValue
	if err := c.secretCall(ctx, http.MethodGet, "data", name, q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretList lists secrets by name prefix, one page at a time.
func (c *Client) SecretList(ctx context.Context, opt SecretListOptions) (*SecretList, error) {
	q := url.Values{}
	if opt.Prefix != "" {
		q.Set("prefix", opt.Prefix)
	}
	if opt.After != "" {
		q.Set("after", opt.After)
	}
	if opt.Limit != 0 {
		q.Set("limit", strconv.Itoa(opt.Limit))
	}
	var out SecretList
	if err := c.do(ctx, http.MethodGet, "/v1/secrets", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretMetadata returns a secret's metadata and version history (no
// values).
func (c *Client) SecretMetadata(ctx context.Context, name string) (*SecretMetadata, error) {
	var out SecretMetadata
	if err := c.secretCall(ctx, http.MethodGet, "metadata", name, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretUpdateMetadata changes max_versions and custom metadata.
func (c *Client) SecretUpdateMetadata(ctx context.Context, name string, req SecretMetadataUpdate) (*SecretMetadata, error) {
	var out SecretMetadata
	if err := c.secretCall(ctx, http.MethodPatch, "metadata", name, nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretDelete soft-deletes a secret, recoverable with SecretUndelete
// within the window ("" for the default 7d).
func (c *Client) SecretDelete(ctx context.Context, name, window string) (*SecretMetadata, error) {
	var out SecretMetadata
	if err := c.secretCall(ctx, http.MethodPost, "delete", name, nil, SecretDeleteRequest{Window: window}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretUndelete restores a soft-deleted secret within its window.
func (c *Client) SecretUndelete(ctx context.Context, name string) (*SecretMetadata, error) {
	var out SecretMetadata
	if err := c.secretCall(ctx, http.MethodPost, "undelete", name, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretDestroy erases the data of versions of a secret (irreversible).
func (c *Client) SecretDestroy(ctx context.Context, name string, versions ...uint32) (*SecretMetadata, error) {
	var out SecretMetadata
	if err := c.secretCall(ctx, http.MethodPost, "destroy", name, nil, SecretDestroyRequest{Versions: versions}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretSetRotation configures the rotation of a secret.
func (c *Client) SecretSetRotation(ctx context.Context, name string, req SecretRotationRequest) (*SecretMetadata, error) {
	var out SecretMetadata
	if err := c.secretCall(ctx, http.MethodPut, "rotation", name, nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretDisableRotation removes a secret's rotation configuration,
// rolling back a pending version.
func (c *Client) SecretDisableRotation(ctx context.Context, name string) (*SecretMetadata, error) {
	var out SecretMetadata
	if err := c.secretCall(ctx, http.MethodDelete, "rotation", name, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretRotate rotates a secret now and returns its new current version.
func (c *Client) SecretRotate(ctx context.Context, name string) (*SecretRotateResult, error) {
	var out SecretRotateResult
	if err := c.secretCall(ctx, http.MethodPost, "rotate", name, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretWaitRequest asks to be answered when a secret's current version
// changes (POST /v1/secrets/wait).
type SecretWaitRequest struct {
	// Secrets maps each secret name (1 to 1000 of them) to the current
	// version the caller holds (0: none, or the secret does not exist).
	Secrets map[string]uint32 `json:"secrets"`
	// Wait bounds the wait (a Go duration, at most 5m; "" for 30s).
	Wait string `json:"wait,omitempty"`
}

// SecretChange is the state of one secret whose current version differs
// from the caller's.
type SecretChange struct {
	Name string `json:"name"`
	// CurrentVersion is 0 when the secret does not exist, is deleted or
	// has no readable current version.
	CurrentVersion uint32 `json:"current_version"`
	// Deleted is set for a soft-deleted secret.
	Deleted bool `json:"deleted,omitempty"`
}

// SecretWaitResult answers a wait: the secrets that changed, and the names
// the caller may not list (secret:List), which were not waited on. Both
// are empty when the wait ended without a change.
type SecretWaitResult struct {
	Changed []SecretChange `json:"changed"`
	Denied  []string       `json:"denied"`
}

// secretWaitMargin is how much longer than the wait an attempt may take
// before it counts as unanswered.
const secretWaitMargin = 10 * time.Second

// defaultSecretWait is the server's wait when none is given.
const defaultSecretWait = 30 * time.Second

// SecretWait blocks until one of the secrets in known (name -> the current
// version the caller holds, 0 for none) has another current version, for
// at most wait (0: the server's default of 30s; at most 5m), and returns
// what changed. A wait changes nothing, so a Client with several
// endpoints may send it to another one after a failure; the attempt
// timeout (WithAttemptTimeout) is extended by the wait so that it does not
// cut a wait short.
func (c *Client) SecretWait(ctx context.Context, known map[string]uint32, wait time.Duration) (*SecretWaitResult, error) {
	req := SecretWaitRequest{Secrets: known}
	bound := defaultSecretWait
	if wait > 0 {
		req.Wait, bound = wait.String(), wait
	}
	ctx = context.WithValue(Idempotent(ctx), attemptExtraKey{}, bound+secretWaitMargin)
	var out SecretWaitResult
	if err := c.do(ctx, http.MethodPost, "/v1/secrets/wait", nil, req, &out); err != nil {
		return nil, err
	}
	if out.Changed == nil {
		out.Changed = []SecretChange{}
	}
	if out.Denied == nil {
		out.Denied = []string{}
	}
	return &out, nil
}
